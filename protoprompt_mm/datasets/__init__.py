"""Histology WSSS datasets and their transforms."""
from . import transforms  # noqa: F401
from .bcss_wsss_dataset import BCSSWSSSDataset
from .histo_wsss_dataset import HistoWSSSDataset
from .image_labels import labels_from_mask, parse_image_labels
from .luad_histoseg_dataset import LUADHistoSegDataset

__all__ = [
    'HistoWSSSDataset', 'BCSSWSSSDataset', 'LUADHistoSegDataset',
    'parse_image_labels', 'labels_from_mask'
]
