"""Stage-1 CAM model: heads, CAM helpers and CAMSegmentor."""
import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from mmengine.optim import OptimWrapper
from mmseg.registry import MODELS
from mmseg.structures import SegDataSample

from protoprompt_mm.models.decode_heads import CAMHead, PrototypeCAMHead
from protoprompt_mm.models.necks import PrototypeBank
from protoprompt_mm.models.utils import (fuse_cams, gated_argmax,
                                         labels_from_probs, normalize_cams)
from protoprompt_mm.utils import load_config

CAM_CFG = 'configs/_base_/models/cam_r18.py'
PROTOCAM_CFG = 'configs/_base_/models/protocam_r18.py'
N = 4


def tiny(path, **test_cfg):
    """The config's model with a small ResNet (fast on the CPU)."""
    model = copy.deepcopy(load_config(path).model)
    model.backbone.update(stem_channels=8, base_channels=8)
    if model.decode_head.type == 'MultiLevelPrototypeCAMHead':
        model.decode_head.update(in_channels=[8, 16, 32, 64])
    else:
        model.decode_head.update(in_channels=[32, 64])
    model.test_cfg.update(test_cfg)
    torch.manual_seed(0)
    return MODELS.build(model)


def make_batch(labels=((1, 0, 1, 0), (0, 1, 1, 1)), size=(32, 48),
               ori_shape=None, with_labels=True):
    """Images (uint8) and samples WITHOUT gt_sem_seg."""
    inputs, samples = [], []
    for flags in labels:
        inputs.append(torch.randint(0, 255, (3, *size), dtype=torch.uint8))
        meta = dict(img_shape=size, ori_shape=ori_shape or size,
                    img_path='img.png')
        if with_labels:
            meta['img_labels'] = np.array(flags, dtype=np.int64)
        samples.append(SegDataSample(metainfo=meta))
    return dict(inputs=inputs, data_samples=samples)


# --------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------


def test_normalize_cams_range_and_peak():
    cams = torch.tensor([[[[-1., 2.], [4., 0.]], [[-3., -1.], [-2., -5.]]]])
    out = normalize_cams(cams)
    assert out.min() >= 0 and out.max() <= 1
    assert out[0, 0].flatten().tolist() == pytest.approx(
        [0, 0.5, 1, 0], abs=1e-4)
    assert torch.all(out[0, 1] == 0)  # no positive evidence stays 0


def test_fuse_cams_weighted_mean_of_resized_levels():
    coarse = torch.tensor([[[[1., 0.], [0., 0.]]]])  # (1, 1, 2, 2)
    fine = torch.zeros(1, 1, 4, 4)
    fine[..., 3, 3] = 2.0
    fused = fuse_cams([coarse, fine], [3.0, 1.0], (4, 4))
    up = F.interpolate(coarse, size=(4, 4), mode='bilinear',
                       align_corners=False)
    expected = 3 * up + fine / 2
    expected = expected / expected.max()
    assert fused.shape == (1, 1, 4, 4)
    assert torch.allclose(fused, expected, atol=1e-4)
    with pytest.raises(ValueError, match='weights'):
        fuse_cams([coarse, fine], [1.0], (4, 4))


def test_labels_from_probs_keeps_top1_when_none_passes():
    probs = torch.tensor([[0.9, 0.1, 0.6, 0.2], [0.1, 0.3, 0.2, 0.4]])
    labels = labels_from_probs(probs, 0.5)
    assert labels.tolist() == [[True, False, True, False],
                               [False, False, False, True]]


def test_gated_argmax_never_picks_a_gated_class():
    cams = torch.zeros(4, 2, 2)
    cams[2, 0, 0] = 0.7
    out = gated_argmax(cams, torch.tensor([0, 1, 1, 0]))
    assert out.shape == (1, 2, 2)
    assert set(out.unique().tolist()) <= {1, 2}
    assert out[0, 0, 0] == 2


# --------------------------------------------------------------------------
# heads
# --------------------------------------------------------------------------


def test_cam_head_shapes_and_gap_scores():
    head = CAMHead(in_channels=[8, 16], in_index=[0, 1], num_classes=N,
                   level_weights=[1, 3])
    feats = (torch.randn(2, 8, 16, 12), torch.randn(2, 16, 8, 6))
    cams, scores = head(feats)
    assert [c.shape for c in cams] == [(2, N, 16, 12), (2, N, 8, 6)]
    assert scores.shape == (2, 2, N)
    assert torch.allclose(scores[:, 1], cams[1].mean(dim=(2, 3)), atol=1e-6)
    assert head.level_weights == [0.25, 0.75]
    assert head.fuse(cams, (32, 24)).shape == (2, N, 32, 24)
    probs = head.class_probs(scores)
    expected = 0.25 * scores[:, 0].sigmoid() + 0.75 * scores[:, 1].sigmoid()
    assert torch.allclose(probs, expected)


def test_cam_head_topk_pooling_and_errors():
    head = CAMHead(in_channels=4, in_index=0, num_classes=N, topk_ratio=0.25)
    feat = torch.randn(1, 4, 4, 4)
    cams, scores = head([feat])
    top4 = cams[0].flatten(2).topk(4, dim=2).values.mean(dim=2)
    assert torch.allclose(scores[:, 0], top4)
    with pytest.raises(ValueError, match='level 0'):
        head([torch.randn(1, 5, 4, 4)])
    with pytest.raises(ValueError, match='level_weights'):
        CAMHead(in_channels=[4, 4], in_index=[0, 1], num_classes=N,
                level_weights=[1.0])
    with pytest.raises(ValueError, match='topk_ratio'):
        CAMHead(in_channels=4, num_classes=N, topk_ratio=0.0)


def test_prototype_cam_head_reads_similarity_and_scores_it():
    torch.manual_seed(0)
    bank = PrototypeBank(in_channels=[8, 16], num_classes=N, embed_dim=8,
                         num_prototypes=3)
    head = PrototypeCAMHead(num_classes=N, init_scale=5.0, topk_ratio=0.5)
    prompted = bank([torch.randn(2, 8, 8, 8), torch.randn(2, 16, 4, 4)])
    cams, scores = head(prompted)
    assert len(cams) == 1 and cams[0].shape == (2, N, 8, 8)
    full = bank.similarity(prompted.embedding)  # (B, N, K, h, w)
    assert torch.allclose(cams[0], full.amax(dim=2))
    pooled = cams[0].flatten(2).topk(32, dim=2).values.mean(dim=2)
    assert scores.shape == (2, 1, N)
    assert torch.allclose(scores[:, 0], 5.0 * pooled, atol=1e-5)

    with pytest.raises(TypeError, match='PrototypeBank'):
        head(list(prompted.feats))
    with pytest.raises(ValueError, match='num_classes'):
        PrototypeCAMHead(num_classes=3)(prompted)


def test_prototype_cam_loss_trains_the_prototypes():
    bank = PrototypeBank(in_channels=[8], num_classes=N, embed_dim=8)
    head = PrototypeCAMHead(num_classes=N)
    losses = head.loss(bank([torch.randn(2, 8, 6, 6)]),
                       torch.tensor([[1., 0, 1, 0], [0, 1, 0, 0]]))
    assert set(losses) == {'loss_cls', 'acc_cls'}
    losses['loss_cls'].backward()
    assert bank.prototypes.grad is not None
    assert bank.prototypes.grad.abs().sum() > 0


# --------------------------------------------------------------------------
# CAMSegmentor
# --------------------------------------------------------------------------


@pytest.mark.parametrize('path', [CAM_CFG, PROTOCAM_CFG])
def test_training_uses_image_labels_only(path):
    model = tiny(path)
    data = make_batch()
    assert all('gt_sem_seg' not in s for s in data['data_samples'])
    before = [p.detach().clone() for p in model.parameters()]
    prototypes = model.neck.prototypes.detach().clone() \
        if model.with_neck else None
    wrapper = OptimWrapper(torch.optim.SGD(model.parameters(), lr=0.1))
    log_vars = model.train_step(data, wrapper)
    assert set(log_vars) >= {'loss', 'loss_cls', 'acc_cls'}
    assert torch.isfinite(log_vars['loss'])
    changed = [not torch.equal(b, p) for b, p in
               zip(before, model.parameters())]
    assert any(changed)
    if prototypes is not None:
        assert not torch.equal(prototypes, model.neck.prototypes)


def test_missing_img_labels_is_a_key_error():
    model = tiny(CAM_CFG)
    data = model.data_preprocessor(make_batch(with_labels=False), True)
    with pytest.raises(KeyError, match='img_labels'):
        model.loss(**data)


def test_wrong_img_labels_are_rejected():
    model = tiny(CAM_CFG)
    data = model.data_preprocessor(make_batch(labels=[(1, 0, 1)]), True)
    with pytest.raises(ValueError, match='img_labels'):
        model.loss(**data)


@pytest.mark.parametrize('path', [CAM_CFG, PROTOCAM_CFG])
def test_predict_at_original_size(path):
    model = tiny(path).eval()
    # the image was resized from 45x70 to 32x48 by the pipeline
    data = make_batch(size=(32, 48), ori_shape=(45, 70))
    with torch.no_grad():
        results = model.test_step(data)
        tensor_out = model(torch.randn(2, 3, 40, 56), mode='tensor')
    assert tensor_out.shape == (2, N, 40, 56)
    for result in results:
        cams = result.seg_logits.data
        assert cams.shape == (N, 45, 70)
        assert result.pred_sem_seg.data.shape == (1, 45, 70)
        assert cams.min() >= 0 and cams.max() <= 1
        kept = torch.from_numpy(result.metainfo['cam_labels']).bool()
        assert torch.all(cams[~kept] == 0)
        assert set(result.pred_sem_seg.data.unique().tolist()) <= set(
            kept.nonzero().flatten().tolist())


def crafted_head_output(batch):
    """Class 0 on the left, class 1 on the right, class 2 everywhere (weak);
    scores predict classes 0 and 2 (the labels below say 0 and 1). Both
    levels of the tiny CAMHead get the same maps."""
    cam = torch.zeros(batch, N, 4, 4)
    cam[:, 0, :, :2] = 3.0
    cam[:, 1, :, 2:] = 3.0
    cam[:, 2] = 1.0
    scores = torch.tensor([5.0, -5.0, 5.0, -5.0]).repeat(batch, 2, 1)
    return [cam, cam], scores


def test_gating_by_predicted_vs_ground_truth_labels(monkeypatch):
    logged = []
    monkeypatch.setattr(
        'protoprompt_mm.models.segmentors.cam_segmentor.print_log',
        lambda msg, **kwargs: logged.append(msg))
    model = tiny(CAM_CFG).eval()
    monkeypatch.setattr(model.decode_head, 'forward',
                        lambda feats: crafted_head_output(len(feats[0])))
    data = make_batch(labels=[(1, 1, 0, 0)], size=(16, 16))

    with torch.no_grad():
        predicted = model.test_step(data)[0]
        model.test_step(data)
    assert len(logged) == 1 and 'predicted' in logged[0]
    assert predicted.metainfo['cam_labels'].tolist() == [1, 0, 1, 0]
    cams = predicted.seg_logits.data
    assert torch.all(cams[1] == 0) and cams[2].max() > 0
    assert set(predicted.pred_sem_seg.data.unique().tolist()) == {0, 2}

    model.test_cfg['use_gt_labels'] = True
    with torch.no_grad():
        gt = model.test_step(data)[0]
    assert gt.metainfo['cam_labels'].tolist() == [1, 1, 0, 0]
    assert torch.all(gt.seg_logits.data[2] == 0)
    pred = gt.pred_sem_seg.data[0]
    assert set(pred.unique().tolist()) == {0, 1}
    assert torch.all(pred[:, :4] == 0) and torch.all(pred[:, -4:] == 1)
    assert len(logged) == 1

    with pytest.raises(KeyError, match='img_labels'):
        model.test_step(make_batch(labels=[(1, 1, 0, 0)], size=(16, 16),
                                   with_labels=False))


def test_no_class_passing_the_threshold_keeps_the_top_one(monkeypatch):
    model = tiny(CAM_CFG, cls_thresh=0.5).eval()
    cams, _ = crafted_head_output(1)
    scores = torch.tensor([[[-4.0, -3.0, -1.0, -6.0]]]).repeat(1, 2, 1)
    monkeypatch.setattr(model.decode_head, 'forward',
                        lambda feats: (cams, scores))
    with torch.no_grad():
        result = model.test_step(make_batch(labels=[(1, 1, 0, 0)],
                                            size=(16, 16)))[0]
    assert result.metainfo['cam_labels'].tolist() == [0, 0, 1, 0]
    assert torch.all(result.pred_sem_seg.data == 2)


def test_flip_tta_is_flip_equivariant_and_scales_work():
    model = tiny(CAM_CFG, flip=True, scales=(1.0, 0.75)).eval()
    x = torch.randn(1, 3, 32, 40)
    with torch.no_grad():
        cams, probs = model.inference(x)
        cams_flipped, probs_flipped = model.inference(x.flip(3))
    assert cams.shape == (1, N, 32, 40)
    assert torch.allclose(cams_flipped, cams.flip(3), atol=1e-5)
    assert torch.allclose(probs_flipped, probs, atol=1e-5)
    assert cams.min() >= 0 and cams.max() <= 1


def test_bad_configs_are_refused():
    with pytest.raises(KeyError, match='cls_tresh'):
        tiny(CAM_CFG, cls_tresh=0.4)
    with pytest.raises(ValueError, match='whole'):
        tiny(CAM_CFG, mode='slide')
    cfg = copy.deepcopy(load_config(CAM_CFG).model)
    cfg.neck = dict(type='PrototypeBank', in_channels=[64, 128, 256, 512],
                    num_classes=N, update_mode='momentum')
    cfg.decode_head = dict(type='PrototypeCAMHead', num_classes=N)
    with pytest.raises(ValueError, match="update_mode='learned'"):
        MODELS.build(cfg)
