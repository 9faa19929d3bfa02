"""Registered components; importing this module registers them."""
from .cam_to_pseudo_label import (THRESH_MODES, CAMToPseudoLabel,
                                  cams_to_pseudo_label)
from .load_cam_pseudo_label import LoadCAMPseudoLabel
from .load_histo_annotations import LoadHistoAnnotations
from .load_image_level_labels import LoadImageLevelLabels
from .random_rotate90 import RandomRotate90
from .stain_transforms import (FixedStainShift, MacenkoStainNormalize,
                               RandomHEDJitter)

__all__ = [
    'CAMToPseudoLabel', 'cams_to_pseudo_label', 'FixedStainShift',
    'LoadCAMPseudoLabel', 'LoadHistoAnnotations', 'LoadImageLevelLabels',
    'MacenkoStainNormalize', 'RandomHEDJitter', 'RandomRotate90',
    'THRESH_MODES'
]
