"""Class prototypes as module state: creation, loading, checkpointing."""
from typing import Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor


def load_prototype_file(path: str) -> Tensor:
    """Read prototypes saved by ``tools/build_prototype_bank.py``.

    Args:
        path: A ``.pth`` file holding a (N, K, D) tensor or a dict with the
            key ``'prototypes'``.

    Returns:
        Tensor: The prototypes (N, K, D), on the CPU.
    """
    obj = torch.load(path, map_location='cpu', weights_only=True)
    if isinstance(obj, dict):
        if 'prototypes' not in obj:
            raise KeyError(f'{path}: expected a tensor or a dict with key '
                           f"'prototypes', got keys {sorted(obj)}")
        obj = obj['prototypes']
    if not isinstance(obj, Tensor) or obj.dim() != 3:
        raise ValueError(f'{path}: expected prototypes of shape (N, K, D), '
                         f'got {getattr(obj, "shape", type(obj))}')
    return obj.float()


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


class PrototypeStateMixin:
    """State of a module that holds N x K x D class prototypes.

    Mix it in before ``BaseModule``. :meth:`register_prototypes` creates
    ``self.prototypes``, random unit vectors, as a parameter (learned) or a
    buffer (frozen, or updated outside the optimiser); both are saved in
    checkpoints. :meth:`init_weights` loads ``self.init_prototypes`` (a
    file, or None) after the layers are initialised, and
    :meth:`load_prototypes` replaces them (e.g. by k-means centres).
    """

    def register_prototypes(self, num_classes: int, num_prototypes: int,
                            dim: int, learned: bool) -> None:
        """Create ``self.prototypes`` (N, K, D).

        Args:
            num_classes: N.
            num_prototypes: K.
            dim: D.
            learned: A parameter when True, else a buffer.
        """
        init = F.normalize(
            torch.randn(num_classes, num_prototypes, dim), dim=-1)
        if learned:
            self.prototypes = nn.Parameter(init)
        else:
            self.register_buffer('prototypes', init)

    def init_weights(self) -> None:
        """Initialise layers, then load ``init_prototypes`` if given."""
        super().init_weights()
        if self.init_prototypes is not None:
            self.load_prototypes(load_prototype_file(self.init_prototypes))

    @torch.no_grad()
    def load_prototypes(self, prototypes: Tensor) -> None:
        """Replace the prototypes.

        Args:
            prototypes: (N, K, D); normalised here.
        """
        self.prototypes.data.copy_(
            checked_prototypes(prototypes, self.prototypes.shape,
                               type(self).__name__))
