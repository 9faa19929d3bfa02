"""Label maps written as 8-bit palette PNGs."""
from typing import List, Sequence

import numpy as np
from PIL import Image

from .bcss_wsss_dataset import BCSSWSSSDataset

# The BCSS-WSSS classes (indices 0-3) plus white background (index 4).
MASK_PALETTE: List[List[int]] = [
    *BCSSWSSSDataset.METAINFO['palette'], [255, 255, 255]
]


def save_palette_mask(path: str,
                      mask: np.ndarray,
                      palette: Sequence[Sequence[int]] = MASK_PALETTE) -> None:
    """Write a uint8 label map as an 8-bit palette ('P' mode) PNG.

    The palette is padded to 256 entries so that every index, including
    255 (ignore), survives; a shorter palette would make PIL write fewer
    bits per pixel.

    Args:
        path (str): Output path.
        mask (np.ndarray): uint8 (H, W) label map.
        palette (Sequence[Sequence[int]]): RGB colour of the first indices.
            Defaults to the BCSS-WSSS classes plus white background.
    """
    colours = [*palette, *([[0, 0, 0]] * (256 - len(palette)))]
    image = Image.fromarray(np.ascontiguousarray(mask, np.uint8))
    image.putpalette([c for colour in colours for c in colour])
    image.save(path)
