"""Registered losses; importing this module registers them in ``MODELS``."""
from .base_loss import REDUCTIONS, BaseLoss
from .mask_guided_contrastive_loss import MaskGuidedContrastiveLoss
from .prototype_aware_loss import PrototypeAwareLoss
from .prototype_contrastive_loss import PrototypeContrastiveLoss
from .region_consistency_loss import RegionConsistencyLoss

__all__ = [
    'BaseLoss', 'REDUCTIONS', 'PrototypeAwareLoss',
    'MaskGuidedContrastiveLoss', 'PrototypeContrastiveLoss',
    'RegionConsistencyLoss'
]
