"""BCSS-WSSS: breast cancer patches with image-level labels."""
from mmseg.registry import DATASETS

from .histo_wsss_dataset import HistoWSSSDataset


@DATASETS.register_module()
class BCSSWSSSDataset(HistoWSSSDataset):
    """BCSS-WSSS (tumour, stroma, lymphocytes, necrosis).

    Training names carry contiguous flags in class order, e.g.
    ``TCGA-A1-A0SK-DX1_xmin45749_ymin25055_MPP-0.2500+1[1101].png``; mask
    index 4 is background. See :class:`HistoWSSSDataset` for the layout and
    the arguments.
    """
    METAINFO = dict(
        classes=('TUM', 'STR', 'LYM', 'NEC'),
        palette=[[205, 51, 51], [255, 165, 0], [65, 105, 225], [0, 160, 80]])
