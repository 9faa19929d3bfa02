"""Pictures of CAMs, prototype similarities and masks (RGB uint8 arrays)."""
from typing import Optional, Sequence

import cv2
import numpy as np

IGNORE_COLOR = (128, 128, 128)
BACKGROUND_COLOR = (255, 255, 255)


def colorize_labels(labels: np.ndarray,
                    palette: Sequence[Sequence[int]],
                    background_index: Optional[int] = None,
                    ignore_index: int = 255) -> np.ndarray:
    """Paint a label map with the dataset palette.

    Args:
        labels: Label map (H, W), class indices.
        palette: RGB colour per class.
        background_index: Label drawn white (e.g. 4 in pseudo-masks).
        ignore_index: Label drawn grey (uncertain / ignored pixels).

    Returns:
        np.ndarray: RGB image (H, W, 3), uint8.
    """
    colors = np.zeros((256, 3), dtype=np.uint8)
    colors[:] = IGNORE_COLOR
    colors[:len(palette)] = np.asarray(palette, dtype=np.uint8)
    if background_index is not None:
        colors[background_index] = BACKGROUND_COLOR
    colors[ignore_index] = IGNORE_COLOR
    return colors[labels.astype(np.uint8)]


def heatmap_overlay(image: np.ndarray,
                    heat: np.ndarray,
                    alpha: float = 0.5) -> np.ndarray:
    """Blend a [0, 1] heat map (jet colours) over an RGB image.

    Args:
        image: RGB image (H, W, 3), uint8.
        heat: Map (H, W); values are clipped to [0, 1].
        alpha: Weight of the heat map.

    Returns:
        np.ndarray: RGB image (H, W, 3), uint8.
    """
    heat8 = (np.clip(heat, 0, 1) * 255).astype(np.uint8)
    colored = cv2.cvtColor(cv2.applyColorMap(heat8, cv2.COLORMAP_JET),
                           cv2.COLOR_BGR2RGB)
    return cv2.addWeighted(colored, alpha, image, 1 - alpha, 0)


def make_panel(tiles: Sequence[np.ndarray],
               titles: Sequence[str],
               title_height: int = 18,
               min_tile_width: int = 128) -> np.ndarray:
    """Put equally sized RGB tiles side by side with a title above each.

    Args:
        tiles: RGB images (H, W, 3), all the same size.
        titles: One title per tile.
        title_height: Pixels of the title strip.
        min_tile_width: Narrower tiles are enlarged (nearest neighbour, by
            an integer factor) so titles stay legible.

    Returns:
        np.ndarray: RGB panel (s * H + title_height, s * W * len(tiles), 3),
        with s the enlargement factor.
    """
    if len(tiles) != len(titles):
        raise ValueError(f'make_panel: {len(tiles)} tiles but '
                         f'{len(titles)} titles')
    shapes = {tile.shape for tile in tiles}
    if len(shapes) != 1:
        raise ValueError(f'make_panel: tiles differ in shape: {shapes}')
    height, width = tiles[0].shape[:2]
    factor = -(-min_tile_width // width)
    if factor > 1:
        tiles = [
            cv2.resize(tile, (width * factor, height * factor),
                       interpolation=cv2.INTER_NEAREST) for tile in tiles
        ]
        height, width = height * factor, width * factor
    columns = []
    for tile, title in zip(tiles, titles):
        strip = np.full((title_height, width, 3), 255, dtype=np.uint8)
        cv2.putText(strip, title, (3, title_height - 5),
                    cv2.FONT_HERSHEY_SIMPLEX, 0.4, (0, 0, 0), 1, cv2.LINE_AA)
        columns.append(np.concatenate([strip, tile], axis=0))
    return np.concatenate(columns, axis=1)
