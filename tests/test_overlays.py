"""Overlay helpers: palette colours, heat maps, panels."""
import numpy as np
import pytest

from protoprompt_mm.visualization import (colorize_labels, heatmap_overlay,
                                          make_panel)


def test_colorize_labels_uses_palette_background_and_ignore():
    labels = np.array([[0, 1], [4, 255]], dtype=np.uint8)
    rgb = colorize_labels(labels, [(10, 20, 30), (40, 50, 60)],
                          background_index=4)
    assert rgb[0, 0].tolist() == [10, 20, 30]
    assert rgb[0, 1].tolist() == [40, 50, 60]
    assert rgb[1, 0].tolist() == [255, 255, 255]
    assert rgb[1, 1].tolist() == [128, 128, 128]


def test_heatmap_overlay_blends_and_clips():
    image = np.zeros((4, 4, 3), dtype=np.uint8)
    low = heatmap_overlay(image, np.full((4, 4), -3.0), alpha=1.0)
    high = heatmap_overlay(image, np.full((4, 4), 7.0), alpha=1.0)
    assert low.shape == (4, 4, 3) and low.dtype == np.uint8
    assert low[0, 0, 2] > low[0, 0, 0]  # jet: cold is blue (RGB)
    assert high[0, 0, 0] > high[0, 0, 2]  # hot is red
    assert heatmap_overlay(image, np.ones((4, 4)), alpha=0.0).max() == 0


def test_make_panel_layout_and_enlargement():
    tiles = [np.full((8, 10, 3), v, dtype=np.uint8) for v in (0, 200)]
    panel = make_panel(tiles, ['a', 'b'], title_height=18, min_tile_width=30)
    assert panel.shape == (18 + 24, 2 * 30, 3)
    assert panel[18:, :30].max() == 0 and panel[18:, 30:].min() == 200
    with pytest.raises(ValueError, match='titles'):
        make_panel(tiles, ['a'])
    with pytest.raises(ValueError, match='shape'):
        make_panel([tiles[0], np.zeros((9, 10, 3), np.uint8)], ['a', 'b'])
