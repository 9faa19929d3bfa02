"""Nearest-neighbour resizing of label and weight maps."""
from typing import Sequence

import torch.nn.functional as F
from torch import Tensor


def resize_nearest(maps: Tensor, size: Sequence[int]) -> Tensor:
    """Resize (B, H, W) label or weight maps by nearest neighbour.

    Nearest sampling never mixes two labels, so a resized label map holds
    only labels of the input (``ignore_index`` included).

    Args:
        maps: Maps of shape (B, H, W), any dtype (integer labels are exact:
            they are resized as float32).
        size: Output (h, w).

    Returns:
        Tensor: Maps (B, h, w) of the input dtype; ``maps`` itself when it
        already has that size.

    Raises:
        ValueError: If ``maps`` is not 3-D.
    """
    if maps.dim() != 3:
        raise ValueError('resize_nearest: expected (B, H, W) maps, got shape '
                         f'{tuple(maps.shape)}')
    if tuple(maps.shape[1:]) == tuple(size):
        return maps
    resized = F.interpolate(
        maps[:, None].float(), size=tuple(size), mode='nearest')
    return resized[:, 0].to(maps.dtype)
