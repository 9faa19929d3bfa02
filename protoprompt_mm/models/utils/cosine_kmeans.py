"""Spherical (cosine) k-means, used to initialise class prototypes."""
import torch
import torch.nn.functional as F
from torch import Tensor


def _kmeans_pp_seeds(points: Tensor, k: int,
                     generator: torch.Generator) -> Tensor:
    """Pick k initial centres with k-means++ seeding on the unit sphere.

    The first centre is a uniformly drawn point; every next one is drawn
    with probability proportional to the squared cosine distance
    ``(1 - cos)^2`` to its closest centre chosen so far. When every point
    coincides with a centre (fewer than k distinct directions), the next
    centre is drawn uniformly among the points not chosen yet.

    Args:
        points: Unit vectors (M, D), M >= k.
        k: Number of centres.
        generator: CPU generator that makes the draw reproducible.

    Returns:
        Tensor: Indices (k,) of the chosen points, on the CPU.
    """
    num_points = points.shape[0]
    chosen = torch.empty(k, dtype=torch.long)
    chosen[0] = torch.randint(num_points, (1, ), generator=generator)[0]
    closest = (1 - points @ points[chosen[0]]).clamp(min=0)
    for i in range(1, k):
        weights = closest.square().cpu().double()
        if weights.sum() <= 0:
            weights = torch.ones(num_points, dtype=torch.double)
            weights[chosen[:i]] = 0
        chosen[i] = torch.multinomial(weights, 1, generator=generator)[0]
        closest = torch.minimum(
            closest, (1 - points @ points[chosen[i]]).clamp(min=0))
    return chosen


def cosine_kmeans(features: Tensor,
                  k: int,
                  num_iters: int = 50,
                  seed: int = 0) -> Tensor:
    """Cluster feature vectors by direction (spherical k-means).

    Features are L2-normalised, each point is assigned to the centre of
    highest cosine similarity, and a centre becomes the normalised mean of
    its points. Seeding is k-means++ (see :func:`_kmeans_pp_seeds`) with a
    ``torch.Generator`` seeded by ``seed``, so a call is deterministic for a
    given input, seed and device. A centre that loses all its points is
    re-seeded with the point farthest from its own centre (distinct points
    when several centres are empty). Iteration stops early once the
    assignment no longer changes. Assignment and update are vectorised over
    all points.

    There is no fallback for too few points: with M < k the function raises,
    and callers decide how to obtain more points
    (:func:`~protoprompt_mm.models.utils.cluster_class_features` switches to
    per-pixel features). With fewer than k distinct directions,
    some returned centres coincide.

    Args:
        features: Points (M, D); any scale, normalised here.
        k: Number of clusters.
        num_iters: Maximum number of assignment / update rounds.
        seed: Seed of the k-means++ draw.

    Returns:
        Tensor: Unit-length centres (k, D), float32, on the device of
        ``features``.

    Raises:
        ValueError: If ``features`` is not a finite 2-D tensor, ``k`` or
            ``num_iters`` is below 1, or M < k.
    """
    if features.dim() != 2:
        raise ValueError('cosine_kmeans: features must have shape (M, D), '
                         f'got {tuple(features.shape)}')
    if k < 1 or num_iters < 1:
        raise ValueError('cosine_kmeans: k and num_iters must be >= 1, got '
                         f'k={k}, num_iters={num_iters}')
    num_points = features.shape[0]
    if num_points < k:
        raise ValueError(f'cosine_kmeans: need at least k={k} points, got '
                         f'M={num_points}')
    if not torch.isfinite(features).all():
        raise ValueError('cosine_kmeans: features contain NaN or Inf')

    points = F.normalize(features.float(), dim=1)
    generator = torch.Generator().manual_seed(seed)
    centres = points[_kmeans_pp_seeds(points, k, generator).to(points.device)]
    assign = None
    for _ in range(num_iters):
        best_sim, new_assign = (points @ centres.t()).max(dim=1)
        counts = torch.bincount(new_assign, minlength=k)
        empty = counts == 0
        if assign is not None and not empty.any() and torch.equal(
                new_assign, assign):
            break
        assign = new_assign
        sums = torch.zeros_like(centres).index_add_(0, assign, points)
        centres = torch.where(empty[:, None], centres,
                              F.normalize(sums, dim=1))
        if empty.any():
            farthest = (1 - best_sim).topk(int(empty.sum())).indices
            centres[empty] = points[farthest]
    return centres
