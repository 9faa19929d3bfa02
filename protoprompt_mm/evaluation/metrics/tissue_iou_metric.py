"""TissueIoUMetric: mIoU, mDice and FwIoU of the tissue classes under the
two evaluation protocols of the histology WSSS literature."""
import logging
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from mmengine.logging import MMLogger, print_log
from mmseg.evaluation import IoUMetric
from mmseg.registry import METRICS
from prettytable import PrettyTable
from torch import Tensor

from ...datasets.transforms.load_histo_annotations import check_label_ids

PROTOCOLS = ('ignore_background', 'background_as_error')


@METRICS.register_module()
class TissueIoUMetric(IoUMetric):
    """mmseg's ``IoUMetric`` for tissue classes, under either protocol of
    the literature, with per-class IoU and frequency-weighted IoU.

    Ground truth holds the ``N`` tissue classes ``0..N-1``, background
    (``background_index``) and ignored pixels (``ignore_index``; they count
    for nothing). Every image adds to one confusion matrix (GT rows:
    classes, background; prediction columns: classes, background, any other
    value), from which each protocol takes the areas of the ``N`` tissue
    classes; the scores (``mIoU``, ``mDice``, ... via mmseg's
    ``total_area_to_metrics``) are always means over the tissue classes:

    - ``'ignore_background'`` (WSSS-Tissue / MLPS): GT background pixels
      are skipped, as if ignored.
    - ``'background_as_error'`` (TPRO / PBIP, their (N+1)x(N+1) confusion
      matrix): a tissue prediction on GT background is a false positive of
      that class; predicting ``background_index`` there is correct (and
      scores no class).

    Under both, a GT tissue pixel predicted as background or any non-class
    value is a miss of its class. With masks loaded by
    ``LoadHistoAnnotations(keep_background=False)`` background is already
    ``ignore_index`` and both protocols give the same numbers (a warning
    says so). Neither the stage-1 ``CAMSegmentor`` (arg-max over the kept
    tissue CAMs) nor the ``N``-class stage-2 heads predict background: under
    ``'background_as_error'`` all of their GT-background pixels are errors.

    Keys of ``protocol``, as mmseg names them: ``aAcc`` and ``mAcc`` (both
    over GT tissue pixels, so equal under both protocols), ``mIoU``,
    ``mDice`` / ``mFscore`` / ... as ``iou_metrics`` asks, ``FwIoU`` (the
    tissue classes' IoU weighted by their share of GT tissue pixels, classes
    without GT pixels left out) and ``IoU.<class>`` for every class (in
    percent, unlike mmseg, which only logs them). The same keys of every
    protocol in ``extra_protocols`` start with ``'<protocol>/'``, e.g.
    ``background_as_error/mIoU``. The log gets the confusion matrix and a
    per-class table per protocol.

    Args:
        protocol (str): Protocol of the plain keys (the ones checkpoint
            selection and ``tools/test.py`` read). Defaults to
            ``'ignore_background'``.
        extra_protocols (Sequence[str]): Protocols also reported, under
            prefixed keys. Defaults to ().
        background_index (int, optional): Background value of ground truth
            and predictions; None: ``N``, the number of classes (the mask
            convention of ``LoadHistoAnnotations``). Defaults to None.
        iou_metrics (Sequence[str]): mmseg's ``'mIoU'``, ``'mDice'``,
            ``'mFscore'`` and ``'FwIoU'``. Defaults to ``('mIoU', )``.
        **kwargs: Other arguments of ``mmseg.evaluation.IoUMetric``
            (``ignore_index``, ``nan_to_num``, ``output_dir``, ...).
    """

    def __init__(self,
                 protocol: str = 'ignore_background',
                 extra_protocols: Sequence[str] = (),
                 background_index: Optional[int] = None,
                 iou_metrics: Sequence[str] = ('mIoU', ),
                 **kwargs) -> None:
        if isinstance(iou_metrics, str):
            iou_metrics = [iou_metrics]
        self.fw_iou = 'FwIoU' in iou_metrics
        super().__init__(
            iou_metrics=[name for name in iou_metrics if name != 'FwIoU'],
            **kwargs)
        protocols = (protocol, *extra_protocols)
        unknown = [name for name in protocols if name not in PROTOCOLS]
        if unknown or len(set(protocols)) != len(protocols):
            raise ValueError(
                f'TissueIoUMetric: protocol and extra_protocols must be '
                f'distinct names out of {list(PROTOCOLS)}, got '
                f'protocol={protocol!r}, extra_protocols='
                f'{list(extra_protocols)}')
        self.protocol = protocol
        self.protocols = protocols
        self._background_index = background_index

    @property
    def background_index(self) -> int:
        """Background value: the argument, else the number of classes.

        Raises:
            ValueError: If it is a class id, outside uint8 or equals
                ``ignore_index``.
        """
        num_classes = len(self.dataset_meta['classes'])
        index = num_classes if self._background_index is None \
            else self._background_index
        check_label_ids(num_classes, background_index=index)
        if index == self.ignore_index:
            raise ValueError(f'TissueIoUMetric: background_index and '
                             f'ignore_index must differ, both are {index}')
        return index

    def process(self, data_batch: dict, data_samples: Sequence[dict]) -> None:
        """Check every ground truth, then mmseg's ``process`` (which stores
        :meth:`intersect_and_union` of each image and writes the
        ``output_dir`` PNGs).

        Args:
            data_batch (dict): A batch from the dataloader.
            data_samples (Sequence[dict]): The model's outputs.

        Raises:
            ValueError: If a ground truth holds a value that is no class,
                background or ``ignore_index``, naming its image.
        """
        if not self.format_only:
            num_classes = len(self.dataset_meta['classes'])
            allowed = torch.tensor([
                *range(num_classes), self.background_index, self.ignore_index
            ])
            for sample in data_samples:
                values = sample['gt_sem_seg']['data'].unique().cpu()
                bad = values[~torch.isin(values, allowed)]
                if bad.numel():
                    raise ValueError(
                        f'{sample.get("img_path", "an image")}: ground-truth '
                        f'values must be classes 0..{num_classes - 1}, '
                        f'background {self.background_index} or ignore '
                        f'{self.ignore_index}; got {bad.tolist()} (a dataset '
                        f'with another background_index needs the same '
                        f'background_index here)')
        super().process(data_batch, data_samples)

    def intersect_and_union(self, pred_label: Tensor, label: Tensor,
                            num_classes: int, ignore_index: int) -> Tensor:
        """Confusion matrix of one image: mmseg's per-image step of
        ``process``, from which :meth:`compute_metrics` takes the
        intersections and unions of every protocol.

        Args:
            pred_label (Tensor): Predicted (H, W) map.
            label (Tensor): Ground-truth (H, W) map.
            num_classes (int): Number of tissue classes N.
            ignore_index (int): Ground-truth value that is not counted.

        Returns:
            Tensor: int64 (N + 1, N + 2) pixel counts, on the CPU; rows: GT
            classes 0..N-1, background; columns: predicted classes 0..N-1,
            background, any other value.
        """
        valid = label != ignore_index
        label, pred_label = label[valid].long(), pred_label[valid].long()
        rows = torch.where(label == self.background_index, num_classes, label)
        cols = torch.full_like(pred_label, num_classes + 1)
        cols[pred_label == self.background_index] = num_classes
        is_class = (pred_label >= 0) & (pred_label < num_classes)
        cols[is_class] = pred_label[is_class]
        cells = (num_classes + 1) * (num_classes + 2)
        return torch.bincount(rows * (num_classes + 2) + cols,
                              minlength=cells).view(num_classes + 1,
                                                    num_classes + 2).cpu()

    @staticmethod
    def protocol_areas(confusion: Tensor,
                       protocol: str) -> Tuple[Tensor, Tensor, Tensor, Tensor]:
        """Areas of the tissue classes in a confusion matrix.

        Args:
            confusion (Tensor): (N + 1, N + 2) counts as returned by
                :meth:`intersect_and_union`.
            protocol (str): One of ``PROTOCOLS``.

        Returns:
            tuple[Tensor]: float64 (N,) intersection, union, predicted and
            GT areas, as mmseg's ``IoUMetric.intersect_and_union``.
        """
        num_classes = confusion.shape[0] - 1
        confusion = confusion.double()
        intersect = confusion.diagonal()[:num_classes]
        area_label = confusion[:num_classes].sum(1)
        # Which GT rows count a tissue prediction against its class.
        gt_rows = confusion if protocol == 'background_as_error' \
            else confusion[:num_classes]
        area_pred = gt_rows[:, :num_classes].sum(0)
        return (intersect, area_pred + area_label - intersect, area_pred,
                area_label)

    def compute_metrics(self, results: List[Tensor]) -> Dict[str, float]:
        """Scores of every reported protocol from the summed confusion
        matrices.

        Args:
            results (list[Tensor]): One confusion matrix per image.

        Returns:
            dict[str, float]: The keys of the class docstring, percentages.
        """
        if self.format_only:
            return super().compute_metrics(results)
        logger: MMLogger = MMLogger.get_current_instance()
        confusion = sum(results)
        self.log_confusion(confusion, logger)
        if 'background_as_error' in self.protocols and not confusion[-1].any():
            print_log(
                f'TissueIoUMetric: no ground-truth pixel is background '
                f'({self.background_index}), so background_as_error equals '
                f'ignore_background; load val / test masks with '
                f'LoadHistoAnnotations(keep_background=True)',
                logger=logger,
                level=logging.WARNING)
        metrics = {}
        for protocol in self.protocols:
            prefix = '' if protocol == self.protocol else f'{protocol}/'
            print_log(f'protocol {protocol}:', logger)
            areas = self.protocol_areas(confusion, protocol)
            # mmseg's summary (aAcc, mIoU, mAcc, ...) and per-class table.
            scores = super().compute_metrics([areas])
            scores.update(self.class_scores(*areas))
            metrics.update({
                prefix + key: value
                for key, value in scores.items()
            })
        return metrics

    def class_scores(self, intersect: Tensor, union: Tensor, area_pred: Tensor,
                     area_label: Tensor) -> Dict[str, float]:
        """``IoU.<class>`` and, if asked for, ``FwIoU`` of summed areas.

        Args:
            intersect (Tensor): (N,) intersection areas.
            union (Tensor): (N,) union areas.
            area_pred (Tensor): (N,) predicted areas.
            area_label (Tensor): (N,) GT areas.

        Returns:
            dict[str, float]: Percentages, rounded as mmseg's; NaN for a
            class in neither prediction nor GT (or ``nan_to_num``).
        """
        iou = self.total_area_to_metrics(intersect, union, area_pred,
                                         area_label, ['mIoU'],
                                         self.nan_to_num)['IoU']
        scores = {
            f'IoU.{name}': float(np.round(value * 100, 2))
            for name, value in zip(self.dataset_meta['classes'], iou)
        }
        if self.fw_iou:
            freq = (area_label / area_label.sum()).numpy()
            present = freq > 0
            scores['FwIoU'] = float(
                np.round((freq[present] * iou[present]).sum() *
                         100, 2)) if present.any() else float('nan')
        return scores

    def log_confusion(self, confusion: Tensor, logger: MMLogger) -> None:
        """Log the summed confusion matrix (rows GT, columns prediction)."""
        classes = list(self.dataset_meta['classes'])
        table = PrettyTable()
        table.field_names = ['GT \\ pred', *classes, 'background', 'other']
        for name, row in zip([*classes, 'background'], confusion.tolist()):
            table.add_row([name, *row])
        print_log('confusion matrix (pixels):\n' + table.get_string(),
                  logger=logger)
