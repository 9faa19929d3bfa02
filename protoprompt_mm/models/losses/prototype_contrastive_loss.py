"""Pixel-to-prototype InfoNCE loss."""
from typing import Optional, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F
from mmseg.registry import MODELS
from torch import Tensor

_REDUCTIONS = ('none', 'mean', 'sum')


@MODELS.register_module()
class PrototypeContrastiveLoss(nn.Module):
    """InfoNCE loss between sampled pixel embeddings and class prototypes.

    Every class owns ``K`` sub-prototypes. For a sampled pixel ``i`` of class
    ``c`` with L2-normalised embedding ``e_i`` and L2-normalised prototypes
    ``q_{n,k}``, the logits are ``s_{n,k} = <e_i, q_{n,k}> / temperature`` and

    .. math::

        \\ell_i = -\\Big(\\operatorname{logsumexp}_{k} s_{c,k}
                  - \\operatorname{logsumexp}_{n,k} s_{n,k}\\Big),

    i.e. all ``K`` sub-prototypes of class ``c`` are positives and the
    prototypes of every other class are negatives.

    At most ``max_pixels_per_class`` valid pixels are drawn per class,
    uniformly at random with the torch RNG (``torch.manual_seed`` makes the
    draw reproducible); classes with fewer valid pixels contribute all of
    them. Sampling is vectorised: every valid pixel gets a random key, pixels
    are sorted by ``(class, key)`` in a single sort and the first
    ``max_pixels_per_class`` of each class are kept.

    Prototypes normally come from the decode head (``PromptFusionHead`` reads
    :attr:`requires_prototypes` and passes ``prototypes=``). To use the loss
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

    requires_prototypes = True

    def __init__(self,
                 temperature: float = 0.1,
                 max_pixels_per_class: int = 256,
                 num_classes: Optional[int] = None,
                 embed_dim: Optional[int] = None,
                 num_prototypes: int = 1,
                 loss_weight: float = 1.0,
                 reduction: str = 'mean',
                 loss_name: str = 'loss_proto_contrast') -> None:
        super().__init__()
        if reduction not in _REDUCTIONS:
            raise ValueError(f'reduction must be one of {_REDUCTIONS}, '
                             f'got {reduction!r}')
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
        self.loss_weight = loss_weight
        self.reduction = reduction
        self._loss_name = loss_name
        if num_classes is not None:
            self.prototypes = nn.Parameter(
                torch.randn(num_classes, num_prototypes, embed_dim))
        else:
            self.prototypes = None

    def forward(self,
                pred: Tensor,
                target: Tensor,
                prototypes: Optional[Tensor] = None,
                weight: Optional[Tensor] = None,
                ignore_index: Optional[int] = 255,
                **kwargs) -> Tensor:
        """Compute the loss.

        Args:
            pred (Tensor): Pixel embeddings of shape (B, D, h, w).
            target (Tensor): Labels of shape (B, H, W); resized to (h, w)
                with nearest interpolation when the sizes differ.
            prototypes (Tensor, optional): Class prototypes of shape
                (N, K, D). Defaults to the owned prototypes, if any.
            weight (Tensor, optional): Per-pixel weight of shape (B, H, W)
                multiplying each sampled pixel's loss. Defaults to None.
            ignore_index (int, optional): Label that is never sampled;
                labels outside [0, N) are never sampled either.
                Defaults to 255.
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
        self._check_shapes(pred, target, prototypes, weight)

        _, dim, height, width = pred.shape
        num_classes, num_protos, _ = prototypes.shape
        if target.shape[-2:] != (height, width):
            target = _resize_nearest(target, (height, width))
            if weight is not None:
                weight = _resize_nearest(weight, (height, width))

        labels = target.reshape(-1).long()
        valid = (labels >= 0) & (labels < num_classes)
        if ignore_index is not None:
            valid &= labels != ignore_index
        index, classes = self._sample(labels, valid, num_classes)

        # Gather (M, D) rows straight from (B, D, h*w) without a full copy.
        pixels = height * width
        embeddings = pred.flatten(2)[index // pixels, :, index % pixels]
        # fp32 even under autocast: logits / temperature overflow half types.
        with torch.autocast(device_type=pred.device.type, enabled=False):
            embeddings = F.normalize(embeddings.float(), dim=1)
            protos = F.normalize(prototypes.float(), dim=-1)
            logits = embeddings @ protos.reshape(-1, dim).t()
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
    def _check_shapes(pred: Tensor, target: Tensor, prototypes: Tensor,
                      weight: Optional[Tensor]) -> None:
        """Raise a ValueError describing the first inconsistent shape."""
        if pred.dim() != 4:
            raise ValueError('pred must be (B, D, h, w) embeddings, got '
                             f'shape {tuple(pred.shape)}')
        if target.dim() != 3 or target.shape[0] != pred.shape[0]:
            raise ValueError(f'target must be (B, H, W) with B={pred.shape[0]}'
                             f', got shape {tuple(target.shape)}')
        if prototypes.dim() != 3:
            raise ValueError('prototypes must be (N, K, D), got shape '
                             f'{tuple(prototypes.shape)}')
        if pred.shape[1] != prototypes.shape[2]:
            raise ValueError(
                f'pred channel dim ({pred.shape[1]}) must equal the '
                f'prototype dim D ({prototypes.shape[2]})')
        if weight is not None and weight.shape != target.shape:
            raise ValueError(f'weight must have the target shape '
                             f'{tuple(target.shape)}, got '
                             f'{tuple(weight.shape)}')

    @property
    def loss_name(self) -> str:
        """str: Name of the loss item (``loss_`` prefixed to be summed)."""
        return self._loss_name


def _resize_nearest(tensor: Tensor, size: tuple) -> Tensor:
    """Resize a (B, H, W) map to ``size`` with nearest interpolation.

    Args:
        tensor (Tensor): Map of shape (B, H, W), any dtype.
        size (tuple[int, int]): Output (h, w).

    Returns:
        Tensor: Map of shape (B, h, w) with the input dtype.
    """
    resized = F.interpolate(tensor[:, None].float(), size=size, mode='nearest')
    return resized[:, 0].to(tensor.dtype)
