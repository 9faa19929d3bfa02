"""Tiled inference of large H&E regions with bounded memory.

A region far larger than the training patches is cut into ``tile`` x
``tile`` tiles that overlap by ``overlap`` pixels, on the grid of mmseg's
``slide`` inference (the last tile of a row / column is shifted back to end
at the border). Batches of tiles go through the model's data preprocessor
and ``encode_decode`` (whole-tile inference, whatever ``test_cfg.mode``
says). The softmax of each tile is added to a CPU canvas (N, H, W) with a
linear cross-fade: along each axis a tile's weight ramps from ``0.5 /
overlap`` at a border it shares with a neighbour to 1 ``overlap`` pixels
in (1 at the image border); the canvas is divided by the summed weights.
Plain averaging would let the prediction artefacts at a tile's border
(zero padding) through as seams; the ramp hands each overlap to the tile
whose interior it is.

Memory: the uint8 image, the canvas (``N * H * W * 4`` bytes in float32,
half in float16; e.g. 64 MiB for 4 classes at 2048 x 2048, 40 GiB at
50 000 x 50 000) and one batch of tiles on the device. The summed weights
are not stored: the windows are separable, so their sum is the outer
product of a row and a column sum, formed one band of rows at a time for
the final division.
"""
from typing import List, Optional, Sequence

import cv2
import numpy as np
import torch
from mmengine.utils import ProgressBar
from mmseg.structures import SegDataSample
from torch import Tensor, nn

from protoprompt_mm.datasets.stain import MacenkoNormalizer, apply_to_bgr

CANVAS_DTYPES = {'float32': torch.float32, 'float16': torch.float16}


def tile_starts(length: int, tile: int, stride: int) -> List[int]:
    """Offsets of the tiles covering ``[0, length)`` along one axis.

    The grid of mmseg's slide inference: every ``stride`` pixels, the last
    tile moved back to end at ``length``.

    Args:
        length: Image side, at least ``tile``.
        tile: Tile side.
        stride: Step between tiles, in [1, tile].

    Returns:
        list[int]: Increasing start offsets.
    """
    if length < tile or not 1 <= stride <= tile:
        raise ValueError(f'tile_starts: need length >= tile >= stride >= 1, '
                         f'got length={length}, tile={tile}, stride={stride}')
    num = -(-(length - tile) // stride) + 1
    return [min(i * stride, length - tile) for i in range(num)]


def tile_weights(length: int, starts: Sequence[int], tile: int,
                 overlap: int) -> List[Tensor]:
    """One-axis cross-fade window of every tile.

    Args:
        length: Image side.
        starts: Tile offsets from :func:`tile_starts`.
        tile: Tile side.
        overlap: Ramp length; 0 gives flat windows.

    Returns:
        list[Tensor]: A (tile,) float32 window per tile, in (0, 1].
    """
    ramp = (torch.arange(overlap) + 0.5) / max(overlap, 1)
    windows = []
    for start in starts:
        window = torch.ones(tile)
        if overlap and start > 0:
            window[:overlap] = ramp
        if overlap and start + tile < length:
            window[-overlap:] = torch.minimum(window[-overlap:], ramp.flip(0))
        windows.append(window)
    return windows


def summed_weights(length: int, starts: Sequence[int], tile: int,
                   windows: Sequence[Tensor]) -> Tensor:
    """Sum of the tile windows at each position of one axis (float32)."""
    total = torch.zeros(length)
    for start, window in zip(starts, windows):
        total[start:start + tile] += window
    return total


def label_map(probs: Tensor, band: int = 256) -> np.ndarray:
    """Arg-max class of every pixel, as uint8, one band of rows at a time.

    Avoids the (H, W) int64 temporary of a whole-canvas ``argmax``, which
    would be twice the size of a 4-class float16 canvas.

    Args:
        probs: (N, H, W) class scores, N <= 256.
        band: Rows per arg-max.

    Returns:
        np.ndarray: uint8 (H, W) labels.
    """
    if probs.shape[0] > 256:
        raise ValueError(f'label_map: at most 256 classes fit in uint8, got '
                         f'{probs.shape[0]}')
    labels = np.empty(probs.shape[1:], dtype=np.uint8)
    for y in range(0, probs.shape[1], band):
        labels[y:y + band] = probs[:, y:y + band].argmax(dim=0).numpy()
    return labels


def background_mask(image: np.ndarray, threshold: float) -> np.ndarray:
    """White glass / background of an H&E image by brightness.

    Args:
        image: BGR (or RGB) uint8 image (H, W, 3).
        threshold: Grey level (0-255) above which a pixel is background.

    Returns:
        np.ndarray: Bool (H, W), True on background.
    """
    return cv2.cvtColor(image, cv2.COLOR_BGR2GRAY) > threshold


def _tile_logits(model: nn.Module, tiles: List[Tensor]) -> Tensor:
    """Logits (B, N, t, t) of equally sized (3, t, t) uint8 tiles."""
    size = tuple(tiles[0].shape[1:])
    samples = [
        SegDataSample(metainfo=dict(img_shape=size, ori_shape=size))
        for _ in tiles
    ]
    data = model.data_preprocessor(
        dict(inputs=tiles, data_samples=samples), False)
    metas = [sample.metainfo for sample in data['data_samples']]
    # Padding by the preprocessor (size_divisor) is bottom / right only.
    return model.encode_decode(data['inputs'], metas)[..., :size[0], :size[1]]


@torch.no_grad()
def infer_region(model: nn.Module,
                 image: np.ndarray,
                 tile: int = 224,
                 overlap: int = 32,
                 batch_size: int = 8,
                 canvas_dtype: torch.dtype = torch.float32,
                 pad_value: int = 255,
                 progress: bool = False,
                 stain_normalizer: Optional[MacenkoNormalizer] = None
                 ) -> Tensor:
    """Class probabilities of a large image, tile by tile.

    Args:
        model: An mmseg segmentor in eval mode (``data_preprocessor`` and
            ``encode_decode``), e.g. from :func:`init_segmentor`.
        image: uint8 image (H, W, 3) in the channel order of the training
            images as loaded by ``LoadImageFromFile`` (BGR).
        tile: Tile side.
        overlap: Pixels shared by neighbouring tiles, in [0, tile); also
            the length of the cross-fade.
        batch_size: Tiles per forward pass.
        canvas_dtype: ``torch.float32`` or ``torch.float16`` canvas.
        pad_value: Fill of the bottom / right border when the image is
            smaller than a tile (255: white glass).
        progress: Show an mmengine progress bar over the tiles.
        stain_normalizer: Normalise the stains of the whole image first
            (one Macenko fit for every tile), e.g. from
            :func:`~protoprompt_mm.datasets.stain.build_stain_normalizer`;
            costs a normalised copy of the image.

    Returns:
        Tensor: (N, H, W) cross-faded softmax of the tiles covering each
        pixel (see the module docstring), on the CPU, in ``canvas_dtype``.
    """
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError('infer_region: image must be uint8 (H, W, 3), got '
                         f'{image.dtype} {image.shape}')
    if not 0 <= overlap < tile:
        raise ValueError(f'infer_region: need 0 <= overlap < tile, got '
                         f'overlap={overlap}, tile={tile}')
    if batch_size < 1:
        raise ValueError(f'infer_region: batch_size must be >= 1, got '
                         f'{batch_size}')
    if canvas_dtype not in CANVAS_DTYPES.values():
        raise ValueError(f'infer_region: canvas_dtype must be one of '
                         f'{list(CANVAS_DTYPES.values())}, got {canvas_dtype}')
    if stain_normalizer is not None:
        image = apply_to_bgr(stain_normalizer.normalize, image)
    height, width = image.shape[:2]
    padded = np.pad(
        image, ((0, max(tile - height, 0)), (0, max(tile - width, 0)), (0, 0)),
        constant_values=pad_value)
    stride = tile - overlap
    rows = tile_starts(padded.shape[0], tile, stride)
    cols = tile_starts(padded.shape[1], tile, stride)
    row_windows = tile_weights(padded.shape[0], rows, tile, overlap)
    col_windows = tile_weights(padded.shape[1], cols, tile, overlap)
    positions = [(i, j) for i in range(len(rows)) for j in range(len(cols))]

    canvas = None
    bar = ProgressBar(len(positions)) if progress else None
    for first in range(0, len(positions), batch_size):
        chunk = positions[first:first + batch_size]
        tiles = [
            torch.from_numpy(padded[rows[i]:rows[i] + tile,
                                    cols[j]:cols[j] + tile]).permute(2, 0, 1)
            for i, j in chunk
        ]
        probs = _tile_logits(model, tiles).float().softmax(dim=1).cpu()
        if canvas is None:
            canvas = torch.zeros((probs.shape[1], height, width),
                                 dtype=canvas_dtype)
        for prob, (i, j) in zip(probs, chunk):
            y, x = rows[i], cols[j]
            h, w = min(tile, height - y), min(tile, width - x)
            weight = row_windows[i][:h, None] * col_windows[j][None, :w]
            canvas[:, y:y + h, x:x + w] += (prob[:, :h, :w] * weight).to(
                canvas_dtype)
        if bar is not None:
            bar.update(len(chunk))
    row_sums = summed_weights(padded.shape[0], rows, tile,
                              row_windows)[:height]
    col_sums = summed_weights(padded.shape[1], cols, tile,
                              col_windows)[:width]
    for y in range(0, height, tile):
        band = row_sums[y:y + tile, None] * col_sums[None]
        canvas[:, y:y + tile].div_(band.to(canvas_dtype))
    return canvas
