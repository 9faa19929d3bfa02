"""Registered losses; importing this module registers them in ``MODELS``."""
from .mask_guided_contrastive_loss import MaskGuidedContrastiveLoss
from .prototype_contrastive_loss import PrototypeContrastiveLoss
from .region_consistency_loss import RegionConsistencyLoss

__all__ = [
    'MaskGuidedContrastiveLoss', 'PrototypeContrastiveLoss',
    'RegionConsistencyLoss'
]
