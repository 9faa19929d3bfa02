"""PBIP's stage 1: MultiLevelPrototypeCAMHead and MaskGuidedContrastiveLoss."""
import copy
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from mmengine.optim import OptimWrapper
from mmseg.registry import MODELS
from mmseg.structures import SegDataSample

from protoprompt_mm.apis import build_prototype_bank
from protoprompt_mm.models.decode_heads import MultiLevelPrototypeCAMHead
from protoprompt_mm.models.losses import MaskGuidedContrastiveLoss
from protoprompt_mm.models.utils import fuse_cams, merge_sub_prototypes
from protoprompt_mm.utils import load_config

N, K = 4, 3
CHANNELS = [8, 16, 32, 64]


def tiny_head(**kwargs) -> MultiLevelPrototypeCAMHead:
    torch.manual_seed(0)
    cfg = dict(
        type='MultiLevelPrototypeCAMHead',
        in_channels=CHANNELS,
        num_classes=N,
        num_prototypes=K,
        level_weights=[0.0, 0.1, 1.0, 1.0],
        fuse_weights=[0.0, 0.3, 0.3, 0.4])
    cfg.update(kwargs)
    return MODELS.build(cfg)


def feats(batch=2, size=8):
    torch.manual_seed(1)
    return [
        torch.randn(batch, c, size // 2**min(i, 2), size // 2**min(i, 2),
                    requires_grad=True) for i, c in enumerate(CHANNELS)
    ]


def test_merge_sub_prototypes_modes():
    values = torch.tensor([[[1.0, 2.0, 4.0]]])
    assert merge_sub_prototypes(values, 'mean').item() == pytest.approx(7 / 3)
    assert merge_sub_prototypes(values, 'max').item() == 4.0
    weights = values.softmax(dim=2)
    assert merge_sub_prototypes(values, 'softmax').item() == pytest.approx(
        (weights * values).sum().item())
    with pytest.raises(ValueError, match='merge mode'):
        merge_sub_prototypes(values, 'median')


def test_cam_is_scale_times_cosine_to_projected_prototypes():
    head = tiny_head()
    inputs = feats()
    sub_cams, protos = head.sub_prototype_cams(inputs)
    assert [p.shape for p in protos] == [(N, K, c) for c in CHANNELS]
    for level, (cam, proto) in enumerate(zip(sub_cams, protos)):
        x = inputs[level]
        assert cam.shape == (2, N, K, *x.shape[2:])
        expected = head.scales[level] * torch.einsum(
            'bchw,nkc->bnkhw', F.normalize(x, dim=1),
            F.normalize(proto, dim=-1))
        assert torch.allclose(cam, expected, atol=1e-5)
    assert head.scales.detach() == pytest.approx(
        torch.full((4, ), 1 / 0.07))
    # A pixel equal to a projected prototype reaches the full scale.
    inputs[3] = protos[3][2, 1].detach().view(1, -1, 1, 1).expand(
        2, -1, 2, 2).contiguous()
    cam = head.sub_prototype_cams(inputs)[0][3]
    assert cam[0, 2, 1].max().item() == pytest.approx(1 / 0.07, rel=1e-4)


def test_training_merges_by_mean_and_eval_by_softmax():
    head = tiny_head()
    inputs = feats()
    sub_cams, _ = head.sub_prototype_cams(inputs)
    sub_scores = head.sub_prototype_scores(sub_cams[3])
    head.train()
    cams, scores = head(inputs)
    assert torch.allclose(scores[:, 3], sub_scores.mean(dim=2), atol=1e-5)
    assert torch.allclose(cams[3], sub_cams[3].mean(dim=2), atol=1e-5)
    head.eval()
    cams, scores = head(inputs)
    soft = (sub_scores.softmax(dim=2) * sub_scores).sum(dim=2)
    assert torch.allclose(scores[:, 3], soft, atol=1e-5)
    assert scores.shape == (2, 4, N)


def test_fusion_and_loss_use_their_own_level_weights():
    head = tiny_head()
    inputs = feats()
    cams, _ = head(inputs)
    fused = head.fuse(cams, (8, 8))
    assert torch.allclose(
        fused, fuse_cams(cams, [0.0, 0.3, 0.3, 0.4], (8, 8)), atol=1e-6)
    assert head.level_weights == pytest.approx([0, 0.1 / 2.1, 1 / 2.1,
                                                1 / 2.1])
    labels = torch.tensor([[1., 0, 1, 0], [0, 1, 0, 0]])
    losses = head.loss(inputs, labels)
    losses['loss_cls'].backward()
    # Level 0 has BCE weight 0: its projection gets a zero gradient, which
    # keeps DDP from finding an unused parameter.
    grad0 = head.projections[0][2].weight.grad
    assert grad0 is not None and grad0.abs().sum() == 0
    assert head.projections[3][2].weight.grad.abs().sum() > 0


def test_frozen_prototypes_are_a_buffer_and_learned_ones_a_parameter():
    frozen = tiny_head()
    assert 'prototypes' in dict(frozen.named_buffers())
    assert 'prototypes' not in dict(frozen.named_parameters())
    learned = tiny_head(learn_prototypes=True)
    assert isinstance(learned.prototypes, torch.nn.Parameter)
    learned.loss(feats(), torch.tensor([[1., 0, 0, 1], [0, 1, 1, 0]]))[
        'loss_cls'].backward()
    assert learned.prototypes.grad.abs().sum() > 0
    # Both survive a checkpoint round trip.
    for head in (frozen, learned):
        head.load_prototypes(torch.randn(N, K, 64))
        fresh = tiny_head(learn_prototypes=head.learn_prototypes)
        fresh.load_state_dict(copy.deepcopy(head.state_dict()))
        assert torch.equal(fresh.prototypes, head.prototypes)
    with pytest.raises(ValueError, match=r'expected shape'):
        frozen.load_prototypes(torch.randn(N, K + 1, 64))


def test_embed_needs_prototype_dim_equal_to_the_embed_level():
    head = tiny_head(prototype_dim=32)
    with pytest.raises(ValueError, match='image-bank'):
        head.embed(feats())
    assert tiny_head().embed(feats()).shape == (2, 64, 2, 2)


def test_sub_prototype_selection_follows_pbip():
    sub = torch.tensor([[[3., 1., 2.], [5., 5., 5.]]])  # (1, 2, 3)
    merged = sub.mean(dim=2)
    labels = torch.tensor([[1., 1.]])
    selected = MultiLevelPrototypeCAMHead.select_sub_prototypes(
        sub, merged, labels)
    # Above the mean (2): only k=0; all equal: the best one (argmax) only.
    assert selected.tolist() == [[[True, False, False],
                                  [True, False, False]]]
    none = MultiLevelPrototypeCAMHead.select_sub_prototypes(
        sub, merged, torch.tensor([[0., 1.]]))
    assert not none[0, 0].any()


def test_mask_guided_contrastive_loss_by_hand():
    # One image, 2 classes x 1 sub-prototype, 2 channels, 1 x 2 pixels.
    feats = torch.tensor([[[[1.0, 0.0]], [[0.0, 1.0]]]])  # pixel 0 = e1
    cams = torch.tensor([[[[[4.0, 1.0]]], [[[0.0, 0.0]]]]])  # (1,2,1,1,2)
    protos = torch.tensor([[[1.0, 0.0]], [[0.0, 1.0]]])
    selected = torch.tensor([[[True], [False]]])
    tau = 0.5
    loss = MaskGuidedContrastiveLoss(
        temperature=tau, alpha=0.5, loss_weight=1.0)(feats, cams, protos,
                                                     selected)
    # act = [1, 0.25]: fg = pixel 0 only (weight 1) -> e1; bg weight =
    # (1 - 0.25) on pixel 1 -> e2.
    fg_logits = np.array([1.0, 0.0]) / tau
    l_fg = -fg_logits[0] + np.log(np.exp(fg_logits).sum())
    bg_logits = np.array([0.0, 1.0]) / tau
    l_bg = -bg_logits[1] + np.log(np.exp(bg_logits[1]) +
                                  np.exp(bg_logits[0]))
    assert loss.item() == pytest.approx(l_fg + l_bg, rel=1e-5)
    fg_only = MaskGuidedContrastiveLoss(
        temperature=tau, alpha=0.5, bg_weight=0.0,
        loss_weight=1.0)(feats, cams, protos, selected)
    assert fg_only.item() == pytest.approx(l_fg, rel=1e-5)


def test_mask_guided_contrastive_loss_grads_and_empty_selection():
    head = tiny_head()
    inputs = feats()
    sub_cams, protos = head.sub_prototype_cams(inputs)
    loss_fn = MaskGuidedContrastiveLoss()
    selected = torch.zeros(2, N, K, dtype=torch.bool)
    empty = loss_fn(inputs[3], sub_cams[3], protos[3], selected)
    assert empty.item() == 0 and empty.requires_grad
    selected[0, 1, 2] = selected[1, 3, 0] = True
    cams = sub_cams[3].detach().requires_grad_()
    loss = loss_fn(inputs[3], cams, protos[3], selected)
    assert loss.item() > 0 and math.isfinite(loss.item())
    loss.backward()
    # Through the features, the CAM weights and the prototype projection.
    assert inputs[3].grad.abs().sum() > 0
    assert cams.grad.abs().sum() > 0
    assert head.projections[3][2].weight.grad.abs().sum() > 0
    per_pair = MaskGuidedContrastiveLoss(reduction='none')(
        inputs[3], sub_cams[3].detach(), protos[3].detach(), selected)
    assert per_pair.shape == (2, )
    with pytest.raises(ValueError, match='expected feats'):
        loss_fn(inputs[2], sub_cams[3], protos[3], selected)


def test_stage1_config_trains_and_predicts():
    cfg = copy.deepcopy(load_config('configs/_base_/models/protocam_r18.py'))
    cfg.model.backbone.update(stem_channels=8, base_channels=8)
    cfg.model.decode_head.in_channels = CHANNELS
    torch.manual_seed(0)
    model = MODELS.build(cfg.model)
    head = model.decode_head
    assert isinstance(head, MultiLevelPrototypeCAMHead)
    assert (head.num_prototypes, head.merge_train, head.merge_test) == (
        3, 'mean', 'softmax')
    assert isinstance(head.loss_contrast, MaskGuidedContrastiveLoss)
    labels = [(1, 0, 1, 0), (0, 1, 1, 1)]
    data = dict(
        inputs=[torch.randint(0, 255, (3, 32, 32), dtype=torch.uint8)
                for _ in labels],
        data_samples=[
            SegDataSample(metainfo=dict(
                img_shape=(32, 32), ori_shape=(32, 32), img_path='x.png',
                img_labels=np.array(flags))) for flags in labels
        ])
    wrapper = OptimWrapper(torch.optim.AdamW(model.parameters(), lr=1e-3))
    model.train()
    log = model.train_step(data, wrapper)
    assert {'loss_cls', 'loss_mask_contrast', 'acc_cls'} <= set(log)
    assert all(math.isfinite(float(v)) for v in log.values())
    model.eval()
    with torch.no_grad():
        result = model.test_step(data)[0]
    assert result.seg_logits.data.shape == (N, 32, 32)
    assert result.pred_sem_seg.data.shape == (1, 32, 32)


def test_image_bank_initialises_the_head_prototypes():
    cfg = copy.deepcopy(load_config('configs/_base_/models/protocam_r18.py'))
    cfg.model.backbone.update(stem_channels=8, base_channels=8)
    cfg.model.decode_head.in_channels = CHANNELS
    cfg.model.data_preprocessor.update(size=(32, 32))
    model = MODELS.build(cfg.model)
    colours = [[40, 40, 200], [200, 60, 60], [60, 180, 60], [150, 30, 150]]
    samples = []
    for cls in range(N):
        for shade in range(K):
            img = torch.tensor(colours[cls], dtype=torch.uint8)
            img = (img.int() + 10 * shade).clamp(max=250).to(torch.uint8)
            samples.append(dict(
                inputs=img[:, None, None].expand(3, 32, 32).clone(),
                data_samples=SegDataSample(metainfo=dict(
                    img_labels=np.eye(N, dtype=int)[cls]))))
    loader = torch.utils.data.DataLoader(
        samples, batch_size=4, collate_fn=lambda batch: dict(
            inputs=[b['inputs'] for b in batch],
            data_samples=[b['data_samples'] for b in batch]))
    protos = build_prototype_bank(model, loader, N, K)
    assert protos.shape == (N, K, 64)
    model.decode_head.load_prototypes(protos)
    assert torch.allclose(model.decode_head.prototypes, protos, atol=1e-6)
