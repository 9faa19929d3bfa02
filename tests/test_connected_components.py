"""connected_components: the partition of scipy.ndimage.label, in torch."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy import ndimage

from protoprompt_mm.models.utils import connected_components


def scipy_first_pixels(labels: np.ndarray, valid: np.ndarray,
                       connectivity: int) -> np.ndarray:
    """Reference: per valid pixel, the smallest flat index of its scipy
    component (labelled per label value, no connection across images)."""
    structure = np.zeros((3, 3, 3), dtype=bool)
    structure[1] = ndimage.generate_binary_structure(
        2, 1 if connectivity == 4 else 2)
    flat_index = np.arange(labels.size).reshape(labels.shape)
    out = np.full(labels.shape, -1, dtype=np.int64)
    for value in np.unique(labels[valid]):
        components, count = ndimage.label(
            valid & (labels == value), structure=structure)
        firsts = ndimage.minimum(flat_index, components,
                                 index=np.arange(1, count + 1))
        inside = components > 0
        out[inside] = np.asarray(firsts, dtype=np.int64)[components[inside]
                                                         - 1]
    return out


def check_against_scipy(labels: torch.Tensor, valid: torch.Tensor,
                        connectivity: int) -> None:
    ours = connected_components(labels, valid, connectivity)
    assert ours.dtype == torch.int64 and ours.shape == labels.shape
    np.testing.assert_array_equal(
        ours.numpy(),
        scipy_first_pixels(labels.numpy(), valid.numpy(), connectivity))


def random_maps(gen, shape, num_classes, density, smooth):
    """Noise labels, or blob-like ones (upsampled noise) as in pseudo
    masks, with a random ``density`` share of valid pixels."""
    batch, height, width = shape
    if smooth:
        noise = torch.randn(batch, num_classes, height // 6 + 2,
                            width // 6 + 2, generator=gen)
        labels = F.interpolate(noise, size=(height, width), mode='bilinear',
                               align_corners=False).argmax(1)
    else:
        labels = torch.randint(0, num_classes, shape, generator=gen)
    valid = torch.rand(shape, generator=gen) < density
    return labels, valid


@pytest.mark.parametrize('connectivity', [4, 8])
@pytest.mark.parametrize('shape', [(1, 1, 1), (3, 7, 5), (2, 33, 48),
                                   (4, 64, 64)])
def test_random_maps_match_scipy(shape, connectivity):
    gen = torch.Generator().manual_seed(sum(shape) + connectivity)
    for num_classes in (1, 2, 5):
        for density in (0.2, 0.6, 1.0):
            for smooth in (False, True):
                labels, valid = random_maps(gen, shape, num_classes,
                                            density, smooth)
                check_against_scipy(labels, valid, connectivity)


@pytest.mark.parametrize('connectivity', [4, 8])
def test_long_thin_regions_match_scipy(connectivity):
    # A serpentine (one 4-connected path through the whole map) and
    # concentric rings: the worst cases for label propagation.
    size = 40
    snake = np.zeros((size, size), dtype=np.int64)
    snake[:, ::2] = 1
    snake[0, 1::4] = 1
    snake[-1, 3::4] = 1
    yy, xx = np.mgrid[:size, :size]
    rings = np.maximum(abs(yy - size // 2), abs(xx - size // 2)) % 2
    labels = torch.from_numpy(np.stack([snake, rings]))
    valid = torch.ones_like(labels, dtype=torch.bool)
    check_against_scipy(labels, valid, connectivity)
    # The serpentine is one region whatever the connectivity.
    regions = connected_components(labels, valid, connectivity)[0]
    assert regions[torch.from_numpy(snake == 1)].unique().tolist() == [0]


def test_edge_cases():
    empty = torch.zeros(2, 4, 4, dtype=torch.long)
    none_valid = connected_components(empty, empty.bool())
    assert (none_valid == -1).all()
    full = connected_components(empty, torch.ones(2, 4, 4, dtype=torch.bool))
    # One region per image, never joined across the batch.
    assert (full[0] == 0).all() and (full[1] == 16).all()
    assert connected_components(empty[:0], empty[:0].bool()).shape == (0, 4,
                                                                       4)

    singles = torch.zeros(1, 5, 5, dtype=torch.long)
    singles[0, ::2, ::2] = 1
    regions = connected_components(singles, singles.bool())
    assert regions[singles.bool()].tolist() == [
        y * 5 + x for y in (0, 2, 4) for x in (0, 2, 4)]

    diagonal = torch.eye(3, dtype=torch.long)[None]
    four = connected_components(diagonal, diagonal.bool(), connectivity=4)
    eight = connected_components(diagonal, diagonal.bool(), connectivity=8)
    assert four[0].diagonal().tolist() == [0, 4, 8]
    assert eight[0].diagonal().tolist() == [0, 0, 0]
    # Diagonal pixels of different labels never join.
    two_labels = diagonal.clone()
    two_labels[0, 1, 1] = 2
    assert connected_components(two_labels, two_labels.bool(),
                                8)[0].diagonal().tolist() == [0, 4, 8]


def test_bad_arguments():
    labels = torch.zeros(2, 3, 3, dtype=torch.long)
    with pytest.raises(ValueError, match=r'\(B, H, W\)'):
        connected_components(labels[0], labels[0].bool())
    with pytest.raises(ValueError, match='bool'):
        connected_components(labels, labels)
    with pytest.raises(ValueError, match='connectivity'):
        connected_components(labels, labels.bool(), connectivity=6)
