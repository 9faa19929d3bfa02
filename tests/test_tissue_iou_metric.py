"""TissueIoUMetric: both protocols, mDice and FwIoU against hand-computed
confusion matrices; per-class IoU; ignored pixels skipped."""
import os.path as osp

import numpy as np
import pytest
import torch
from mmengine.config import Config
from mmengine.structures import PixelData
from mmseg.evaluation import IoUMetric
from mmseg.registry import METRICS
from mmseg.structures import SegDataSample
from PIL import Image

REPO_ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
BOTH = dict(type='TissueIoUMetric',
            iou_metrics=['mIoU', 'mDice', 'FwIoU'],
            extra_protocols=['background_as_error'])


def sample(gt, pred, img_path='img.png'):
    data = SegDataSample(metainfo=dict(img_path=img_path))
    data.gt_sem_seg = PixelData(data=torch.tensor([gt]))
    data.pred_sem_seg = PixelData(data=torch.tensor([pred]))
    return data.to_dict()


def evaluate(cfg, samples, classes=('A', 'B')):
    metric = METRICS.build(cfg)
    metric.dataset_meta = dict(classes=classes)
    metric.process([], samples)
    return metric.evaluate(len(samples))


# Classes A = 0, B = 1, background 2, ignore 255; 7 is no class.
IMAGES = [
    sample(gt=[[0, 0, 0, 1, 1, 2, 2, 2, 255]],
           pred=[[0, 0, 1, 1, 2, 0, 1, 2, 0]]),
    sample(gt=[[1, 1, 2, 0, 0]], pred=[[1, 7, 0, 0, 0]]),
]
# Summed confusion matrix (rows GT, columns prediction; the 255 pixel is
# not counted):
#
#     GT \ pred   A  B  bg  other
#     A           4  1  0   0      (5 pixels)
#     B           0  2  1   1      (4 pixels)
#     bg          2  1  1   0
#
# ignore_background (bg row dropped):
#   A: TP 4, predicted 4, union 4 + 5 - 4 = 5: IoU 80.00, Dice 8/9 = 88.89
#   B: TP 2, predicted 3, union 3 + 4 - 2 = 5: IoU 40.00, Dice 4/7 = 57.14
#   mIoU 60.00, mDice 73.02, FwIoU 5/9 * 80 + 4/9 * 40 = 62.22
# background_as_error (bg row's A / B predictions are false positives; its
# bg prediction is correct and scores no class):
#   A: TP 4, predicted 6, union 7: IoU 4/7 = 57.14, Dice 8/11 = 72.73
#   B: TP 2, predicted 4, union 6: IoU 1/3 = 33.33, Dice 4/8 = 50.00
#   mIoU 45.24, mDice 61.36, FwIoU 5/9 * 4/7 + 4/9 * 1/3 = 46.56
# Both: aAcc 6/9 = 66.67, mAcc (4/5 + 2/4) / 2 = 65.00 (recall over the GT
# tissue pixels, which false positives on background do not change).
IGNORE_BACKGROUND = {
    'aAcc': 66.67,
    'mAcc': 65.0,
    'mIoU': 60.0,
    'mDice': 73.02,
    'FwIoU': 62.22,
    'IoU.A': 80.0,
    'IoU.B': 40.0
}
BACKGROUND_AS_ERROR = {
    'aAcc': 66.67,
    'mAcc': 65.0,
    'mIoU': 45.24,
    'mDice': 61.36,
    'FwIoU': 46.56,
    'IoU.A': 57.14,
    'IoU.B': 33.33
}


def test_both_protocols_match_the_hand_computed_confusion_matrix():
    metric = METRICS.build(BOTH)
    metric.dataset_meta = dict(classes=('A', 'B'))
    metric.process([], IMAGES)
    assert sum(metric.results).tolist() == [[4, 1, 0, 0], [0, 2, 1, 1],
                                            [2, 1, 1, 0]]
    result = metric.evaluate(2)
    expected = dict(IGNORE_BACKGROUND)
    expected.update({
        f'background_as_error/{key}': value
        for key, value in BACKGROUND_AS_ERROR.items()
    })
    assert result.keys() == expected.keys()
    for key, value in expected.items():
        assert result[key] == pytest.approx(value), key


def test_protocol_picks_the_plain_keys():
    result = evaluate(
        dict(type='TissueIoUMetric',
             protocol='background_as_error',
             iou_metrics=['mIoU', 'mDice', 'FwIoU']), IMAGES)
    assert result == pytest.approx(BACKGROUND_AS_ERROR)


def test_ignore_background_equals_mmseg_on_masks_with_background_ignored():
    rng = np.random.default_rng(0)
    gt = rng.integers(0, 4, (2, 16, 16))  # 3 classes, background 3
    gt[0, :2] = 255
    pred = rng.integers(0, 4, (2, 16, 16))
    samples = [sample(g.tolist(), p.tolist()) for g, p in zip(gt, pred)]
    ignored = [
        sample(np.where(g == 3, 255, g).tolist(), p.tolist())
        for g, p in zip(gt, pred)
    ]
    classes = ('A', 'B', 'C')
    ours = evaluate(BOTH, samples, classes)
    mmseg = evaluate(dict(type='IoUMetric', iou_metrics=['mIoU', 'mDice']),
                     ignored, classes)
    for key in ('aAcc', 'mIoU', 'mAcc', 'mDice'):
        assert ours[key] == pytest.approx(mmseg[key])
    # Background mapped to ignore by the loader: the protocols agree.
    assert evaluate(BOTH, ignored, classes)['background_as_error/mIoU'] == \
        pytest.approx(mmseg['mIoU'])


def test_per_class_iou_is_returned():
    gt = [[0, 0, 0, 1, 255]]
    pred = [[0, 0, 1, 1, 1]]
    result = evaluate(dict(type='TissueIoUMetric'), [sample(gt, pred)])
    # A: inter 2, union 3, recall 2/3; B: inter 1, union 2, recall 1/1
    # (the 255 pixel is ignored); 3 of 4 pixels right.
    assert result == pytest.approx({
        'aAcc': 75.0,
        'mIoU': 58.33,
        'mAcc': 83.33,
        'IoU.A': 66.67,
        'IoU.B': 50.0
    })


def test_fw_iou_leaves_out_classes_without_ground_truth():
    # A: 2 GT pixels, both right; B: no GT pixel, predicted on the
    # background pixel. ignore_background: A IoU 100, B NaN (in neither
    # GT nor prediction), mIoU and FwIoU 100. background_as_error: B IoU 0
    # (union 1), mIoU 50, FwIoU still 100 (B has no GT pixel).
    result = evaluate(BOTH, [sample([[0, 0, 2]], [[0, 0, 1]])])
    assert np.isnan(result['IoU.B'])
    assert result['mIoU'] == 100.0 and result['FwIoU'] == 100.0
    assert result['background_as_error/IoU.B'] == 0.0
    assert result['background_as_error/mIoU'] == 50.0
    assert result['background_as_error/FwIoU'] == 100.0


def test_bad_ground_truth_names_the_image():
    with pytest.raises(ValueError, match=r'patch_7\.png.*got \[5\]'):
        evaluate(BOTH, [sample([[0, 5]], [[0, 0]], 'data/patch_7.png')])


@pytest.mark.parametrize('kwargs', [
    dict(protocol='tpro'),
    dict(extra_protocols=['ignore_background']),
])
def test_unknown_or_repeated_protocols_are_rejected(kwargs):
    with pytest.raises(ValueError, match='distinct names'):
        METRICS.build(dict(type='TissueIoUMetric', **kwargs))


def test_background_index_must_be_no_class():
    with pytest.raises(ValueError, match='background_index'):
        evaluate(dict(type='TissueIoUMetric', background_index=1),
                 [sample([[0]], [[0]])])


def test_dataset_bases_evaluate_both_protocols_and_train_on_ignore():
    cfg = Config.fromfile(
        osp.join(REPO_ROOT, 'configs', '_base_', 'datasets', 'bcss_wsss.py'))
    assert cfg.test_evaluator == dict(BOTH)
    assert cfg.val_evaluator == cfg.test_evaluator

    def loader(pipeline):
        return next(t for t in pipeline if t.type == 'LoadHistoAnnotations')

    # Val / test keep GT background (background_as_error needs it); stage 2
    # trains on pseudo masks whose background stays ignored.
    assert loader(cfg.test_pipeline).keep_background is True
    assert loader(cfg.train_pipeline_pseudo).get('keep_background') is None
    assert cfg.val_dataloader.dataset.pipeline == cfg.test_pipeline
    assert isinstance(METRICS.build(cfg.test_evaluator), IoUMetric)


def test_output_dir_gets_the_predictions(tmp_path):
    # tools/test.py --out: mmseg's process still writes the PNGs.
    cfg = dict(BOTH, output_dir=str(tmp_path))
    result = evaluate(cfg, [IMAGES[1]])
    png = np.array(Image.open(tmp_path / 'img.png'))
    assert png.ravel().tolist() == [1, 7, 0, 0, 0]
    # A: 2 GT pixels, both right, and a false positive on background.
    assert result['background_as_error/IoU.A'] == pytest.approx(66.67)
