"""Tissue versus glass on a slide thumbnail, and its look-up per tile.

:func:`detect_tissue` segments a thumbnail (e.g.
:meth:`~protoprompt_mm.apis.slide_reader.SlideReader.thumbnail`) once;
the orchestrator of tiled inference then asks, per tile box in output
(inference) pixels, whether the box holds tissue
(:func:`tile_has_tissue`, :func:`tissue_fraction_of_boxes` for many boxes
at once) and for the tiles it segments which of their pixels are tissue
(:func:`upsample_tissue`). Output pixel ``u`` lies in thumbnail pixel
``floor((u + 0.5) / scale)``, ``scale`` the output pixels per thumbnail
pixel along that axis; a box's thumbnail pixels are those it overlaps.
"""
from typing import Tuple

import cv2
import numpy as np

Box = Tuple[int, int, int, int]

# Saturation (0-1) below which nothing is tissue, whatever Otsu says: keeps
# glass (saturation ~0.01-0.04 with scanner tint and noise) out on a slide
# without tissue, where Otsu would split the glass's own noise.
MIN_TISSUE_SATURATION = 0.05
# Pixels whose brightest channel is below this are black (slide labels,
# scanner borders, dust), not tissue: their hue and saturation are noise.
BLACK_LEVEL = 40
# Pixels whose channels all reach this are blank glass or outside the scan.
WHITE_LEVEL = 250
# uint8 saturation -> log(1 + s) on 0-255 (the scale of Otsu's threshold).
_LOG_SATURATION = np.rint(np.log1p(np.arange(256)) / np.log(256) * 255).astype(
    np.uint8)


def _small_components(mask: np.ndarray, max_area: float, connectivity: int,
                      spare_border: bool) -> np.ndarray:
    """Bool mask of the connected components of ``mask`` with fewer than
    ``max_area`` pixels (those touching the image border excluded if
    ``spare_border``)."""
    _, labels, stats, _ = cv2.connectedComponentsWithStats(
        mask.astype(np.uint8), connectivity=connectivity)
    left, top, width, height, area = stats.T
    small = area < max_area
    if spare_border:
        small &= (left > 0) & (top > 0) & (left + width < mask.shape[1]) \
            & (top + height < mask.shape[0])
    small[0] = False  # label 0: the complement of ``mask``
    return small[labels]


def detect_tissue(thumbnail: np.ndarray,
                  min_object_fraction: float = 1e-3,
                  max_hole_fraction: float = 1e-3,
                  min_saturation: float = MIN_TISSUE_SATURATION,
                  kernel_size: int = 3) -> np.ndarray:
    """Tissue mask of a slide thumbnail.

    Tissue is told from glass by its HSV saturation: haematoxylin and
    eosin colour it purple / pink, while glass is bright grey with at most
    a faint tint. Saturation, unlike optical density, ignores how bright
    the glass is (it varies between scanners and across a slide) and does
    not take dark debris, pen or the black border some scanners add for
    tissue; black pixels (brightest channel < :data:`BLACK_LEVEL`), whose
    saturation is noise, are never tissue.

    The threshold is Otsu's on the logarithm of the saturation
    (``log(1 + s)``) of the pixels that are neither black nor blank white
    (every channel >= :data:`WHITE_LEVEL`, e.g. outside the scanned area,
    which would swamp the histogram). Glass saturation is narrow and low,
    tissue's spans pale stroma to dark nuclei; on the linear scale Otsu's
    split falls inside tissue and drops pale tissue (IoU 0.82 instead of
    0.99 for the raw threshold on a synthetic test slide with pale
    stroma, tests/slide_fixtures.py seed 2), while the log scale
    evens out the two spreads. The threshold is raised to at least
    ``min_saturation``, so a thumbnail of glass only has no tissue.

    Then: a morphological opening and closing with a ``kernel_size``
    ellipse; connected components (8-connected) smaller than
    ``min_object_fraction`` of the thumbnail removed; holes (4-connected
    glass not touching the border) smaller than ``max_hole_fraction``
    filled.

    Args:
        thumbnail: uint8 RGB (h, w, 3).
        min_object_fraction: Smallest kept tissue piece, as a fraction of
            ``h * w``.
        max_hole_fraction: Largest filled hole, as a fraction of ``h * w``.
        min_saturation: Lowest saturation (0-1) that is tissue.
        kernel_size: Side of the morphology kernel in thumbnail pixels;
            1 disables opening / closing.

    Returns:
        np.ndarray: Bool (h, w), True on tissue.
    """
    if not isinstance(thumbnail, np.ndarray) or thumbnail.dtype != np.uint8 \
            or thumbnail.ndim != 3 or thumbnail.shape[2] != 3:
        shape = getattr(thumbnail, 'shape', type(thumbnail).__name__)
        raise ValueError(f'detect_tissue: expected a uint8 RGB thumbnail '
                         f'(h, w, 3), got {getattr(thumbnail, "dtype", "")} '
                         f'{shape}')
    hsv = cv2.cvtColor(thumbnail, cv2.COLOR_RGB2HSV)
    saturation, value = hsv[..., 1], hsv[..., 2]
    not_black = value >= BLACK_LEVEL
    candidates = not_black & (thumbnail.min(axis=2) < WHITE_LEVEL)
    if not candidates.any():
        return np.zeros(thumbnail.shape[:2], bool)
    log_saturation = cv2.LUT(saturation, _LOG_SATURATION)
    otsu, _ = cv2.threshold(log_saturation[candidates].reshape(-1, 1), 0, 255,
                            cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    tissue = not_black & (log_saturation > otsu) \
        & (saturation > min_saturation * 255)
    if kernel_size > 1:
        kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE,
                                           (kernel_size, kernel_size))
        tissue = cv2.morphologyEx(tissue.astype(np.uint8), cv2.MORPH_OPEN,
                                  kernel)
        tissue = cv2.morphologyEx(tissue, cv2.MORPH_CLOSE, kernel).astype(bool)
    area = tissue.size
    tissue &= ~_small_components(
        tissue, min_object_fraction * area, 8, spare_border=False)
    tissue |= _small_components(~tissue,
                                max_hole_fraction * area,
                                4,
                                spare_border=True)
    return tissue


def _thumbnail_spans(boxes: np.ndarray, scale_x: float, scale_y: float,
                     shape: Tuple[int, int]) -> Tuple[np.ndarray, ...]:
    """Thumbnail rows ``[top, bottom)`` and columns ``[left, right)``
    overlapped by (..., 4) output boxes (x, y, width, height), clipped to
    the thumbnail ``shape`` (h, w)."""
    x, y, width, height = np.moveaxis(np.asarray(boxes, np.float64), -1, 0)
    left = np.clip(np.floor(x / scale_x), 0, shape[1]).astype(np.int64)
    right = np.clip(np.ceil((x + width) / scale_x), 0,
                    shape[1]).astype(np.int64)
    top = np.clip(np.floor(y / scale_y), 0, shape[0]).astype(np.int64)
    bottom = np.clip(np.ceil((y + height) / scale_y), 0,
                     shape[0]).astype(np.int64)
    return top, bottom, left, right


def tile_has_tissue(tissue: np.ndarray, box: Box, scale_x: float,
                    scale_y: float) -> bool:
    """Whether an output box overlaps a tissue pixel of the thumbnail.

    Args:
        tissue: Bool (h, w) thumbnail mask from :func:`detect_tissue`.
        box: (x, y, width, height) in output pixels.
        scale_x: Output pixels per thumbnail pixel along x (output width /
            thumbnail width).
        scale_y: The same along y.

    Returns:
        bool: True if any thumbnail pixel the box overlaps is tissue.
    """
    top, bottom, left, right = _thumbnail_spans(box, scale_x, scale_y,
                                                tissue.shape)
    return bool(tissue[top:bottom, left:right].any())


def tissue_fraction_of_boxes(tissue: np.ndarray, boxes: np.ndarray,
                             scale_x: float, scale_y: float) -> np.ndarray:
    """Tissue fraction of the thumbnail pixels overlapped by many boxes.

    One integral image, then O(1) per box.

    Args:
        tissue: Bool (h, w) thumbnail mask from :func:`detect_tissue`.
        boxes: (N, 4) (x, y, width, height) in output pixels.
        scale_x: Output pixels per thumbnail pixel along x.
        scale_y: The same along y.

    Returns:
        np.ndarray: float64 (N,) in [0, 1]; > 0 exactly where
        :func:`tile_has_tissue` is True; 0 for boxes outside the
        thumbnail.
    """
    integral = cv2.integral(tissue.astype(np.uint8))  # (h + 1, w + 1)
    top, bottom, left, right = _thumbnail_spans(np.reshape(boxes, (-1, 4)),
                                                scale_x, scale_y, tissue.shape)
    count = integral[bottom, right] - integral[top, right] \
        - integral[bottom, left] + integral[top, left]
    area = (bottom - top) * (right - left)
    return np.where(area > 0, count / np.maximum(area, 1), 0.0)


def upsample_tissue(tissue: np.ndarray, box: Box,
                    shape: Tuple[int, int]) -> np.ndarray:
    """The tissue mask of one output box, at output resolution.

    Nearest neighbour: output pixel ``u`` takes thumbnail pixel
    ``floor((u + 0.5) / scale)``, ``scale`` the output pixels per
    thumbnail pixel (``shape`` over the thumbnail's size).

    Args:
        tissue: Bool (h, w) thumbnail mask from :func:`detect_tissue`.
        box: (x, y, width, height) in output pixels.
        shape: (height, width) of the whole output image the thumbnail
            stands for.

    Returns:
        np.ndarray: Bool (box height, box width); False outside ``shape``.
    """
    x, y, width, height = box
    axes = []
    for start, count, out_size, thumb_size in ((y, height, shape[0],
                                                tissue.shape[0]),
                                               (x, width, shape[1],
                                                tissue.shape[1])):
        pixels = np.arange(start, start + count)
        index = np.floor((pixels + 0.5) / (out_size / thumb_size))
        axes.append((np.clip(index, 0, thumb_size - 1).astype(np.int64),
                     (pixels >= 0) & (pixels < out_size)))
    (rows, row_inside), (cols, col_inside) = axes
    return tissue[np.ix_(rows, cols)] & row_inside[:, None] \
        & col_inside[None, :]
