"""Segmentors."""
from .cam_segmentor import CAMSegmentor
from .protoprompt_segmentor import ProtoPromptSegmentor

__all__ = ['ProtoPromptSegmentor', 'CAMSegmentor']
