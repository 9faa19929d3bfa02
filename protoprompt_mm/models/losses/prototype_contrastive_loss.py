"""Pixel-to-prototype InfoNCE loss."""
from typing import Optional, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F
from mmseg.registry import MODELS
from torch import Tensor

from ..utils.nearest_resize import resize_nearest
from .prototype_aware_loss import PrototypeAwareLoss


@MODELS.register_module()
class PrototypeContrastiveLoss(PrototypeAwareLoss):
    """InfoNCE loss between sampled pixel embeddings and class prototypes.

    Every class owns ``K`` sub-prototypes. For a sampled pixel ``i`` of class
    ``c`` with L2-normalised embedding ``e_i`` and L2-normalised prototypes
    ``q_{n,k}``, the logits are ``s_{n,k} = <e_i, q_{n,k}> / temperature`` and

    .. math::

        \\ell_i = -\\Big(\\operatorname{logsumexp}_{k} s_{c,k}
                  - \\operatorname{logsumexp}_{n,k} s_{n,k}\\Big),

    i.e. all ``K`` sub-prototypes of class ``c`` are positives and the
    prototypes of every other class are negatives.

    At most ``max_pixels_per_class`` valid pixels (label in [0, N), not
    ``ignore_index``, weight not 0) are drawn per class,
    uniformly at random with the torch RNG (``torch.manual_seed`` makes the
    draw reproducible); classes with fewer valid pixels contribute all of
    them. Sampling is vectorised: every valid pixel gets a random key, pixels
    are sorted by ``(class, key)`` in a single sort and the first
    ``max_pixels_per_class`` of each class are kept.

    Prototypes normally come from the decode head: the loss is a
    :class:`PrototypeAwareLoss`, so ``PromptFusionHead`` passes it the
    neck's embeddings, ``prototypes=`` and the pixel sampler's ``weight=``.
    To use the loss
    in a stock mmseg head's ``loss_decode`` list, build it with
    ``num_classes`` and ``embed_dim`` (the head's logits channels, i.e.
    ``num_classes``): it then owns learnable prototypes of shape
    ``(num_classes, num_prototypes, embed_dim)`` used whenever no prototypes
    are passed.

    Args:
        temperature (float): Softmax temperature of the cosine logits.
            Defaults to 0.1.
        max_pixels_per_class (int): Maximum number of pixels sampled per
            class and batch. Defaults to 256.
        num_classes (int, optional): Number of classes of the owned
            prototypes. Must be given together with ``embed_dim``.
            Defaults to None (no owned prototypes).
        embed_dim (int, optional): Channel dimension of the owned prototypes.
            Defaults to None.
        num_prototypes (int): Sub-prototypes per class of the owned
            prototypes. Defaults to 1.
        loss_weight (float): Multiplier of the loss. Defaults to 1.0.
        reduction (str): ``'none'`` (1-D vector of per-sampled-pixel losses,
            ordered by class), ``'mean'`` (mean over sampled pixels) or
            ``'sum'``. Defaults to ``'mean'``.
        loss_name (str): Name of the loss item; it must start with ``loss_``
            to be summed into the total loss. Defaults to
            ``'loss_proto_contrast'``.
    """

    def __init__(self,
                 temperature: float = 0.1,
                 max_pixels_per_class: int = 256,
                 num_classes: Optional[int] = None,
                 embed_dim: Optional[int] = None,
                 num_prototypes: int = 1,
                 loss_weight: float = 1.0,
                 reduction: str = 'mean',
                 loss_name: str = 'loss_proto_contrast') -> None:
        super().__init__(loss_weight, reduction, loss_name)
        if temperature <= 0:
            raise ValueError(f'temperature must be > 0, got {temperature}')
        if max_pixels_per_class < 1:
            raise ValueError('max_pixels_per_class must be >= 1, got '
                             f'{max_pixels_per_class}')
        if num_prototypes < 1:
            raise ValueError(
                f'num_prototypes must be >= 1, got {num_prototypes}')
        if (num_classes is None) != (embed_dim is None):
            raise ValueError('num_classes and embed_dim must be given '
                             'together to build owned prototypes, got '
                             f'num_classes={num_classes}, '
                             f'embed_dim={embed_dim}')
        self.temperature = temperature
        self.max_pixels_per_class = max_pixels_per_class
        if num_classes is not None:
            self.prototypes = nn.Parameter(
                torch.randn(num_classes, num_prototypes, embed_dim))
        else:
            self.prototypes = None

    def forward(self,
                embedding: Tensor,
                seg_label: Tensor,
                prototypes: Optional[Tensor] = None,
                weight: Optional[Tensor] = None,
                ignore_index: Optional[int] = 255,
                seg_logits: Optional[Tensor] = None,
                **kwargs) -> Tensor:
        """Compute the loss.

        Args:
            embedding (Tensor): Pixel embeddings of shape (B, D, h, w) (a
                stock mmseg head passes its logits: then D = N).
            seg_label (Tensor): Labels of shape (B, H, W); resized to (h, w)
                with nearest interpolation when the sizes differ.
            prototypes (Tensor, optional): Class prototypes of shape
                (N, K, D). Defaults to the owned prototypes, if any.
            weight (Tensor, optional): Per-pixel weight of shape (B, H, W)
                (e.g. the head's pixel sampler's), resized like
                ``seg_label``; it multiplies each sampled pixel's loss, and
                pixels of weight 0 are never sampled. Defaults to None.
            ignore_index (int, optional): Label that is never sampled;
                labels outside [0, N) are never sampled either.
                Defaults to 255.
            seg_logits (Tensor, optional): The head's logits; not used (the
                loss only compares embeddings with prototypes).
            **kwargs: Ignored; accepted for mmseg head compatibility.

        Returns:
            Tensor: Scalar loss for ``'mean'``/``'sum'``, or a (M,) vector
            of per-sampled-pixel losses for ``'none'``. With no valid pixel
            it is a zero (or an empty vector) still attached to the graph.
        """
        if prototypes is None:
            if self.prototypes is None:
                raise ValueError(
                    'PrototypeContrastiveLoss needs prototypes: pass '
                    '`prototypes=` of shape (N, K, D) (PromptFusionHead does '
                    'so) or build the loss with num_classes and embed_dim to '
                    'learn its own prototypes.')
            prototypes = self.prototypes
        self._check_shapes(embedding, seg_label, prototypes, weight)

        _, dim, height, width = embedding.shape
        num_classes, num_protos, _ = prototypes.shape
        seg_label = resize_nearest(seg_label, (height, width))
        if weight is not None:
            weight = resize_nearest(weight, (height, width))

        labels = seg_label.reshape(-1).long()
        valid = (labels >= 0) & (labels < num_classes)
        if ignore_index is not None:
            valid &= labels != ignore_index
        if weight is not None:
            valid &= weight.reshape(-1) != 0
        index, classes = self._sample(labels, valid, num_classes)

        # Gather (M, D) rows straight from (B, D, h*w) without a full copy.
        pixels = height * width
        sampled = embedding.flatten(2)[index // pixels, :, index % pixels]
        # fp32 even under autocast: logits / temperature overflow half types.
        with torch.autocast(
                device_type=embedding.device.type, enabled=False):
            sampled = F.normalize(sampled.float(), dim=1)
            protos = F.normalize(prototypes.float(), dim=-1)
            logits = sampled @ protos.reshape(-1, dim).t()
            logits = logits / self.temperature
        rows = torch.arange(classes.numel(), device=classes.device)
        positives = logits.view(-1, num_classes, num_protos)[rows, classes]
        loss = logits.logsumexp(dim=1) - positives.logsumexp(dim=1)
        if weight is not None:
            loss = loss * weight.reshape(-1)[index].to(loss.dtype)

        if self.reduction == 'mean':
            loss = loss.sum() / max(loss.numel(), 1)
        elif self.reduction == 'sum':
            loss = loss.sum()
        return self.loss_weight * loss

    def _sample(self, labels: Tensor, valid: Tensor,
                num_classes: int) -> Tuple[Tensor, Tensor]:
        """Draw at most ``max_pixels_per_class`` random valid pixels per class.

        Args:
            labels (Tensor): Flat labels of shape (P,).
            valid (Tensor): Flat bool mask of samplable pixels, shape (P,).
            num_classes (int): Number of classes N.

        Returns:
            tuple[Tensor, Tensor]: Flat pixel indices (M,) and their classes
            (M,), both sorted by class.
        """
        index = valid.nonzero(as_tuple=True)[0]
        classes = labels[index]
        # Sort by (class, random key) in one pass: the key lies in [0, 0.5),
        # so class + key never reaches class + 1 in float64.
        keys = torch.rand(
            index.numel(), dtype=torch.float64, device=index.device)
        order = (classes.double() + 0.5 * keys).argsort()
        index, classes = index[order], classes[order]
        counts = torch.bincount(classes, minlength=num_classes)
        starts = counts.cumsum(0) - counts
        rank = torch.arange(index.numel(), device=index.device)
        keep = rank - starts[classes] < self.max_pixels_per_class
        return index[keep], classes[keep]

    @staticmethod
    def _check_shapes(embedding: Tensor, seg_label: Tensor,
                      prototypes: Tensor, weight: Optional[Tensor]) -> None:
        """Raise a ValueError describing the first inconsistent shape."""
        if embedding.dim() != 4:
            raise ValueError('embedding must be (B, D, h, w), got '
                             f'shape {tuple(embedding.shape)}')
        if seg_label.dim() != 3 or seg_label.shape[0] != embedding.shape[0]:
            raise ValueError(
                f'seg_label must be (B, H, W) with B={embedding.shape[0]}, '
                f'got shape {tuple(seg_label.shape)}')
        if prototypes.dim() != 3:
            raise ValueError('prototypes must be (N, K, D), got shape '
                             f'{tuple(prototypes.shape)}')
        if embedding.shape[1] != prototypes.shape[2]:
            raise ValueError(
                f'embedding channel dim ({embedding.shape[1]}) must equal '
                f'the prototype dim D ({prototypes.shape[2]})')
        if weight is not None and weight.shape != seg_label.shape:
            raise ValueError(f'weight must have the seg_label shape '
                             f'{tuple(seg_label.shape)}, got '
                             f'{tuple(weight.shape)}')
