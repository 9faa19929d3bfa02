"""Decode heads."""
from .prompt_fusion_head import PromptFusionHead

__all__ = ['PromptFusionHead']
