"""Tests of the spherical k-means used to initialise prototypes."""
import itertools

import pytest
import torch
import torch.nn.functional as F

from protoprompt_mm.models.utils import cosine_kmeans


def _three_clusters(seed: int = 0, noise: float = 0.05):
    """150 points around 3 random directions in 16-D, 50 per direction."""
    gen = torch.Generator().manual_seed(seed)
    dirs = F.normalize(torch.randn(3, 16, generator=gen), dim=1)
    points = dirs.repeat_interleave(50, dim=0)
    points = points + noise * torch.randn(150, 16, generator=gen)
    # Random scales: only the direction may matter.
    points = points * torch.rand(150, 1, generator=gen).add(0.5)
    return dirs, points


def test_recovers_separated_clusters_up_to_permutation():
    dirs, points = _three_clusters()
    centres = cosine_kmeans(points, 3, seed=1)
    assert centres.shape == (3, 16)
    assert torch.allclose(centres.norm(dim=1), torch.ones(3), atol=1e-5)
    best = max(
        itertools.permutations(range(3)),
        key=lambda p: (centres[list(p)] * dirs).sum(dim=1).min())
    assert (centres[list(best)] * dirs).sum(dim=1).min() > 0.98


def test_deterministic_per_seed():
    _, points = _three_clusters(noise=0.5)
    a = cosine_kmeans(points, 5, seed=3)
    b = cosine_kmeans(points, 5, seed=3)
    c = cosine_kmeans(points, 5, seed=4, num_iters=1)
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


def test_duplicate_points_give_k_unit_centres():
    points = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 2.0]])
    centres = cosine_kmeans(points, 3)
    assert centres.shape == (3, 2)
    assert torch.isfinite(centres).all()
    assert torch.allclose(centres.norm(dim=1), torch.ones(3))


def test_too_few_points_raises():
    with pytest.raises(ValueError, match='at least k=4 points, got M=3'):
        cosine_kmeans(torch.randn(3, 8), 4)


@pytest.mark.parametrize('features,k', [(torch.randn(5), 2),
                                        (torch.full((4, 3), float('nan')), 2),
                                        (torch.randn(4, 3), 0)])
def test_bad_inputs_raise(features, k):
    with pytest.raises(ValueError, match='cosine_kmeans'):
        cosine_kmeans(features, k)
