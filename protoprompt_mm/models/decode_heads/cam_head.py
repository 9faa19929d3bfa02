"""CAMHead: plain class activation maps from 1x1 conv classifiers."""
from typing import List, Sequence, Tuple, Union

import torch
import torch.nn as nn
from mmseg.registry import MODELS
from torch import Tensor

from .base_cam_head import BaseCAMHead


@MODELS.register_module()
class CAMHead(BaseCAMHead):
    """Class activation maps of one or several feature levels.

    Each selected level l gets its own bias-free 1x1 conv classifier, whose
    output is the level's CAMs (B, N, h_l, w_l); pooling them gives the
    level's class scores. With global average pooling (``topk_ratio=1``)
    this is the classic GAP-then-fc classifier, whose fc weights applied per
    pixel are the CAMs.

    Args:
        in_channels: Channels of each selected level (an int for one level).
        in_index: Indices of the selected levels in the feature tuple.
        **kwargs: :class:`BaseCAMHead` arguments (``num_classes``,
            ``level_weights``, ``topk_ratio``, ``loss_cls``, ...).
    """

    def __init__(self,
                 in_channels: Union[int, Sequence[int]],
                 in_index: Union[int, Sequence[int]] = -1,
                 **kwargs) -> None:
        in_channels = [in_channels] if isinstance(in_channels, int) \
            else list(in_channels)
        in_index = [in_index] if isinstance(in_index, int) else list(in_index)
        if len(in_channels) != len(in_index):
            raise ValueError(
                f'CAMHead: in_channels {in_channels} and in_index {in_index} '
                'must have the same length')
        super().__init__(num_levels=len(in_index), **kwargs)
        self.in_channels = in_channels
        self.in_index = in_index
        self.classifiers = nn.ModuleList([
            nn.Conv2d(channels, self.num_classes, 1, bias=False)
            for channels in in_channels
        ])

    def forward(self, inputs: Sequence[Tensor]) -> Tuple[List[Tensor], Tensor]:
        """Compute the CAMs and class scores of every selected level.

        Args:
            inputs: Feature levels, each (B, C, H_i, W_i) (a
                ``PromptedFeatures`` tuple works too: its backbone levels
                come first).

        Returns:
            tuple: ``cams``, a list of L raw CAMs (B, N, h_l, w_l), and
            ``scores``, class logits (B, L, N).

        Raises:
            ValueError: If a selected level is missing or has the wrong
                number of channels.
        """
        cams = [
            classifier(self.level_feature(inputs, index, channels))
            for index, channels, classifier in zip(
                self.in_index, self.in_channels, self.classifiers)
        ]
        scores = torch.stack([self.pool(cam) for cam in cams], dim=1)
        return cams, scores
