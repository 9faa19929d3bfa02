"""BaseCAMHead: what every stage-1 (image-label) CAM head shares."""
from abc import ABCMeta, abstractmethod
from typing import Dict, List, Optional, Sequence, Tuple, Union

import torch
from mmengine.model import BaseModule
from mmseg.registry import MODELS
from torch import Tensor

from ..utils import fuse_cams


class BaseCAMHead(BaseModule, metaclass=ABCMeta):
    """Base of the heads that learn CAMs from image-level labels only.

    mmseg's ``BaseDecodeHead`` is not used: its contract (a ``conv_seg``
    classifier over ``channels``, losses computed from ``gt_sem_seg``,
    ``predict`` returning segmentation logits) does not fit a head trained
    with a multi-label classification loss whose pixel maps are a by-product.

    A head computes raw CAMs at ``L`` levels and a class score per level and
    class; the score of a level is its CAMs pooled over the pixels (mean of
    the top ``topk_ratio`` fraction; 1.0 = global average pooling). The
    ``level_weights`` weigh the levels both in the loss and in the CAM fusion
    (:func:`~protoprompt_mm.models.utils.fuse_cams`).

    Args:
        num_classes: N, number of classes.
        num_levels: L, number of CAM levels the head produces.
        level_weights: One non-negative weight per level for the loss and
            the class probabilities (default: equal).
        fuse_weights: One non-negative weight per level for the CAM fusion
            of :meth:`fuse` (default: ``level_weights``).
        topk_ratio: Fraction of the pixels, in (0, 1], pooled into a score.
        loss_cls: Multi-label loss config, called as ``loss(scores (B, N),
            labels (B, N))``; its ``loss_name`` is the key of the loss.
        align_corners: ``align_corners`` of the CAM resizing.
        init_cfg: mmengine init config.
    """

    def __init__(self,
                 num_classes: int,
                 num_levels: int,
                 level_weights: Optional[Sequence[float]] = None,
                 fuse_weights: Optional[Sequence[float]] = None,
                 topk_ratio: float = 1.0,
                 loss_cls: dict = dict(
                     type='CrossEntropyLoss',
                     use_sigmoid=True,
                     loss_weight=1.0,
                     loss_name='loss_cls'),
                 align_corners: bool = False,
                 init_cfg: Optional[Union[dict, List[dict]]] = None) -> None:
        super().__init__(init_cfg=init_cfg)
        name = type(self).__name__
        if num_classes < 1:
            raise ValueError(
                f'{name}: num_classes must be >= 1, got {num_classes}')
        if level_weights is None:
            level_weights = [1.0] * num_levels
        if fuse_weights is None:
            fuse_weights = level_weights
        for key, weights in (('level_weights', level_weights),
                             ('fuse_weights', fuse_weights)):
            if len(weights) != num_levels or min(weights) < 0 \
                    or sum(weights) <= 0:
                raise ValueError(
                    f'{name}: {key} must be {num_levels} non-negative '
                    f'weights with a positive sum, got {list(weights)}')
        if not 0.0 < topk_ratio <= 1.0:
            raise ValueError(
                f'{name}: topk_ratio must be in (0, 1], got {topk_ratio}')
        self.num_classes = num_classes
        self.num_levels = num_levels
        total = float(sum(level_weights))
        self.level_weights = [float(w) / total for w in level_weights]
        self.fuse_weights = [float(w) for w in fuse_weights]
        self.topk_ratio = topk_ratio
        self.loss_cls = MODELS.build(loss_cls)
        self.align_corners = align_corners

    @abstractmethod
    def forward(self, inputs: Sequence[Tensor]) -> Tuple[List[Tensor], Tensor]:
        """Compute raw CAMs and class scores.

        Args:
            inputs: Features from the backbone / neck.

        Returns:
            tuple: ``cams``, a list of L raw CAMs (B, N, h_l, w_l), and
            ``scores``, class logits (B, L, N).
        """

    def level_feature(self, inputs: Sequence[Tensor], index: int,
                      channels: int) -> Tensor:
        """Feature level ``index`` of ``inputs``, checked.

        Args:
            inputs: Feature levels.
            index: The level's index in ``inputs``.
            channels: Channels the level must have.

        Returns:
            Tensor: The level (B, channels, h, w).

        Raises:
            ValueError: If the level is missing or has another shape.
        """
        name = type(self).__name__
        if not -len(inputs) <= index < len(inputs):
            raise ValueError(f'{name}: in_index {index} is out of range '
                             f'for {len(inputs)} feature levels')
        feat = inputs[index]
        if feat.dim() != 4 or feat.shape[1] != channels:
            raise ValueError(
                f'{name}: level {index} must be (B, {channels}, h, w), '
                f'got {tuple(feat.shape)}')
        return feat

    def pool(self, cams: Tensor) -> Tensor:
        """Pool CAMs into class scores (top-k mean over the pixels).

        Args:
            cams: Raw CAMs (B, N, h, w).

        Returns:
            Tensor: Scores (B, N).
        """
        flat = cams.flatten(2)
        k = max(1, round(self.topk_ratio * flat.shape[2]))
        if k == flat.shape[2]:
            return flat.mean(dim=2)
        return flat.topk(k, dim=2).values.mean(dim=2)

    def class_probs(self, scores: Tensor) -> Tensor:
        """Class probabilities, the level-weighted mean of the sigmoids.

        Args:
            scores: Class logits (B, L, N).

        Returns:
            Tensor: Probabilities (B, N).
        """
        weights = scores.new_tensor(self.level_weights)
        return torch.einsum('bln,l->bn', scores.sigmoid(), weights)

    def fuse(self, cams: Sequence[Tensor], size: Tuple[int, int]) -> Tensor:
        """Fuse the levels' CAMs with ``fuse_weights``.

        Args:
            cams: Raw CAMs per level, each (B, N, h_l, w_l).
            size: Output (H, W).

        Returns:
            Tensor: Normalised fused CAMs (B, N, H, W) in [0, 1].
        """
        return fuse_cams(cams, self.fuse_weights, size, self.align_corners)

    def loss(self, inputs: Sequence[Tensor],
             img_labels: Tensor) -> Dict[str, Tensor]:
        """Forward, then the multi-label loss against image-level labels.

        Args:
            inputs: Features from the backbone / neck.
            img_labels: Multi-hot labels (B, N).

        Returns:
            dict: The loss (key ``loss_cls.loss_name``, level-weighted sum)
            and ``acc_cls``, the percentage of (image, class) decisions
            (probability > 0.5) that match the labels.
        """
        _, scores = self(inputs)
        return self.loss_by_scores(scores, img_labels)

    def loss_by_scores(self, scores: Tensor,
                       img_labels: Tensor) -> Dict[str, Tensor]:
        """The multi-label loss of class scores against image-level labels.

        Args:
            scores: Class logits (B, L, N).
            img_labels: Multi-hot labels (B, N).

        Returns:
            dict: As :meth:`loss`.

        Raises:
            ValueError: If ``img_labels`` does not have shape (B, N).
        """
        if img_labels.shape != (scores.shape[0], self.num_classes):
            raise ValueError(
                f'{type(self).__name__}.loss: img_labels must have shape '
                f'{(scores.shape[0], self.num_classes)}, got '
                f'{tuple(img_labels.shape)}')
        loss = sum(
            weight * self.loss_cls(scores[:, level], img_labels)
            for level, weight in enumerate(self.level_weights))
        with torch.no_grad():
            hits = (self.class_probs(scores) > 0.5) == img_labels.bool()
        return {
            self.loss_cls.loss_name: loss,
            'acc_cls': hits.float().mean() * 100
        }
