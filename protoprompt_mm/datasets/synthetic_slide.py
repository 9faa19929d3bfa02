"""Synthetic whole slides, for tests, benchmarks and trying the slide tools.

:func:`synthetic_slide` draws white glass with a few tissue blobs made of
the synthetic H&E textures; :func:`write_pyramidal_tiff` stores an image
as a tiled pyramidal TIFF that OpenSlide opens ('generic-tiff'), with the
resolution tags OpenSlide turns into ``openslide.mpp-x`` / ``-y``.
"""
from typing import Optional, Sequence, Tuple

import cv2
import numpy as np
import tifffile

from .synthetic_histo import BACKGROUND_INDEX, render_patch

# (x, y, width, height) of a box, in pixels.
Box = Tuple[int, int, int, int]

_TEXTURE_SIZE = 256


def write_pyramidal_tiff(
    path: str,
    rgb: np.ndarray,
    mpp: float,
    tile: int = 256,
    levels: Sequence[int] = (1, 2, 4)) -> str:
    """Write ``rgb`` as a tiled, zlib-compressed pyramidal TIFF.

    The reduced levels are consecutive top-level IFDs (OpenSlide ignores
    SubIFD pyramids), each ``cv2.INTER_AREA``-shrunk from level 0 and
    tagged with its own resolution.

    Args:
        path: Output file.
        rgb: uint8 RGB level 0 (H, W, 3).
        mpp: Level-0 µm per pixel.
        tile: Tile side, a multiple of 16.
        levels: Downsample of each level, starting with 1.

    Returns:
        str: ``path``.
    """
    if levels[0] != 1:
        raise ValueError(f'write_pyramidal_tiff: levels must start at 1, '
                         f'got {levels}')
    height, width = rgb.shape[:2]
    with tifffile.TiffWriter(path) as tif:
        for down in levels:
            level = rgb if down == 1 else cv2.resize(
                rgb,
                (max(1, round(width / down)), max(1, round(height / down))),
                interpolation=cv2.INTER_AREA)
            tif.write(level,
                      tile=(tile, tile),
                      compression='zlib',
                      photometric='rgb',
                      resolution=(1e4 / (mpp * down), 1e4 / (mpp * down)),
                      resolutionunit='CENTIMETER',
                      subfiletype=0 if down == 1 else 1)
    return path


def _blob(rng: np.random.Generator, height: int, width: int,
          polygon: bool) -> np.ndarray:
    """Bool (height, width): an ellipse or an irregular star-shaped
    polygon filling most of the box."""
    blob = np.zeros((height, width), np.uint8)
    centre = np.array([width / 2, height / 2])
    radii = np.array([width / 2, height / 2]) * 0.95
    if polygon:
        angles = np.sort(rng.uniform(0, 2 * np.pi, 12))
        reach = rng.uniform(0.55, 1.0, 12)[:, None] * radii
        points = centre + reach * np.stack([np.cos(angles), np.sin(angles)], 1)
        cv2.fillPoly(blob, [np.rint(points).astype(np.int32)], 1)
    else:
        axes = tuple(int(r) for r in radii * rng.uniform(0.7, 1.0, 2))
        cv2.ellipse(blob, tuple(int(c) for c in centre), axes,
                    float(rng.uniform(0, 180)), 0, 360, 1, -1)
    return blob.astype(bool)


def synthetic_slide(
    height: int,
    width: int,
    seed: int,
    tissue_boxes: Optional[Sequence[Box]] = None
) -> Tuple[np.ndarray, np.ndarray]:
    """White glass with a few tissue blobs of synthetic H&E texture.

    Glass is about 245 grey with a slight tint and noise (240-250). In
    each box a blob (alternately an ellipse and an irregular polygon) is
    filled with one :func:`render_patch` texture, tiled; the texture's
    own background holes stay glass.

    Args:
        height: Slide height in pixels.
        width: Slide width in pixels.
        seed: Random seed.
        tissue_boxes: (x, y, width, height) boxes of the blobs; default
            three random boxes of a fifth to a third of the slide's side.

    Returns:
        tuple: uint8 RGB slide (height, width, 3) and bool (height, width)
        true tissue mask.
    """
    rng = np.random.default_rng(seed)
    glass = 245 + rng.uniform(-2, 2, 3).astype(np.float32) \
        + 1.5 * rng.standard_normal((height, width, 3), np.float32)
    rgb = np.clip(np.rint(glass), 0, 255).astype(np.uint8)
    tissue = np.zeros((height, width), bool)
    if tissue_boxes is None:
        sizes = rng.integers(
            min(height, width) // 5,
            min(height, width) // 3, (3, 2))
        tissue_boxes = [(int(rng.integers(0, width - w)),
                         int(rng.integers(0, height - h)), int(w), int(h))
                        for w, h in sizes]
    for i, (x, y, box_width, box_height) in enumerate(tissue_boxes):
        texture, classes = render_patch(rng, _TEXTURE_SIZE)
        reps = (-(-box_height // _TEXTURE_SIZE),
                -(-box_width // _TEXTURE_SIZE))
        texture = np.tile(texture, reps + (1, ))[:box_height, :box_width]
        cells = np.tile(classes, reps)[:box_height, :box_width]
        blob = _blob(rng, box_height, box_width, polygon=i % 2 == 1) \
            & (cells != BACKGROUND_INDEX)
        rgb[y:y + box_height, x:x + box_width][blob] = texture[blob]
        tissue[y:y + box_height, x:x + box_width] |= blob
    return rgb, tissue
