"""LUAD-HistoSeg: lung adenocarcinoma patches with image-level labels."""
from mmseg.registry import DATASETS

from .histo_wsss_dataset import HistoWSSSDataset


@DATASETS.register_module()
class LUADHistoSegDataset(HistoWSSSDataset):
    """LUAD-HistoSeg (tumour epithelium, necrosis, lymphocytes,
    tumour-associated stroma).

    Training names carry space-separated flags in class order, e.g.
    ``…-[1 0 0 1].png``; mask index 4 is background. See
    :class:`HistoWSSSDataset` for the layout and the arguments.
    """
    METAINFO = dict(
        classes=('TE', 'NEC', 'LYM', 'TAS'),
        palette=[[205, 51, 51], [0, 255, 0], [65, 105, 225], [255, 165, 0]])
