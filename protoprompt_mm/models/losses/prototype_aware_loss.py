"""PrototypeAwareLoss: the contract of losses fed embeddings and prototypes."""
from abc import ABCMeta, abstractmethod
from typing import Optional

from torch import Tensor

from .base_loss import BaseLoss


class PrototypeAwareLoss(BaseLoss, metaclass=ABCMeta):
    """Base class of the losses that compare pixel embeddings to prototypes.

    ``PromptFusionHead`` checks every loss of its ``loss_decode`` with
    ``isinstance(loss, PrototypeAwareLoss)``. Such a loss is called as

    .. code-block:: python

        loss(embedding, seg_label, prototypes=prototypes, weight=seg_weight,
             ignore_index=ignore_index, seg_logits=seg_logits)

    with the tensors of the ``PrototypeBank`` neck's ``PromptedFeatures``;
    every other loss gets mmseg's ``loss(seg_logits, seg_label,
    weight=seg_weight, ignore_index=ignore_index)``. ``seg_weight`` is the
    pixel sampler's output (``None`` without ``sampler``) and reaches both
    kinds of loss. A subclass sets ``loss_weight``, ``reduction`` and
    ``loss_name`` through :class:`BaseLoss` and implements :meth:`forward`.
    """

    @abstractmethod
    def forward(self,
                embedding: Tensor,
                seg_label: Tensor,
                prototypes: Tensor,
                weight: Optional[Tensor] = None,
                ignore_index: Optional[int] = 255,
                seg_logits: Optional[Tensor] = None) -> Tensor:
        """Compute the loss.

        Args:
            embedding: L2-normalised pixel embeddings (B, D, h, w), at the
                neck's resolution.
            seg_label: Labels (B, H, W), at the input resolution; a loss
                resizes them to (h, w) itself.
            prototypes: L2-normalised prototypes (N, K, D): K per class.
            weight: Per-pixel weights (B, H, W) of the head's pixel sampler,
                or None (every pixel weighs 1).
            ignore_index: Label of the pixels to leave out.
            seg_logits: The head's logits (B, N, H, W), resized to the
                labels, for losses that also need them.

        Returns:
            Tensor: The weighted loss, reduced as ``self.reduction`` says.
        """
