"""PromptFusionHead: decode features prompted by class prototypes."""
import math
from typing import List, Optional, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from mmcv.cnn import ConvModule
from mmseg.models.decode_heads.decode_head import BaseDecodeHead
from mmseg.models.losses import accuracy
from mmseg.models.utils import resize
from mmseg.registry import MODELS
from mmseg.utils import ConfigType, SampleList
from torch import Tensor

from ..losses.prototype_aware_loss import PrototypeAwareLoss
from ..necks.prompted_features import PromptedFeatures, as_prompted_features


@MODELS.register_module()
class PromptFusionHead(BaseDecodeHead):
    """Segmentation head whose features are prompted by class prototypes.

    It takes the output of a ``PrototypeBank`` neck (a plain tuple or list
    with its layout works too; any other input, e.g. an FPN's levels, is a
    ``TypeError`` that says what to configure). After a 1x1 conv that
    fuses the selected backbone levels, two prompts act on the features:

    * cross-attention: every pixel queries the N*K prototypes and adds what
      it reads back (a residual whose output projection starts at zero);
    * spatial re-weighting: the per-class similarity maps (B, N, h, w) gate
      the channels, ``x * 2 * sigmoid(conv1x1(similarity))`` (identity at
      initialisation).

    A second 3x3 conv and the classifier follow. In eval mode ``forward``
    returns a plain logits Tensor, so slide inference and TTA work as usual.
    Losses in ``loss_decode`` that are a
    :class:`~protoprompt_mm.models.losses.PrototypeAwareLoss` (such as
    ``PrototypeContrastiveLoss``) receive the pixel embeddings and the
    prototypes, as that class documents; the others receive the logits.
    Both get the per-pixel weights of the ``sampler``, if one is set.

    Args:
        embed_dim: D of the neck's embeddings and prototypes.
        num_attn_heads: Heads of the cross-attention; must divide embed_dim.
        use_cross_attention: Switch for the cross-attention prompt.
        use_similarity_reweight: Switch for the similarity gating prompt.
        **kwargs: ``BaseDecodeHead`` arguments; ``in_channels`` and
            ``in_index`` refer to the backbone levels.
    """

    def __init__(self,
                 embed_dim: int,
                 num_attn_heads: int = 4,
                 use_cross_attention: bool = True,
                 use_similarity_reweight: bool = True,
                 **kwargs) -> None:
        super().__init__(**kwargs)
        if embed_dim % num_attn_heads:
            raise ValueError(f'PromptFusionHead: embed_dim ({embed_dim}) must '
                             f'be divisible by num_attn_heads '
                             f'({num_attn_heads})')
        self.embed_dim = embed_dim
        self.num_attn_heads = num_attn_heads
        self.use_cross_attention = use_cross_attention
        self.use_similarity_reweight = use_similarity_reweight

        conv_kwargs = dict(
            conv_cfg=self.conv_cfg, norm_cfg=self.norm_cfg,
            act_cfg=self.act_cfg)
        self.pre_conv = ConvModule(
            self.in_channels, self.channels, 1, **conv_kwargs)
        if use_cross_attention:
            self.query_proj = nn.Conv2d(self.channels, embed_dim, 1)
            self.key_proj = nn.Linear(embed_dim, embed_dim)
            self.value_proj = nn.Linear(embed_dim, embed_dim)
            self.attn_out = nn.Conv2d(embed_dim, self.channels, 1)
            nn.init.zeros_(self.attn_out.weight)
            nn.init.zeros_(self.attn_out.bias)
        if use_similarity_reweight:
            self.sim_gate = nn.Conv2d(self.num_classes, self.channels, 1)
            nn.init.zeros_(self.sim_gate.weight)
            nn.init.zeros_(self.sim_gate.bias)
        self.post_conv = ConvModule(
            self.channels, self.channels, 3, padding=1, **conv_kwargs)

    def cross_attend(self, x: Tensor, prototypes: Tensor) -> Tensor:
        """Pixels (queries) read from the prototypes (keys and values).

        Args:
            x: Features (B, C, h, w).
            prototypes: (N, K, D).

        Returns:
            Tensor: The residual to add to ``x``, (B, C, h, w).
        """
        b, _, h, w = x.shape
        heads, dim = self.num_attn_heads, self.embed_dim // self.num_attn_heads
        tokens = prototypes.reshape(-1, self.embed_dim).to(x.dtype)
        query = self.query_proj(x).flatten(2).transpose(1, 2)
        query = query.reshape(b, h * w, heads, dim).transpose(1, 2)
        key = self.key_proj(tokens).reshape(-1, heads, dim).transpose(0, 1)
        value = self.value_proj(tokens).reshape(-1, heads, dim).transpose(0, 1)
        out = F.scaled_dot_product_attention(
            query, key.expand(b, -1, -1, -1), value.expand(b, -1, -1, -1),
            scale=1.0 / math.sqrt(dim))
        out = out.transpose(2, 3).reshape(b, self.embed_dim, h, w)
        return self.attn_out(out)

    def forward(self, inputs: Sequence[Tensor]) -> Tensor:
        """Decode prompted features into logits.

        Args:
            inputs: ``PromptedFeatures`` from a ``PrototypeBank`` neck.

        Returns:
            Tensor: Segmentation logits (B, num_classes, h, w).

        Raises:
            TypeError: If ``inputs`` does not come from a ``PrototypeBank``.
        """
        prompted = as_prompted_features(inputs, type(self).__name__)
        x = self.pre_conv(self._transform_inputs(prompted.feats))
        if self.use_cross_attention:
            x = x + self.cross_attend(x, prompted.prototypes)
        if self.use_similarity_reweight:
            sim = resize(
                prompted.similarity.to(x.dtype),
                size=x.shape[2:],
                mode='bilinear',
                align_corners=self.align_corners)
            x = x * (2 * torch.sigmoid(self.sim_gate(sim)))
        return self.cls_seg(self.post_conv(x))

    def loss(self, inputs: Sequence[Tensor], batch_data_samples: SampleList,
             train_cfg: ConfigType) -> dict:
        """Forward and compute every loss of ``loss_decode``.

        Args:
            inputs: ``PromptedFeatures`` from a ``PrototypeBank`` neck.
            batch_data_samples: Data samples with ``gt_sem_seg``.
            train_cfg: Unused (mmseg's signature).

        Returns:
            dict[str, Tensor]: Losses by ``loss_name``, plus ``acc_seg``.
        """
        prompted: PromptedFeatures = as_prompted_features(
            inputs, type(self).__name__)
        seg_logits = self.forward(prompted)
        return self.loss_by_feat(
            seg_logits,
            batch_data_samples,
            embedding=prompted.embedding,
            prototypes=prompted.prototypes)

    def _loss_modules(self) -> List[nn.Module]:
        if isinstance(self.loss_decode, nn.ModuleList):
            return list(self.loss_decode)
        return [self.loss_decode]

    def loss_by_feat(self,
                     seg_logits: Tensor,
                     batch_data_samples: SampleList,
                     embedding: Optional[Tensor] = None,
                     prototypes: Optional[Tensor] = None) -> dict:
        """Compute the losses.

        Args:
            seg_logits: Logits (B, num_classes, h, w).
            batch_data_samples: Data samples with ``gt_sem_seg``.
            embedding: Pixel embeddings (B, D, h', w') for the
                :class:`PrototypeAwareLoss` losses.
            prototypes: Prototypes (N, K, D) for those losses.

        Returns:
            dict[str, Tensor]: Losses by ``loss_name``, plus ``acc_seg``.

        Raises:
            ValueError: If a ``PrototypeAwareLoss`` is configured but
                ``embedding`` or ``prototypes`` is missing.
        """
        seg_label = self._stack_batch_gt(batch_data_samples)
        seg_logits = resize(
            input=seg_logits,
            size=seg_label.shape[2:],
            mode='bilinear',
            align_corners=self.align_corners)
        seg_weight = None if self.sampler is None else self.sampler.sample(
            seg_logits, seg_label)
        seg_label = seg_label.squeeze(1)

        losses = dict()
        for loss_module in self._loss_modules():
            if isinstance(loss_module, PrototypeAwareLoss):
                if embedding is None or prototypes is None:
                    raise ValueError(
                        f'{type(loss_module).__name__} '
                        f'({loss_module.loss_name}) needs pixel embeddings '
                        'and prototypes; call '
                        'PromptFusionHead.loss with the output of a '
                        'PrototypeBank neck, or pass embedding= and '
                        'prototypes= to loss_by_feat')
                value = loss_module(
                    embedding,
                    seg_label,
                    prototypes=prototypes,
                    weight=seg_weight,
                    ignore_index=self.ignore_index,
                    seg_logits=seg_logits)
            else:
                value = loss_module(
                    seg_logits,
                    seg_label,
                    weight=seg_weight,
                    ignore_index=self.ignore_index)
            name = loss_module.loss_name
            losses[name] = losses[name] + value if name in losses else value
        losses['acc_seg'] = accuracy(
            seg_logits, seg_label, ignore_index=self.ignore_index)
        return losses
