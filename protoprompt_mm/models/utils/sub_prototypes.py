"""Merging the K sub-prototype responses of a class into one."""
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

