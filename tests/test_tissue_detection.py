"""Tissue detection on thumbnails and its per-tile look-up."""
import cv2
import numpy as np
import pytest

from protoprompt_mm.apis.slide_reader import ArrayReader
from protoprompt_mm.apis.tissue_detection import (detect_tissue,
                                                  tile_has_tissue,
                                                  tissue_fraction_of_boxes,
                                                  upsample_tissue)
from protoprompt_mm.datasets.synthetic_slide import synthetic_slide


def glass(height, width, seed=0):
    """uint8 RGB glass: about 245 grey, slightly tinted and noisy."""
    return synthetic_slide(height, width, seed, tissue_boxes=[])[0]


def eosin_pink(height, width, seed=0):
    """uint8 RGB noisy eosin pink, saturation about 0.35."""
    rng = np.random.default_rng(seed)
    pink = np.array([220, 140, 190]) + rng.normal(0, 3, (height, width, 3))
    return np.clip(np.rint(pink), 0, 255).astype(np.uint8)


@pytest.mark.parametrize('seed', [0, 2])
def test_detection_matches_the_true_tissue(seed):
    rgb, truth = synthetic_slide(2048, 2048, seed)
    thumbnail = ArrayReader(rgb).thumbnail(512)
    detected = detect_tissue(thumbnail)
    small_truth = cv2.resize(truth.astype(np.float32), (512, 512),
                             interpolation=cv2.INTER_AREA) >= 0.5
    iou = (detected & small_truth).sum() / (detected | small_truth).sum()
    assert iou >= 0.9


@pytest.mark.parametrize('value', [None, 255, 0])
def test_no_tissue_on_glass_white_or_black(value):
    thumbnail = glass(200, 300) if value is None \
        else np.full((200, 300, 3), value, np.uint8)
    assert not detect_tissue(thumbnail).any()


def test_specks_removed_and_small_holes_filled():
    thumbnail = glass(200, 200)
    texture = eosin_pink(200, 200)
    tissue = np.zeros((200, 200), bool)
    tissue[40:160, 40:160] = True  # the blob: 36% of the thumbnail
    tissue[10:14, 180:184] = True  # speck: 16 px < 1e-3 * 40000
    hole = (slice(95, 100), slice(95, 100))  # 25 px < 40 px: filled
    big_hole = (slice(60, 80), slice(60, 80))  # 400 px: kept
    tissue[hole] = tissue[big_hole] = False
    thumbnail[tissue] = texture[tissue]
    detected = detect_tissue(thumbnail, kernel_size=1)
    assert not detected[10:14, 180:184].any()
    assert detected[hole].all()
    assert not detected[big_hole].any()
    assert detected[100:160, 100:160].all()


def test_box_lookups_agree():
    rng = np.random.default_rng(0)
    tissue = rng.random((30, 40)) < 0.05
    shape = (300, 800)  # output (height, width): scales 20 x 10
    scale_x, scale_y = shape[1] / 40, shape[0] / 30
    boxes = np.concatenate([
        rng.integers(-50, 790, (200, 1)),
        rng.integers(-50, 290, (200, 1)),
        rng.integers(1, 60, (200, 2))
    ],
                           axis=1)
    fractions = tissue_fraction_of_boxes(tissue, boxes, scale_x, scale_y)
    for box, fraction in zip(boxes, fractions):
        box = tuple(int(v) for v in box)
        has = tile_has_tissue(tissue, box, scale_x, scale_y)
        upsampled = upsample_tissue(tissue, box, shape)
        assert upsampled.shape == (box[3], box[2])
        assert has == (fraction > 0)
        assert not upsampled.any() or has
    # A box covering exactly thumbnail pixels [2, 5) x [1, 3).
    box = (2 * 20, 1 * 10, 3 * 20, 2 * 10)
    assert tissue_fraction_of_boxes(tissue, [box], 20, 10)[0] == \
        pytest.approx(tissue[1:3, 2:5].mean())


def test_upsample_is_nearest_neighbour_and_false_outside():
    tissue = np.array([[True, False], [False, True]])
    upsampled = upsample_tissue(tissue, (-1, 0, 6, 4), (4, 4))
    expected = np.zeros((4, 6), bool)
    expected[:2, 1:3] = expected[2:, 3:5] = True
    np.testing.assert_array_equal(upsampled, expected)
