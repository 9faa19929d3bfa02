"""Tests of the image-level label parsing helpers."""
import numpy as np
import pytest

from protoprompt_mm.datasets.image_labels import (labels_from_mask,
                                                  parse_image_labels)

BCSS_NAME = ('TCGA-A1-A0SK-DX1_xmin45749_ymin25055_MPP-0.2500+1[1101].png')


@pytest.mark.parametrize('path, expected', [
    (BCSS_NAME, [1, 1, 0, 1]),
    ('/data/training/' + BCSS_NAME, [1, 1, 0, 1]),
    ('some-patch-[1 0 0 1].png', [1, 0, 0, 1]),
    ('some-patch-[ 0  1 1 0 ].png', [0, 1, 1, 0]),
    ('patch[1,0,1,0].png', [1, 0, 1, 0]),
    ('dir[0000]/a[1111]_b[0010].png', [0, 0, 1, 0]),
])
def test_parse_both_formats_last_group(path, expected):
    labels = parse_image_labels(path, 4)
    assert labels.dtype == np.int64 and labels.shape == (4, )
    assert labels.tolist() == expected


def test_parse_without_bracket_group_returns_none():
    assert parse_image_labels('val/img/patch_001.png', 4) is None
    assert parse_image_labels('dir[1101]/patch_001.png', 4) is None


@pytest.mark.parametrize('name', [
    'bad[110].png', 'bad[11011].png', 'bad-[1 0 1].png', 'bad[].png',
    'bad-[10 0 1].png'
])
def test_parse_wrong_flag_count_names_file(name):
    with pytest.raises(ValueError, match='expected 4 class flags') as err:
        parse_image_labels('root/' + name, 4)
    assert name in str(err.value)


@pytest.mark.parametrize(
    'name', ['bad[1201].png', 'bad-[1 0 2 1].png', 'bad[1a01].png'])
def test_parse_non_binary_flags_names_file(name):
    with pytest.raises(ValueError, match='must be 0 or 1') as err:
        parse_image_labels(name, 4)
    assert name in str(err.value)


def test_labels_from_mask_ignores_background_and_ignore():
    mask = np.array([[0, 0, 4], [255, 2, 4]], dtype=np.uint8)
    labels = labels_from_mask(mask, 4)
    assert labels.dtype == np.int64
    assert labels.tolist() == [1, 0, 1, 0]
    assert labels_from_mask(np.full((3, 3), 4, np.uint8),
                            4).tolist() == [0] * 4
    assert labels_from_mask(np.array([-1, 3]), 4).tolist() == [0, 0, 0, 1]


def test_labels_from_mask_rejects_float_mask():
    with pytest.raises(TypeError, match='integer'):
        labels_from_mask(np.zeros((2, 2), np.float32), 4)
