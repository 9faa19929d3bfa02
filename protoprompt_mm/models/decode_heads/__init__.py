"""Decode heads."""
from .base_cam_head import BaseCAMHead
from .cam_head import CAMHead
from .multi_level_prototype_cam_head import MultiLevelPrototypeCAMHead
from .prompt_fusion_head import PromptFusionHead
from .prototype_cam_head import PrototypeCAMHead

__all__ = [
    'PromptFusionHead', 'BaseCAMHead', 'CAMHead', 'PrototypeCAMHead',
    'MultiLevelPrototypeCAMHead'
]
