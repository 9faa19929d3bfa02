"""PrototypeBank: class prototypes and the image prompts they produce."""
from typing import List, Optional, Sequence, Union

import torch
import torch.nn as nn
import torch.nn.functional as F
from mmcv.cnn import ConvModule
from mmengine.dist import all_reduce
from mmengine.model import BaseModule
from mmseg.models.utils import resize
from mmseg.registry import MODELS
from torch import Tensor

from ..utils.nearest_resize import resize_nearest
from ..utils.prototype_state import PrototypeStateMixin
from .prompted_features import PromptedFeatures

UPDATE_MODES = ('learned', 'momentum')


@MODELS.register_module()
class PrototypeBank(PrototypeStateMixin, BaseModule):
    """Neck that holds K prototypes per class and prompts features with them.

    Every selected backbone level is projected to a D-dim space, the levels
    are resized to the finest selected one and summed into one embedding
    map, and each pixel is compared with all prototypes by cosine similarity.
    The sub-prototypes of a class are merged by taking their maximum.

    Prototypes are state that survives a checkpoint: a parameter in
    ``'learned'`` mode (optimised through the losses), a buffer in
    ``'momentum'`` mode (an EMA of confident pseudo-labelled pixel embeddings,
    each assigned to its nearest sub-prototype of its class; see
    :meth:`momentum_update`, called by ``ProtoPromptSegmentor``).

    Args:
        in_channels: Channels of every backbone level the neck receives.
        num_classes: N, number of classes.
        embed_dim: D, the embedding / prototype dimension.
        num_prototypes: K, sub-prototypes per class.
        in_index: Levels that form the embedding (default: all).
        update_mode: ``'learned'`` or ``'momentum'``.
        momentum: EMA weight kept by the old prototype in momentum mode.
        min_similarity: In momentum mode, pixels whose similarity to their
            class's nearest sub-prototype is below this are not used.
        init_prototypes: Optional ``.pth`` prototype file loaded by
            :meth:`init_weights` (e.g. from ``tools/build_prototype_bank.py``).
        norm_cfg: Norm layer of the level projections.
        act_cfg: Activation of the level projections.
        align_corners: ``align_corners`` of the level resizing.
        init_cfg: mmengine init config.
    """

    def __init__(self,
                 in_channels: Sequence[int],
                 num_classes: int,
                 embed_dim: int = 128,
                 num_prototypes: int = 4,
                 in_index: Optional[Sequence[int]] = None,
                 update_mode: str = 'learned',
                 momentum: float = 0.99,
                 min_similarity: float = -1.0,
                 init_prototypes: Optional[str] = None,
                 norm_cfg: Optional[dict] = dict(type='BN'),
                 act_cfg: Optional[dict] = dict(type='ReLU'),
                 align_corners: bool = False,
                 init_cfg: Optional[Union[dict, List[dict]]] = None) -> None:
        super().__init__(init_cfg=init_cfg)
        if update_mode not in UPDATE_MODES:
            raise ValueError(f'PrototypeBank: update_mode must be one of '
                             f'{UPDATE_MODES}, got {update_mode!r}')
        if not 0.0 <= momentum < 1.0:
            raise ValueError(
                f'PrototypeBank: momentum must be in [0, 1), got {momentum}')
        self.in_channels = list(in_channels)
        self.in_index = list(range(len(self.in_channels))) \
            if in_index is None else list(in_index)
        for i in self.in_index:
            if not -len(self.in_channels) <= i < len(self.in_channels):
                raise ValueError(f'PrototypeBank: in_index {i} is out of '
                                 f'range for {len(self.in_channels)} levels')
        self.num_classes = num_classes
        self.num_prototypes = num_prototypes
        self.embed_dim = embed_dim
        self.update_mode = update_mode
        self.momentum = momentum
        self.min_similarity = min_similarity
        self.init_prototypes = init_prototypes
        self.align_corners = align_corners

        self.level_projs = nn.ModuleList([
            ConvModule(
                self.in_channels[i],
                embed_dim,
                1,
                norm_cfg=norm_cfg,
                act_cfg=act_cfg) for i in self.in_index
        ])
        self.embed_proj = nn.Conv2d(embed_dim, embed_dim, 1)

        self.register_prototypes(num_classes, num_prototypes, embed_dim,
                                 learned=update_mode == 'learned')
        self.register_buffer('num_updates', torch.zeros((), dtype=torch.long))

    def normalized_prototypes(self) -> Tensor:
        """Unit-length prototypes (N, K, D)."""
        return F.normalize(self.prototypes, dim=-1)

    def embed(self, inputs: Sequence[Tensor]) -> Tensor:
        """Project the selected levels into one embedding map.

        Args:
            inputs: Backbone levels, each (B, C_l, H_l, W_l).

        Returns:
            Tensor: L2-normalised embeddings (B, D, h, w) at the resolution
            of the finest selected level.
        """
        if len(inputs) != len(self.in_channels):
            raise ValueError(
                f'PrototypeBank: got {len(inputs)} feature levels, expected '
                f'{len(self.in_channels)} (in_channels={self.in_channels})')
        levels = [inputs[i] for i in self.in_index]
        size = max((lvl.shape[2:] for lvl in levels),
                   key=lambda s: s[0] * s[1])
        fused = 0
        for proj, lvl in zip(self.level_projs, levels):
            fused = fused + resize(
                proj(lvl),
                size=size,
                mode='bilinear',
                align_corners=self.align_corners)
        return F.normalize(self.embed_proj(fused), dim=1)

    def similarity(self,
                   embedding: Tensor,
                   prototypes: Optional[Tensor] = None) -> Tensor:
        """Similarity of each pixel to every sub-prototype.

        Args:
            embedding: Normalised embeddings (B, D, h, w).
            prototypes: Normalised prototypes (N, K, D), when the caller
                already has them; else :meth:`normalized_prototypes`.

        Returns:
            Tensor: Cosine similarities (B, N, K, h, w).
        """
        if prototypes is None:
            prototypes = self.normalized_prototypes()
        return torch.einsum('bdhw,nkd->bnkhw', embedding,
                            prototypes.to(embedding))

    def forward(self, inputs: Sequence[Tensor]) -> PromptedFeatures:
        """Embed the features and compute the prototype prompts.

        Args:
            inputs: Backbone levels, each (B, C_l, H_l, W_l).

        Returns:
            PromptedFeatures: ``(*inputs, embedding, similarity, prototypes)``
            with embedding (B, D, h, w), class similarity (B, N, h, w) (max
            over the K sub-prototypes) and prototypes (N, K, D).
        """
        embedding = self.embed(inputs)
        prototypes = self.normalized_prototypes()
        similarity = self.similarity(embedding, prototypes).amax(dim=2)
        return PromptedFeatures(inputs, embedding, similarity, prototypes)

    @torch.no_grad()
    def momentum_update(self,
                        embedding: Tensor,
                        seg_label: Tensor,
                        ignore_index: int = 255) -> None:
        """EMA-update the prototypes from pseudo-labelled pixel embeddings.

        Each valid pixel (label in [0, N), not ``ignore_index``, similarity to
        its class at least ``min_similarity``) is assigned to the nearest
        sub-prototype of its class. Per sub-prototype, the pixel sums and
        counts are all-reduced over DDP ranks, so every rank applies the same
        update: that of the concatenated global batch. A sub-prototype that
        received pixels becomes ``normalize(m * old + (1 - m) * mean)``, with
        ``mean`` the normalised mean of its pixels; the others are unchanged.

        Args:
            embedding: Normalised embeddings (B, D, h, w).
            seg_label: Pseudo-labels (B, H, W) or (B, 1, H, W); resized to
                (h, w) by nearest neighbour.
            ignore_index: Label value to skip.
        """
        if self.update_mode != 'momentum':
            raise RuntimeError(
                'PrototypeBank.momentum_update called, but '
                f"update_mode={self.update_mode!r} (needs 'momentum')")
        num_cls, num_k, dim = self.prototypes.shape
        if seg_label.dim() == 4:
            seg_label = seg_label[:, 0]
        label = resize_nearest(seg_label, embedding.shape[2:]).long().flatten()
        emb = embedding.detach().permute(0, 2, 3, 1).reshape(-1, dim).float()
        valid = (label >= 0) & (label < num_cls) & (label != ignore_index)
        emb, label = emb[valid], label[valid]

        protos = self.normalized_prototypes().detach().float()
        with torch.autocast(device_type=emb.device.type, enabled=False):
            sim = (emb @ protos.reshape(-1, dim).t()).view(-1, num_cls, num_k)
        own = sim[torch.arange(label.numel(), device=label.device), label]
        best_sim, best_k = own.max(dim=1)
        keep = best_sim >= self.min_similarity
        slot = (label * num_k + best_k)[keep]

        sums = emb.new_zeros(num_cls * num_k, dim).index_add_(
            0, slot, emb[keep])
        counts = emb.new_zeros(num_cls * num_k).index_add_(
            0, slot, emb.new_ones(slot.numel()))
        all_reduce(sums, op='sum')
        all_reduce(counts, op='sum')

        hit = counts > 0
        mean = F.normalize(sums / counts.clamp(min=1).unsqueeze(1), dim=1)
        blended = F.normalize(
            self.momentum * protos.reshape(-1, dim) +
            (1 - self.momentum) * mean,
            dim=1).to(self.prototypes.dtype)
        new = torch.where(hit.unsqueeze(1), blended,
                          self.prototypes.reshape(-1, dim))
        # Replace the buffer instead of writing in place: the old tensor may
        # still be saved by autograd for this step's backward pass.
        self.prototypes = new.view(num_cls, num_k, dim)
        self.num_updates += 1
