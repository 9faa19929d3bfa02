"""Segmentors."""
from .protoprompt_segmentor import ProtoPromptSegmentor

__all__ = ['ProtoPromptSegmentor']
