"""TissueIoUMetric: per-class IoU next to mIoU, ignored pixels skipped."""
import pytest
import torch
from mmengine.structures import PixelData
from mmseg.registry import METRICS
from mmseg.structures import SegDataSample


def test_per_class_iou_is_returned():
    metric = METRICS.build(dict(type='TissueIoUMetric'))
    metric.dataset_meta = dict(classes=('A', 'B'))
    gt = torch.tensor([[[0, 0, 0, 1, 255]]])
    pred = torch.tensor([[[0, 0, 1, 1, 1]]])
    sample = SegDataSample()
    sample.gt_sem_seg = PixelData(data=gt)
    sample.pred_sem_seg = PixelData(data=pred)
    metric.process([], [sample.to_dict()])
    result = metric.evaluate(1)
    # A: inter 2, union 3; B: inter 1, union 2 (the 255 pixel is ignored).
    assert result['IoU.A'] == pytest.approx(66.67)
    assert result['IoU.B'] == pytest.approx(50.0)
    assert result['mIoU'] == pytest.approx(58.33)
