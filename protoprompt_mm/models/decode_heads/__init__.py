"""Decode heads."""
from .base_cam_head import BaseCAMHead
from .cam_head import CAMHead
from .prompt_fusion_head import PromptFusionHead
from .prototype_cam_head import PrototypeCAMHead

__all__ = ['PromptFusionHead']
__all__ += ['BaseCAMHead', 'CAMHead', 'PrototypeCAMHead']
