"""Class activation map (CAM) helpers shared by the stage-1 model and tools.

Conventions: ``B`` images, ``N`` classes, CAMs are (B, N, h, w) maps, image
labels / gates are (B, N) multi-hot tensors.
"""
from typing import Sequence, Tuple

import torch
from mmseg.models.utils import resize
from mmseg.utils import SampleList
from torch import Tensor


def normalize_cams(cams: Tensor, eps: float = 1e-5) -> Tensor:
    """Clip CAMs at zero and scale every (image, class) map to max 1.

    Args:
        cams: Raw CAMs (B, N, h, w).
        eps: Added to the maximum; a map without positive value stays 0.

    Returns:
        Tensor: CAMs (B, N, h, w) in [0, 1].
    """
    cams = cams.float().clamp(min=0)
    peak = cams.flatten(2).amax(dim=2)[..., None, None]
    return cams / (peak + eps)


def fuse_cams(cams: Sequence[Tensor],
              weights: Sequence[float],
              size: Tuple[int, int],
              align_corners: bool = False) -> Tensor:
    """Normalise per-level CAMs, resize them and take their weighted mean.

    Args:
        cams: One raw CAM tensor per level, each (B, N, h_l, w_l).
        weights: One non-negative weight per level (only their ratios
            matter).
        size: Output (H, W).
        align_corners: ``align_corners`` of the bilinear resizing.

    Returns:
        Tensor: Fused CAMs (B, N, H, W) in [0, 1], re-normalised so that each
        (image, class) map peaks at 1 (or is 0 everywhere).

    Raises:
        ValueError: If the number of weights does not match the levels.
    """
    if len(cams) != len(weights):
        raise ValueError(f'fuse_cams: got {len(cams)} CAM levels but '
                         f'{len(weights)} weights')
    fused = 0
    for cam, weight in zip(cams, weights):
        if weight == 0:  # e.g. PBIP's first level; skip its resize
            continue
        fused = fused + weight * resize(
            normalize_cams(cam),
            size=tuple(size),
            mode='bilinear',
            align_corners=align_corners)
    return normalize_cams(fused)


def labels_from_probs(probs: Tensor, thresh: float) -> Tensor:
    """Predicted image-level labels; the top class when none passes.

    Args:
        probs: Class probabilities (B, N).
        thresh: A class is predicted when its probability exceeds this.

    Returns:
        Tensor: Bool labels (B, N), at least one True per image.
    """
    labels = probs > thresh
    top1 = torch.zeros_like(labels).scatter_(1, probs.argmax(1, True), True)
    return torch.where(labels.any(dim=1, keepdim=True), labels, top1)


def gate_cams(cams: Tensor, keep: Tensor) -> Tensor:
    """Zero the CAMs of the classes not kept.

    Args:
        cams: CAMs (B, N, H, W).
        keep: Multi-hot / bool classes to keep (B, N).

    Returns:
        Tensor: Gated CAMs (B, N, H, W).
    """
    return cams * keep.to(cams.dtype)[..., None, None]


def gated_argmax(cams: Tensor, keep: Tensor) -> Tensor:
    """Arg-max over the kept classes only.

    A plain arg-max of gated CAMs would return class 0 (possibly not kept)
    where every kept CAM is 0; here gated classes can never win.

    Args:
        cams: CAMs in [0, 1], (N, H, W) for one image or (B, N, H, W).
        keep: Classes to keep, (N,) or (B, N) matching ``cams``.

    Returns:
        Tensor: Class indices, (1, H, W) or (B, 1, H, W).
    """
    gate = keep.bool()[..., None, None]
    return cams.masked_fill(~gate, -1.0).argmax(dim=-3, keepdim=True)


def stack_img_labels(data_samples: SampleList, num_classes: int,
                     device: torch.device) -> Tensor:
    """Stack the image-level labels of a batch.

    Args:
        data_samples: Samples whose metainfo holds ``img_labels``, a 0 / 1
            array of shape (N,).
        num_classes: N.
        device: Device of the result.

    Returns:
        Tensor: Float multi-hot labels (B, N).

    Raises:
        KeyError: If a sample has no ``img_labels`` in its metainfo.
        ValueError: If the labels are not N flags of 0 / 1.
    """
    labels = []
    for sample in data_samples:
        meta = sample.metainfo
        if 'img_labels' not in meta:
            raise KeyError(
                f"data sample of {meta.get('img_path', '<unknown image>')} "
                "has no 'img_labels' in its metainfo; load them with "
                "LoadImageLevelLabels and add 'img_labels' to PackSegInputs' "
                'meta_keys')
        label = torch.as_tensor(meta['img_labels']).flatten()
        if label.numel() != num_classes or not (
            (label == 0) | (label == 1)).all():
            raise ValueError(
                f"img_labels of {meta.get('img_path', '<unknown image>')} "
                f'must be {num_classes} flags of 0 / 1, got {label.tolist()}')
        labels.append(label)
    return torch.stack(labels).to(device=device, dtype=torch.float32)
