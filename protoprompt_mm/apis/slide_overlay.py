"""Class colours of a low-resolution slide label map over its thumbnail."""
from typing import Sequence

import cv2
import numpy as np

from protoprompt_mm.visualization import colorize_labels


def blend_overlay(thumbnail_rgb: np.ndarray,
                  labels_low: np.ndarray,
                  palette: Sequence[Sequence[int]],
                  alpha: float = 0.5,
                  ignore_index: int = 255) -> np.ndarray:
    """Blend class colours over the tissue of a slide thumbnail.

    Args:
        thumbnail_rgb: Slide thumbnail (H, W, 3), uint8 RGB.
        labels_low: Label map (h, w) of the same slide at any resolution,
            class ids; resized to (H, W) by nearest neighbour.
        palette: RGB colour per class id.
        alpha: Weight of the class colour, 0..1.
        ignore_index: Label of pixels left untouched (not tissue).

    Returns:
        np.ndarray: (H, W, 3) uint8 RGB; ``alpha * colour + (1 - alpha) *
        thumbnail`` where the label is a class, the thumbnail elsewhere.

    Raises:
        ValueError: Thumbnail not (H, W, 3) uint8, or labels not 2-D.
    """
    if thumbnail_rgb.dtype != np.uint8 or thumbnail_rgb.ndim != 3 or \
            thumbnail_rgb.shape[2] != 3:
        raise ValueError(f'blend_overlay: thumbnail is {thumbnail_rgb.dtype} '
                         f'{thumbnail_rgb.shape}, expected uint8 (H, W, 3)')
    if labels_low.ndim != 2:
        raise ValueError(f'blend_overlay: labels of shape {labels_low.shape}'
                         ', expected (h, w)')
    height, width = thumbnail_rgb.shape[:2]
    labels = cv2.resize(labels_low.astype(np.uint8), (width, height),
                        interpolation=cv2.INTER_NEAREST)
    colours = colorize_labels(labels, palette, ignore_index=ignore_index)
    blended = cv2.addWeighted(colours, alpha, thumbnail_rgb, 1 - alpha, 0)
    tissue = (labels != ignore_index)[..., None]
    return np.where(tissue, blended, thumbnail_rgb)
