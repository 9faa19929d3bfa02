"""Consistency of predictions inside connected pseudo-label regions."""
from typing import Optional

import torch
import torch.nn.functional as F
from mmseg.registry import MODELS
from torch import Tensor

from ..utils import connected_components
from .base_loss import BaseLoss

_EPS = 1e-12


@MODELS.register_module()
class RegionConsistencyLoss(BaseLoss):
    """Pull every pixel's class distribution towards its region's mean.

    A region is a connected component of pixels sharing the same valid label
    (not ``ignore_index``, inside ``[0, C)``); components never connect
    across images of the batch. With ``p = softmax(pred)`` and ``p̄_r`` the
    mean of ``p`` over region ``r``, each pixel ``i`` of ``r`` contributes

    .. math::

        \\mathrm{KL}(\\bar p_r \\,\\|\\, p_i)
            = \\sum_c \\bar p_{r,c} (\\log \\bar p_{r,c} - \\log p_{i,c}),

    with ``p̄_r`` detached when ``detach_target``. ``log p_i`` comes from
    ``log_softmax`` and ``p̄_r`` is clamped before the log, so the loss is
    always finite.

    The regions are labelled on ``pred.device`` by
    :func:`~protoprompt_mm.models.utils.connected_components` (the partition
    of :func:`scipy.ndimage.label`, for the whole batch at once); a region's
    id is the flat index of its first pixel, so no count of regions is
    needed on the host. Region means and the per-pixel KL are vectorised
    (``index_add`` over region ids), with no Python loop over pixels or
    regions and no copy of a map to the CPU.

    Args:
        connectivity (int): 4 or 8 pixel connectivity of the regions.
            Defaults to 4.
        min_region_size (int): Regions with fewer pixels are excluded.
            Defaults to 1.
        detach_target (bool): Stop the gradient through the region means.
            Defaults to True.
        loss_weight (float): Multiplier of the loss. Defaults to 1.0.
        reduction (str): ``'none'`` ((B, H, W) map, zero at excluded
            pixels), ``'mean'`` (mean over counted pixels) or ``'sum'``.
            Defaults to ``'mean'``.
        loss_name (str): Name of the loss item; it must start with ``loss_``
            to be summed into the total loss. Defaults to ``'loss_region'``.
    """

    def __init__(self,
                 connectivity: int = 4,
                 min_region_size: int = 1,
                 detach_target: bool = True,
                 loss_weight: float = 1.0,
                 reduction: str = 'mean',
                 loss_name: str = 'loss_region') -> None:
        super().__init__(loss_weight, reduction, loss_name)
        if connectivity not in (4, 8):
            raise ValueError(
                f'connectivity must be 4 or 8, got {connectivity}')
        if min_region_size < 1:
            raise ValueError(
                f'min_region_size must be >= 1, got {min_region_size}')
        self.connectivity = connectivity
        self.min_region_size = min_region_size
        self.detach_target = detach_target

    def forward(self,
                pred: Tensor,
                target: Tensor,
                weight: Optional[Tensor] = None,
                ignore_index: Optional[int] = 255,
                **kwargs) -> Tensor:
        """Compute the loss.

        Args:
            pred (Tensor): Logits of shape (B, C, h, w); bilinearly resized
                to (H, W) when the sizes differ.
            target (Tensor): Pseudo labels of shape (B, H, W).
            weight (Tensor, optional): Per-pixel weight of shape (B, H, W)
                multiplying each pixel's loss. Defaults to None.
            ignore_index (int, optional): Label excluded from every region;
                labels outside [0, C) are excluded too. Defaults to 255.
            **kwargs: Ignored; accepted for mmseg head compatibility.

        Returns:
            Tensor: Scalar loss for ``'mean'``/``'sum'`` or a (B, H, W) map
            for ``'none'``. With no counted pixel it is a zero still
            attached to the graph.
        """
        if pred.dim() != 4:
            raise ValueError('pred must be (B, C, H, W) logits, got shape '
                             f'{tuple(pred.shape)}')
        if target.dim() != 3 or target.shape[0] != pred.shape[0]:
            raise ValueError(f'target must be (B, H, W) with B={pred.shape[0]}'
                             f', got shape {tuple(target.shape)}')
        if weight is not None and weight.shape != target.shape:
            raise ValueError(f'weight must have the target shape '
                             f'{tuple(target.shape)}, got '
                             f'{tuple(weight.shape)}')
        num_classes = pred.shape[1]
        if pred.shape[-2:] != target.shape[-2:]:
            pred = F.interpolate(
                pred, size=target.shape[-2:], mode='bilinear',
                align_corners=False)

        target = target.to(pred.device)
        valid = (target >= 0) & (target < num_classes)
        if ignore_index is not None:
            valid &= target != ignore_index
        regions = connected_components(target, valid,
                                       self.connectivity).reshape(-1)
        # Excluded pixels go to an extra sink region so every gather is valid.
        sink = regions.numel()
        in_region = regions >= 0
        region_ids = torch.where(in_region, regions, sink)
        sizes = torch.zeros(
            sink + 1, dtype=torch.long, device=pred.device).index_add_(
                0, region_ids, torch.ones_like(region_ids))
        counted = in_region & (sizes[region_ids] >= self.min_region_size)

        log_probs = F.log_softmax(pred.float(), dim=1)
        log_probs = log_probs.permute(0, 2, 3, 1).reshape(-1, num_classes)
        probs = log_probs.exp()
        region_sum = probs.new_zeros(sink + 1, num_classes).index_add(
            0, region_ids, probs)
        region_mean = region_sum / sizes.clamp(min=1).unsqueeze(1)
        mean_probs = region_mean[region_ids]
        if self.detach_target:
            mean_probs = mean_probs.detach()
        kl = (mean_probs *
              (mean_probs.clamp(min=_EPS).log() - log_probs)).sum(dim=1)
        loss = torch.where(counted, kl, torch.zeros_like(kl))
        if weight is not None:
            loss = loss * weight.reshape(-1).to(loss)

        if self.reduction == 'mean':
            loss = loss.sum() / counted.sum().clamp(min=1)
        elif self.reduction == 'sum':
            loss = loss.sum()
        else:
            loss = loss.view(target.shape)
        return self.loss_weight * loss
