"""Class colours blended over a slide thumbnail, glass left untouched."""
import numpy as np
import pytest

from protoprompt_mm.apis.slide_overlay import blend_overlay

PALETTE = [(200, 0, 0), (0, 100, 0)]


def test_blend_overlay_resizes_nearest_and_skips_glass():
    thumbnail = np.full((8, 12, 3), 100, np.uint8)
    labels = np.array([[0, 1, 255], [255, 1, 0]], np.uint8)  # 2 x 3
    overlay = blend_overlay(thumbnail, labels, PALETTE, alpha=0.5)
    assert overlay.shape == (8, 12, 3) and overlay.dtype == np.uint8
    expected = np.empty_like(thumbnail)
    colour = {0: (150, 50, 50), 1: (50, 100, 50), 255: (100, 100, 100)}
    for row in range(8):
        for column in range(12):
            expected[row, column] = colour[labels[row // 4, column // 4]]
    np.testing.assert_array_equal(overlay, expected)
    np.testing.assert_array_equal(
        blend_overlay(thumbnail, labels, PALETTE, alpha=0.0), thumbnail)


def test_blend_overlay_rejects_bad_inputs():
    with pytest.raises(ValueError, match='uint8 \\(H, W, 3\\)'):
        blend_overlay(np.zeros((4, 4), np.uint8), np.zeros((2, 2)), PALETTE)
    with pytest.raises(ValueError, match='expected \\(h, w\\)'):
        blend_overlay(np.zeros((4, 4, 3), np.uint8),
                      np.zeros((2, 2, 1), np.uint8), PALETTE)
