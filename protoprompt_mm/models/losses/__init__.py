"""Registered losses; importing this module registers them in ``MODELS``."""
from .prototype_contrastive_loss import PrototypeContrastiveLoss
from .region_consistency_loss import RegionConsistencyLoss

__all__ = ['PrototypeContrastiveLoss', 'RegionConsistencyLoss']
