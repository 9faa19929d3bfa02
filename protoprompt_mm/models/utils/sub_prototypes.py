"""Sub-prototype helpers: merging K responses, checking loaded prototypes."""
from typing import Tuple

import torch
import torch.nn.functional as F
from torch import Tensor

MERGE_MODES = ('mean', 'max', 'softmax')


def merge_sub_prototypes(values: Tensor, mode: str, dim: int = 2) -> Tensor:
    """Merge the responses of a class's K sub-prototypes along ``dim``.

    Args:
        values: Responses with the K sub-prototypes along ``dim``, e.g. class
            scores (B, N, K) or CAMs (B, N, K, h, w).
        mode: ``'mean'`` (PBIP in training), ``'max'``, or ``'softmax'``: the
            softmax-weighted sum ``sum_k softmax(v)_k * v_k``, a smooth max
            (what PBIP's code calls ``'max'`` and uses at test time).
        dim: The sub-prototype dimension.

    Returns:
        Tensor: ``values`` with ``dim`` reduced.

    Raises:
        ValueError: On an unknown mode.
    """
    if mode == 'mean':
        return values.mean(dim=dim)
    if mode == 'max':
        return values.amax(dim=dim)
    if mode == 'softmax':
        return (values.softmax(dim=dim) * values).sum(dim=dim)
    raise ValueError(
        f'merge mode must be one of {MERGE_MODES}, got {mode!r}')


def checked_prototypes(prototypes: Tensor, expected: Tuple[int, int, int],
                       owner: str) -> Tensor:
    """Validate prototypes that replace a module's own, and normalise them.

    Args:
        prototypes: New prototypes (N, K, D).
        expected: The (N, K, D) shape the module holds.
        owner: Name used in the error messages.

    Returns:
        Tensor: Unit-length float prototypes (N, K, D).

    Raises:
        ValueError: On another shape or a non-finite value.
    """
    if tuple(prototypes.shape) != tuple(expected):
        raise ValueError(
            f'{owner}.load_prototypes: expected shape (num_classes, '
            f'num_prototypes, embed_dim) = {tuple(expected)}, got '
            f'{tuple(prototypes.shape)}')
    if not torch.isfinite(prototypes).all():
        raise ValueError(
            f'{owner}.load_prototypes: prototypes contain NaN or Inf')
    return F.normalize(prototypes.float(), dim=-1)
