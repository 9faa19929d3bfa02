"""Histology WSSS datasets and their transforms."""
from . import transforms  # noqa: F401
from .bcss_wsss_dataset import BCSSWSSSDataset
from .file_checks import check_data_list
from .histo_seg_dataset import HistoSegDataset
from .histo_wsss_dataset import HistoWSSSDataset
from .image_labels import (labels_from_mask, parse_image_labels,
                           read_label_manifest)
from .luad_histoseg_dataset import LUADHistoSegDataset
from .manifest_dataset import HistoManifestDataset
from .prototype_image_bank import (build_image_bank_dataloader,
                                   image_bank_batch_uses, image_bank_classes,
                                   select_single_label_images)

__all__ = [
    'HistoSegDataset', 'HistoWSSSDataset', 'BCSSWSSSDataset',
    'LUADHistoSegDataset', 'HistoManifestDataset', 'parse_image_labels',
    'labels_from_mask', 'read_label_manifest', 'check_data_list',
    'build_image_bank_dataloader', 'image_bank_batch_uses',
    'image_bank_classes', 'select_single_label_images'
]
