"""RandomRotate90: image and maps turned together, by quarter turns only."""
import numpy as np
import pytest
from mmcv.transforms import Compose

import protoprompt_mm  # noqa: F401
from protoprompt_mm.datasets.transforms import RandomRotate90


def sample(height=3, width=5):
    img = np.arange(height * width * 3, dtype=np.uint8).reshape(
        height, width, 3)
    seg = np.arange(height * width, dtype=np.uint8).reshape(height, width)
    return dict(img=img, gt_seg_map=seg, seg_fields=['gt_seg_map'],
                img_shape=(height, width))


def test_rotations_are_quarter_turns_applied_to_image_and_map():
    np.random.seed(0)
    original = sample()
    turns_seen = set()
    for _ in range(200):
        out = RandomRotate90(prob=1.0)(sample())
        turns = [k for k in range(4) if np.array_equal(
            out['img'], np.rot90(original['img'], k))]
        assert len(turns) == 1
        (k, ) = turns
        turns_seen.add(k)
        assert np.array_equal(out['gt_seg_map'],
                              np.rot90(original['gt_seg_map'], k))
        assert out['img_shape'] == out['img'].shape[:2]
        assert out['img'].flags['C_CONTIGUOUS']
    assert turns_seen == {0, 1, 2, 3}


def test_probability_zero_keeps_the_sample_and_counts_match_prob():
    np.random.seed(0)
    original = sample()
    out = RandomRotate90(prob=0.0)(sample())
    assert np.array_equal(out['img'], original['img'])
    # prob 0.5 and k uniform in 0..3 (albumentations): 5/8 unchanged.
    unchanged = sum(
        np.array_equal(RandomRotate90(prob=0.5)(sample())['img'],
                       original['img']) for _ in range(2000))
    assert unchanged / 2000 == pytest.approx(5 / 8, abs=0.04)


def test_built_from_the_registry_and_bad_prob():
    pipeline = Compose([dict(type='RandomRotate90', prob=0.5)])
    assert 'RandomRotate90(prob=0.5)' in repr(pipeline)
    with pytest.raises(ValueError, match='prob must be in'):
        RandomRotate90(prob=1.5)
