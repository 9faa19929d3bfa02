"""Tiled inference of large H&E images, streamed with bounded memory.

An image far larger than the training patches is cut into ``tile`` x
``tile`` tiles that overlap by ``overlap`` pixels, on the grid of mmseg's
``slide`` inference (the last tile of a row / column is shifted back to end
at the border). Batches of tiles go through the model's data preprocessor
and ``encode_decode`` (whole-tile inference, whatever ``test_cfg.mode``
says). The softmax of each tile is blended with a linear cross-fade: along
each axis a tile's weight ramps from ``0.5 / overlap`` at a border it
shares with a neighbour to 1 ``overlap`` pixels in (1 at the image
border), and every pixel is divided by the summed weights of the tiles
that cover it. Plain averaging would let the prediction artefacts at a
tile's border (zero padding) through as seams; the ramp hands each overlap
to the tile whose interior it is.

One code path serves regions in memory (:func:`infer_region`) and whole
slides (:mod:`protoprompt_mm.apis.slide_inference`):
:func:`stream_probabilities` reads tiles through a callback, skips the
tiles a predicate rejects (glass), and yields the blended probabilities as
:class:`ProbabilityBlock` s in scan order, as soon as no later tile can
change them. It holds one batch of tiles, one tile-sized window of the
current tile row and the band of rows the next tile row still overlaps
(``(N + 1) * band * W * 4`` bytes, ``band`` = the rows two tile rows
share, ``overlap`` except before a shifted last row): nothing grows with
the image height, and no full-size canvas exists. Tiles are read one batch
ahead in a thread, so reading overlaps the forward pass.
"""
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Callable, Iterator, List, Optional, Sequence, Tuple

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


def tile_grid(height: int, width: int, tile: int,
              overlap: int) -> Tuple[List[int], List[int]]:
    """Top rows and left columns of the tiles of an image (a side smaller
    than a tile has one tile, read padded)."""
    stride = tile - overlap
    return (tile_starts(max(height, tile), tile, stride),
            tile_starts(max(width, tile), tile, stride))


def check_tiling(tile: int, overlap: int, batch_size: int) -> None:
    """Refuse tiling arguments :func:`stream_probabilities` cannot run.

    Args:
        tile: Tile side, at least 1.
        overlap: Pixels shared by neighbouring tiles, in [0, tile).
        batch_size: Tiles per forward pass, at least 1.

    Raises:
        ValueError: Naming the argument out of range and its value.
    """
    if not 0 <= overlap < tile:
        raise ValueError(f'need tile >= 1 and 0 <= overlap < tile, got '
                         f'tile={tile}, overlap={overlap}')
    if batch_size < 1:
        raise ValueError(f'batch_size must be >= 1, got {batch_size}')


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
        labels[y:y + band] = probs[:, y:y + band].numpy().argmax(axis=0)
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


@dataclass
class ProbabilityBlock:
    """Finished class probabilities of a box of the image.

    Attributes:
        y: Top row of the box.
        x: Left column of the box.
        probs: (N, h, w) float32 blended softmax; 0 where no tile was run.
        covered: (h, w) bool, True where at least one tile was run.
    """
    y: int
    x: int
    probs: Tensor
    covered: Tensor


# A tile reader: (y, x) of the tile's top-left corner -> uint8 (tile, tile,
# 3) in the training images' channel order (BGR); anything beyond the image
# is filled (e.g. white glass).
TileReader = Callable[[int, int], np.ndarray]
# Whether to run the tile at (y, x); a skipped tile adds nothing.
TilePredicate = Callable[[int, int], bool]


def _tile_probabilities(model: nn.Module, read_tile: TileReader,
                        positions: List[Tuple[int, int, int, int]],
                        batch_size: int, progress: bool
                        ) -> Iterator[Tuple[int, int, Tensor]]:
    """Softmax of the tiles at ``positions`` ``(i, j, y, x)``, in order.

    The next batch is read in a thread while the model runs the current
    one. Yields ``(i, j, probs (N, t, t) float32 on the CPU)``.
    """
    batches = [positions[k:k + batch_size]
               for k in range(0, len(positions), batch_size)]

    def read(batch):
        return [torch.from_numpy(np.ascontiguousarray(
            read_tile(y, x))).permute(2, 0, 1) for _, _, y, x in batch]

    bar = ProgressBar(len(positions)) if progress and positions else None
    with ThreadPoolExecutor(max_workers=1) as reader:
        upcoming = reader.submit(read, batches[0]) if batches else None
        for k, batch in enumerate(batches):
            tiles = upcoming.result()
            if k + 1 < len(batches):
                upcoming = reader.submit(read, batches[k + 1])
            with torch.no_grad():
                probs = _tile_logits(model, tiles).float().softmax(
                    dim=1).cpu()
            for (i, j, _, _), prob in zip(batch, probs):
                yield i, j, prob
            if bar is not None:
                bar.update(len(batch))


class _TileRowBlender:
    """Blends the tiles of one tile row and emits its finished rows.

    The tile row covers rows ``[top, top + tile)``; rows ``[top, done_to)``
    are finished once the row's tiles are in (no later tile row reaches
    them), the rest is handed on as the next row's carried band. Tiles
    arrive left to right; everything left of the newest tile's column is
    finished, so only a tile-sized window of the row is kept. The window is
    two preallocated buffers swapped at each tile and blended in place
    (NumPy float32), so a tile costs no new allocation but its output.
    """

    def __init__(self, top: int, done_to: int, tile: int, width: int,
                 carried: Optional[Tuple[np.ndarray, np.ndarray]],
                 num_classes: int) -> None:
        self.top, self.done_to, self.tile, self.width = (top, done_to, tile,
                                                         width)
        self.carried = carried  # (probs (N, P, W), weights (P, W)) or None
        self.window = np.zeros((num_classes, tile, tile), np.float32)
        self.window_weights = np.zeros((tile, tile), np.float32)
        self._spare = (np.empty_like(self.window),
                       np.empty_like(self.window_weights))
        self.window_x = 0
        self.done_x = 0
        tail = top + tile - done_to
        self.band = (np.zeros((num_classes, tail, width), np.float32),
                     np.zeros((tail, width), np.float32))

    def add(self, x: int, prob: np.ndarray,
            weight: np.ndarray) -> Iterator[Tuple[int, np.ndarray,
                                                  np.ndarray]]:
        """Blend a tile (N, t, t) at column ``x`` with its (t, t) weights;
        yields finished column chunks (see :meth:`finish`)."""
        yield from self.finish(x)
        shift = x - self.window_x
        window, weights = self._spare
        window.fill(0)
        weights.fill(0)
        if 0 <= shift < self.tile:
            window[:, :, :self.tile - shift] = self.window[:, :, shift:]
            weights[:, :self.tile - shift] = self.window_weights[:, shift:]
        self._spare = (self.window, self.window_weights)
        self.window, self.window_weights, self.window_x = window, weights, x
        window += prob * weight
        weights += weight

    def finish(self, to_x: int
               ) -> Iterator[Tuple[int, np.ndarray, np.ndarray]]:
        """Emit columns ``[done_x, to_x)`` in chunks of at most a tile:
        yields ``(x, probs (N, rows, w), weights (rows, w))`` of the
        finished rows (new arrays, the caller's to keep), and keeps their
        tail in the band."""
        head = self.done_to - self.top
        for x0 in range(self.done_x, to_x, self.tile):
            x1 = min(x0 + self.tile, to_x)
            probs = np.zeros((self.window.shape[0], self.tile, x1 - x0),
                             np.float32)
            weights = np.zeros((self.tile, x1 - x0), np.float32)
            lo, hi = max(x0, self.window_x), min(x1,
                                                 self.window_x + self.tile)
            if lo < hi:
                probs[:, :, lo - x0:hi - x0] = self.window[
                    :, :, lo - self.window_x:hi - self.window_x]
                weights[:, lo - x0:hi - x0] = self.window_weights[
                    :, lo - self.window_x:hi - self.window_x]
            if self.carried is not None:
                carried_probs, carried_weights = self.carried
                rows = carried_weights.shape[0]
                probs[:, :rows] += carried_probs[:, :, x0:x1]
                weights[:rows] += carried_weights[:, x0:x1]
            self.band[0][:, :, x0:x1] = probs[:, head:]
            self.band[1][:, x0:x1] = weights[head:]
            yield x0, probs[:, :head], weights[:head]
        self.done_x = max(self.done_x, to_x)


def stream_probabilities(model: nn.Module,
                         read_tile: TileReader,
                         height: int,
                         width: int,
                         tile: int = 224,
                         overlap: int = 32,
                         batch_size: int = 8,
                         run_tile: Optional[TilePredicate] = None,
                         progress: bool = False
                         ) -> Iterator[ProbabilityBlock]:
    """Blended class probabilities of an image, tile row by tile row.

    Args:
        model: An mmseg segmentor in eval mode (``data_preprocessor`` and
            ``encode_decode``), e.g. from :func:`init_segmentor`.
        read_tile: The tile at ``(y, x)`` (see :data:`TileReader`); an
            image smaller than a tile is read as one padded tile.
        height: Image height.
        width: Image width.
        tile: Tile side.
        overlap: Pixels shared by neighbouring tiles, in [0, tile); also
            the length of the cross-fade.
        batch_size: Tiles per forward pass.
        run_tile: Which tiles to run (default: all).
        progress: Show an mmengine progress bar over the run tiles.

    Yields:
        ProbabilityBlock: Finished boxes in scan order: the rows of one
        tile row (up to the next tile row's top) in chunks of at most
        ``tile`` columns, left to right; together they tile the image.
    """
    check_tiling(tile, overlap, batch_size)
    grid_h, grid_w = max(height, tile), max(width, tile)
    rows, cols = tile_grid(height, width, tile, overlap)
    row_windows = [w.numpy() for w in tile_weights(grid_h, rows, tile,
                                                   overlap)]
    col_windows = [w.numpy() for w in tile_weights(grid_w, cols, tile,
                                                   overlap)]
    positions = [(i, j, y, x) for i, y in enumerate(rows)
                 for j, x in enumerate(cols)
                 if run_tile is None or run_tile(y, x)]
    tiles = _tile_probabilities(model, read_tile, positions, batch_size,
                                progress)
    pending = next(tiles, None)
    num_classes = 1 if pending is None else pending[2].shape[0]
    carried = None
    for i, top in enumerate(rows):
        done_to = rows[i + 1] if i + 1 < len(rows) else grid_h
        blender = _TileRowBlender(top, done_to, tile, grid_w, carried,
                                  num_classes)
        rows_out = min(done_to, height) - top
        while pending is not None and pending[0] == i:
            _, j, prob = pending
            weight = row_windows[i][:, None] * col_windows[j][None, :]
            for chunk in blender.add(cols[j], prob.numpy(), weight):
                yield from _finished_block(top, chunk, rows_out, width)
            pending = next(tiles, None)
        for chunk in blender.finish(grid_w):
            yield from _finished_block(top, chunk, rows_out, width)
        carried = blender.band


def _finished_block(top: int, chunk: Tuple[int, np.ndarray, np.ndarray],
                    rows_out: int, width: int) -> Iterator[ProbabilityBlock]:
    """The part of a finished chunk inside the image, normalised in place
    by its summed weights (nothing for a chunk wholly in the padding)."""
    x, probs, weights = chunk
    cols_out = min(x + probs.shape[2], width) - x
    if rows_out <= 0 or cols_out <= 0:
        return
    probs, weights = (probs[:, :rows_out, :cols_out],
                      weights[:rows_out, :cols_out])
    covered = weights > 0
    # Uncovered pixels have probs 0 and stay 0.
    probs /= np.maximum(weights, np.finfo(np.float32).tiny)
    yield ProbabilityBlock(y=top, x=x, probs=torch.from_numpy(probs),
                           covered=torch.from_numpy(covered))


def array_tile_reader(image: np.ndarray, tile: int,
                      pad_value: int = 255) -> TileReader:
    """A :data:`TileReader` over an in-memory (H, W, 3) uint8 image, padded
    with ``pad_value`` at the bottom / right where a tile passes it."""
    def read(y: int, x: int) -> np.ndarray:
        crop = image[y:y + tile, x:x + tile]
        if crop.shape[:2] == (tile, tile):
            return crop
        return np.pad(crop, ((0, tile - crop.shape[0]),
                             (0, tile - crop.shape[1]), (0, 0)),
                      constant_values=pad_value)

    return read


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
    """Class probabilities of a large image in memory, tile by tile.

    :func:`stream_probabilities` over the image, gathered on a canvas
    (``N * H * W * 4`` bytes in float32, half in float16; e.g. 64 MiB for
    4 classes at 2048 x 2048). Whole slides go through
    :mod:`protoprompt_mm.apis.slide_inference` instead, which keeps no
    canvas.

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
    if canvas_dtype not in CANVAS_DTYPES.values():
        raise ValueError(f'infer_region: canvas_dtype must be one of '
                         f'{list(CANVAS_DTYPES.values())}, got {canvas_dtype}')
    if stain_normalizer is not None:
        image = apply_to_bgr(stain_normalizer.normalize, image)
    height, width = image.shape[:2]
    canvas = None
    for block in stream_probabilities(
            model, array_tile_reader(image, tile, pad_value), height, width,
            tile, overlap, batch_size, progress=progress):
        if canvas is None:
            canvas = torch.zeros((block.probs.shape[0], height, width),
                                 dtype=canvas_dtype)
        h, w = block.probs.shape[1:]
        canvas[:, block.y:block.y + h, block.x:block.x + w] = \
            block.probs.to(canvas_dtype)
    return canvas
