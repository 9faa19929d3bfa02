"""resize_nearest: the one nearest-neighbour resizing of label maps."""
import pytest
import torch

from protoprompt_mm.models.utils import resize_nearest


def test_downsampling_keeps_labels_and_dtype():
    labels = torch.tensor([[[0, 0, 1, 1], [0, 0, 1, 1],
                            [255, 255, 2, 2], [255, 255, 2, 2]]])
    small = resize_nearest(labels, (2, 2))
    assert small.dtype == torch.long
    assert small.tolist() == [[[0, 1], [255, 2]]]


def test_upsampling_repeats_and_weights_keep_float():
    weight = torch.tensor([[[0.5, 2.0]]])
    big = resize_nearest(weight, (2, 4))
    assert big.dtype == torch.float32
    assert big.tolist() == [[[0.5, 0.5, 2.0, 2.0], [0.5, 0.5, 2.0, 2.0]]]


def test_same_size_is_returned_as_is():
    labels = torch.randint(0, 3, (2, 5, 5), dtype=torch.uint8)
    assert resize_nearest(labels, (5, 5)) is labels
    assert resize_nearest(labels, torch.Size([5, 5])) is labels


def test_rejects_maps_that_are_not_3d():
    with pytest.raises(ValueError, match=r'\(B, H, W\).*\(2, 1, 4, 4\)'):
        resize_nearest(torch.zeros(2, 1, 4, 4), (2, 2))
