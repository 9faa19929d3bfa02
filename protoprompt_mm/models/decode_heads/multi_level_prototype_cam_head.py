"""MultiLevelPrototypeCAMHead: PBIP's stage-1 prototype CAMs at every level."""
from typing import Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F
from mmseg.registry import MODELS
from torch import Tensor

from ..utils import MERGE_MODES, PrototypeStateMixin, merge_sub_prototypes
from .base_cam_head import BaseCAMHead


@MODELS.register_module()
class MultiLevelPrototypeCAMHead(PrototypeStateMixin, BaseCAMHead):
    """CAMs as scaled cosine similarity to class sub-prototypes, per level.

    The head of PBIP's stage 1 (Tang et al., CVPR 2025). It holds one shared
    set of K sub-prototypes per class, ``prototypes`` (N, K, D). Every
    selected backbone level l has its own small MLP (D -> ``hidden_ratio`` *
    D -> C_l, ReLU) that projects the shared prototypes into the level's
    channels, and a learnable scale s_l (PBIP: 1 / 0.07). The sub-prototype
    CAM of (n, k) at level l is ``s_l * cos(x_l, P_l(p_{n,k}))`` for every
    pixel feature x_l (B, N, K, h_l, w_l); pooling it (global average for
    ``topk_ratio=1``) gives a sub-prototype score. Scores and CAMs of a
    class's K sub-prototypes are merged with ``merge_train`` in training
    (PBIP: mean) and ``merge_test`` in eval mode (PBIP: the softmax-weighted
    sum its code calls 'max'; see
    :func:`~protoprompt_mm.models.utils.merge_sub_prototypes`).

    The prototypes come from an image bank (``PrototypeInitHook``: cosine
    k-means of the single-label training images embedded by :meth:`embed`),
    or from an ``init_prototypes`` file, and are then frozen (a buffer, as in
    PBIP) or learned (a parameter, ``learn_prototypes=True``); either way
    they are saved in checkpoints.

    With ``loss_contrast`` (e.g. ``MaskGuidedContrastiveLoss``), PBIP's
    mask-guided contrastive loss is added at level ``contrast_level``: for
    every present class of an image, the sub-prototypes whose score beats
    the class's merged score (at least the best one) are selected, and the
    loss receives the level's features, sub-prototype CAMs and projected
    prototypes.

    Args:
        in_channels: Channels C_l of the selected levels.
        num_classes: N.
        num_prototypes: K, sub-prototypes per class.
        prototype_dim: D; default the channels of level ``embed_index``, the
            space :meth:`embed` maps images to.
        in_index: Indices of the selected levels in the backbone's tuple
            (default: all, in order).
        embed_index: Position (in ``in_index``) of the level whose pooled
            features embed image-bank images; its channels must equal D.
        hidden_ratio: Hidden width of the projection MLPs, as a fraction of
            D (PBIP: 0.5).
        init_scale: Initial CAM scale of every level (PBIP: 1 / 0.07).
        learn_prototypes: Learn the prototypes instead of freezing them.
        center_prototypes: Subtract the mean of all N x K prototypes before
            the projections. Image-bank features of a backbone without
            pretraining are nearly parallel (cosine 0.94-0.999 between
            classes on the synthetic data), which starves the MLPs of the
            differences; PBIP's MedCLIP features need no centring (False).
        merge_train: Sub-prototype merge in training (``MERGE_MODES``).
        merge_test: Sub-prototype merge in eval mode.
        loss_contrast: Optional config of a loss called as ``loss(feats (B,
            C, h, w), sub_cams (B, N, K, h, w), prototypes (N, K, C),
            selected (B, N, K) bool)``; its ``loss_name`` is its key.
        contrast_level: Position (in ``in_index``) of the contrastive level.
        init_prototypes: Optional ``.pth`` prototype file (format of
            ``tools/build_prototype_bank.py``) loaded by :meth:`init_weights`.
        **kwargs: Other :class:`BaseCAMHead` arguments (``level_weights``:
            per-level BCE weights, PBIP 0 / 0.1 / 1 / 1; ``fuse_weights``:
            per-level CAM fusion weights, PBIP 0 / 0.3 / 0.3 / 0.4;
            ``topk_ratio``, ``loss_cls``, ``align_corners``, ``init_cfg``).
    """

    def __init__(self,
                 in_channels: Sequence[int],
                 num_classes: int,
                 num_prototypes: int = 3,
                 prototype_dim: Optional[int] = None,
                 in_index: Optional[Sequence[int]] = None,
                 embed_index: int = -1,
                 hidden_ratio: float = 0.5,
                 init_scale: float = 1 / 0.07,
                 learn_prototypes: bool = False,
                 center_prototypes: bool = True,
                 merge_train: str = 'mean',
                 merge_test: str = 'softmax',
                 loss_contrast: Optional[dict] = None,
                 contrast_level: int = -1,
                 init_prototypes: Optional[str] = None,
                 **kwargs) -> None:
        in_channels = list(in_channels)
        in_index = list(range(len(in_channels))) if in_index is None \
            else list(in_index)
        if len(in_index) != len(in_channels):
            raise ValueError(
                f'MultiLevelPrototypeCAMHead: in_channels {in_channels} and '
                f'in_index {in_index} must have the same length')
        super().__init__(
            num_classes=num_classes, num_levels=len(in_index), **kwargs)
        for mode in (merge_train, merge_test):
            if mode not in MERGE_MODES:
                raise ValueError(
                    'MultiLevelPrototypeCAMHead: merge modes must be one of '
                    f'{MERGE_MODES}, got {mode!r}')
        for key, pos in (('embed_index', embed_index),
                         ('contrast_level', contrast_level)):
            if not -len(in_index) <= pos < len(in_index):
                raise ValueError(
                    f'MultiLevelPrototypeCAMHead: {key}={pos} is out of '
                    f'range for {len(in_index)} levels')
        if num_prototypes < 1 or init_scale <= 0 or hidden_ratio <= 0:
            raise ValueError(
                'MultiLevelPrototypeCAMHead: num_prototypes >= 1, '
                'init_scale > 0 and hidden_ratio > 0 are required, got '
                f'{num_prototypes}, {init_scale}, {hidden_ratio}')
        self.in_channels = in_channels
        self.in_index = in_index
        self.embed_index = embed_index
        self.num_prototypes = num_prototypes
        self.embed_dim = prototype_dim or in_channels[embed_index]
        self.merge_train = merge_train
        self.merge_test = merge_test
        self.contrast_level = contrast_level
        self.init_prototypes = init_prototypes
        self.learn_prototypes = learn_prototypes
        self.center_prototypes = center_prototypes

        self.register_prototypes(num_classes, num_prototypes, self.embed_dim,
                                 learn_prototypes)
        hidden = max(1, int(self.embed_dim * hidden_ratio))
        self.projections = nn.ModuleList([
            nn.Sequential(
                nn.Linear(self.embed_dim, hidden), nn.ReLU(inplace=True),
                nn.Linear(hidden, channels)) for channels in in_channels
        ])
        self.scales = nn.Parameter(torch.full((len(in_index), ), init_scale))
        self.loss_contrast = None if loss_contrast is None \
            else MODELS.build(loss_contrast)

    # ------------------------------------------------------------ prototypes
    def embed(self, inputs: Sequence[Tensor]) -> Tensor:
        """Map images' backbone features into the prototype space.

        Used by the image-bank initialisation (``PrototypeInitHook``), which
        pools these maps over each image's tissue pixels.

        Args:
            inputs: Backbone levels.

        Returns:
            Tensor: L2-normalised features (B, D, h, w) of level
            ``embed_index``.

        Raises:
            ValueError: If that level does not have D channels.
        """
        feat = inputs[self.in_index[self.embed_index]]
        if feat.shape[1] != self.embed_dim:
            raise ValueError(
                f'MultiLevelPrototypeCAMHead.embed: level '
                f'{self.in_index[self.embed_index]} has {feat.shape[1]} '
                f'channels, the prototypes D={self.embed_dim}; image-bank '
                'prototypes need prototype_dim equal to that level\'s '
                'channels (or an init_prototypes file / a frozen encoder)')
        return F.normalize(feat, dim=1)

    def projected_prototypes(self) -> List[Tensor]:
        """The shared prototypes projected into every level's channels.

        With ``center_prototypes``, the MLPs see the prototypes minus their
        mean over all N x K, re-normalised.

        Returns:
            list[Tensor]: Per level, (N, K, C_l).
        """
        flat = self.prototypes.reshape(-1, self.embed_dim)
        if self.center_prototypes:
            flat = F.normalize(flat - flat.mean(dim=0), dim=1)
        shape = self.prototypes.shape[:2]
        return [proj(flat).view(*shape, -1) for proj in self.projections]

    # --------------------------------------------------------------- forward
    def sub_prototype_cams(
            self, inputs: Sequence[Tensor]) -> Tuple[List[Tensor],
                                                     List[Tensor]]:
        """Raw CAMs of every sub-prototype at every level.

        Args:
            inputs: Backbone levels, each (B, C, H_i, W_i).

        Returns:
            tuple: CAMs per level (B, N, K, h_l, w_l) (scale x cosine) and
            the projected prototypes per level (N, K, C_l).

        Raises:
            ValueError: If a level is missing or has the wrong channels.
        """
        prototypes = self.projected_prototypes()
        cams = []
        for pos, (index, channels) in enumerate(
                zip(self.in_index, self.in_channels)):
            feat = self.level_feature(inputs, index, channels)
            # fp32 even under autocast: the cosine times ~14 in half types.
            with torch.autocast(device_type=feat.device.type, enabled=False):
                cos = torch.einsum('bchw,nkc->bnkhw',
                                   F.normalize(feat.float(), dim=1),
                                   F.normalize(prototypes[pos].float(),
                                               dim=-1))
            cams.append(self.scales[pos] * cos)
        return cams, prototypes

    def sub_prototype_scores(self, cams: Tensor) -> Tensor:
        """Pool sub-prototype CAMs into scores.

        Args:
            cams: (B, N, K, h, w).

        Returns:
            Tensor: (B, N, K).
        """
        batch, num_cls, num_k = cams.shape[:3]
        return self.pool(cams.flatten(1, 2)).view(batch, num_cls, num_k)

    def merged_scores(self, sub_cams: Sequence[Tensor],
                      mode: str) -> Tuple[List[Tensor], Tensor]:
        """Sub-prototype scores of every level and their merge.

        Args:
            sub_cams: Per level, (B, N, K, h_l, w_l).
            mode: A merge mode (``MERGE_MODES``).

        Returns:
            tuple: Per-level sub-prototype scores (B, N, K) and the merged
            class logits (B, L, N).
        """
        sub_scores = [self.sub_prototype_scores(cam) for cam in sub_cams]
        scores = torch.stack(
            [merge_sub_prototypes(score, mode) for score in sub_scores], dim=1)
        return sub_scores, scores

    def forward(self, inputs: Sequence[Tensor]) -> Tuple[List[Tensor], Tensor]:
        """Class CAMs and scores, sub-prototypes merged.

        Args:
            inputs: Backbone levels.

        Returns:
            tuple: ``cams``, a list of L raw CAMs (B, N, h_l, w_l), and
            ``scores``, class logits (B, L, N); merged with ``merge_train``
            in training mode and ``merge_test`` in eval mode.
        """
        sub_cams, _ = self.sub_prototype_cams(inputs)
        mode = self.merge_train if self.training else self.merge_test
        cams = [merge_sub_prototypes(cam, mode) for cam in sub_cams]
        return cams, self.merged_scores(sub_cams, mode)[1]

    def loss(self, inputs: Sequence[Tensor],
             img_labels: Tensor) -> Dict[str, Tensor]:
        """Level-weighted BCE, plus the contrastive loss when configured.

        Args:
            inputs: Backbone levels.
            img_labels: Multi-hot labels (B, N).

        Returns:
            dict: The classification loss and ``acc_cls`` (see
            :meth:`BaseCAMHead.loss_by_scores`), and the contrastive loss
            under its ``loss_name``.
        """
        sub_cams, prototypes = self.sub_prototype_cams(inputs)
        sub_scores, scores = self.merged_scores(sub_cams, self.merge_train)
        losses = self.loss_by_scores(scores, img_labels)
        if self.loss_contrast is not None:
            level = self.contrast_level
            selected = self.select_sub_prototypes(sub_scores[level],
                                                  scores[:, level],
                                                  img_labels)
            losses[self.loss_contrast.loss_name] = self.loss_contrast(
                inputs[self.in_index[level]], sub_cams[level],
                prototypes[level], selected)
        return losses

    @staticmethod
    def select_sub_prototypes(sub_scores: Tensor, scores: Tensor,
                              img_labels: Tensor) -> Tensor:
        """The sub-prototypes the contrastive loss uses (PBIP's rule).

        A sub-prototype of a present class is selected when its score
        exceeds the class's merged score; the best one always is.

        Args:
            sub_scores: (B, N, K).
            scores: Merged scores (B, N).
            img_labels: Multi-hot labels (B, N).

        Returns:
            Tensor: Bool (B, N, K).
        """
        best = F.one_hot(sub_scores.argmax(dim=2),
                         sub_scores.shape[2]).bool()
        above = sub_scores > scores.unsqueeze(2)
        return (above | best) & img_labels.bool().unsqueeze(2)

