"""PrototypeCAMHead: CAMs as pixel similarity to learned class prototypes."""
import math
from typing import List, Sequence, Tuple

import torch
import torch.nn as nn
from mmseg.registry import MODELS
from torch import Tensor

from ..necks.prompted_features import as_prompted_features
from .base_cam_head import BaseCAMHead


@MODELS.register_module()
class PrototypeCAMHead(BaseCAMHead):
    """Prototype CAMs computed by a ``PrototypeBank`` neck.

    The CAM of class n is the neck's similarity map of class n: the cosine
    similarity of each pixel embedding to the closest of the class's K
    sub-prototypes (B, N, h, w). The class score is an affine map, per
    class, of the pooled similarity: ``exp(log_scale_n) * pool(sim_n) +
    bias_n`` (a positive learnable scale turns cosine values in [-1, 1] into
    usable logits). The multi-label loss trains the embedding and the
    backbone through the similarities, and the prototypes too when they are
    a parameter: a ``PrototypeBank`` built with ``update_mode='learned'``
    (``CAMSegmentor`` refuses any other bank; the head itself only checks
    that the neck's number of classes matches). There is one CAM level (the
    neck already fuses the backbone levels into its embedding).

    Args:
        num_classes: N, number of classes (must match the neck).
        init_scale: Initial scale of the pooled similarities.
        topk_ratio: Fraction of the pixels pooled into a score (top-k mean;
            the similarity of a small tissue region is not diluted).
        **kwargs: Other :class:`BaseCAMHead` arguments (``loss_cls``,
            ``align_corners``, ``init_cfg``).
    """

    def __init__(self,
                 num_classes: int,
                 init_scale: float = 10.0,
                 topk_ratio: float = 0.25,
                 **kwargs) -> None:
        super().__init__(
            num_classes=num_classes,
            num_levels=1,
            topk_ratio=topk_ratio,
            **kwargs)
        if init_scale <= 0:
            raise ValueError(
                f'PrototypeCAMHead: init_scale must be > 0, got {init_scale}')
        self.log_scale = nn.Parameter(
            torch.full((num_classes, ), math.log(init_scale)))
        self.bias = nn.Parameter(torch.zeros(num_classes))

    def forward(self, inputs: Sequence[Tensor]) -> Tuple[List[Tensor], Tensor]:
        """Read the prototype CAMs and score them.

        Args:
            inputs: ``PromptedFeatures`` from a ``PrototypeBank`` neck.

        Returns:
            tuple: ``cams``, a one-element list with the similarity maps
            (B, N, h, w) in [-1, 1], and ``scores``, class logits (B, 1, N).

        Raises:
            TypeError: If the neck is not a ``PrototypeBank``.
            ValueError: If the neck's number of classes differs.
        """
        sim = as_prompted_features(inputs, type(self).__name__).similarity
        if sim.shape[1] != self.num_classes:
            raise ValueError(
                f'PrototypeCAMHead: num_classes={self.num_classes} but the '
                f'PrototypeBank neck has {sim.shape[1]} classes')
        scores = self.log_scale.exp() * self.pool(sim) + self.bias
        return [sim], scores.unsqueeze(1)
