"""Whole-model steps: train/val steps, momentum updates, stock configs."""
import copy

import torch
from mmengine.structures import PixelData
from mmseg.registry import MODELS
from mmseg.structures import SegDataSample

from protoprompt_mm.engine.optim_wrappers import FiniteLossOptimWrapper
from protoprompt_mm.utils import load_config

MODEL_CFG = 'configs/_base_/models/protoprompt_r18.py'


def make_batch(batch=2, size=32, num_classes=4):
    inputs, samples = [], []
    for _ in range(batch):
        inputs.append(torch.randint(0, 255, (3, size, size),
                                    dtype=torch.uint8))
        sample = SegDataSample()
        label = torch.randint(0, num_classes, (1, size, size))
        label[:, :4] = 255
        sample.gt_sem_seg = PixelData(data=label)
        sample.set_metainfo(dict(img_shape=(size, size),
                                 ori_shape=(size, size)))
        samples.append(sample)
    return dict(inputs=inputs, data_samples=samples)


def tiny_model_cfg(**decode_head):
    cfg = load_config(MODEL_CFG)
    model = copy.deepcopy(cfg.model)
    model.neck.update(embed_dim=16, num_prototypes=2)
    model.decode_head.update(channels=16, embed_dim=16, num_attn_heads=2,
                             **decode_head)
    return model


def train_one_step(model, data):
    model.train()
    wrapper = FiniteLossOptimWrapper(
        torch.optim.SGD(model.parameters(), lr=0.01))
    return model.train_step(data, wrapper)


def test_train_and_val_step_with_momentum_bank():
    torch.manual_seed(0)
    model = MODELS.build(tiny_model_cfg(loss_decode=dict(
        type='CrossEntropyLoss', avg_non_ignore=True)))
    before = model.neck.prototypes.clone()
    log_vars = train_one_step(model, make_batch())
    assert torch.isfinite(log_vars['loss'])
    assert int(model.neck.num_updates) == 1
    assert not torch.allclose(model.neck.prototypes, before)

    model.eval()
    results = model.val_step(make_batch())
    assert len(results) == 2
    assert results[0].pred_sem_seg.data.shape == (1, 32, 32)
    assert results[0].seg_logits.data.shape == (4, 32, 32)
    assert int(model.neck.num_updates) == 1  # no updates outside training


def test_momentum_update_survives_a_rebuilt_neck_output():
    # A wrapper that rebuilds the neck's PromptedFeatures as a plain tuple
    # must not silently skip the prototype update.
    torch.manual_seed(0)
    model = MODELS.build(tiny_model_cfg(loss_decode=dict(
        type='CrossEntropyLoss', avg_non_ignore=True)))
    extract_feat = model.extract_feat
    model.extract_feat = lambda inputs: tuple(extract_feat(inputs))
    before = model.neck.prototypes.clone()
    train_one_step(model, make_batch())
    assert int(model.neck.num_updates) == 1
    assert not torch.allclose(model.neck.prototypes, before)


def test_learned_bank_trains_prototypes_through_the_loss():
    torch.manual_seed(0)
    cfg = tiny_model_cfg(loss_decode=dict(
        type='CrossEntropyLoss', avg_non_ignore=True))
    cfg.neck.update_mode = 'learned'
    model = MODELS.build(cfg)
    before = model.neck.prototypes.detach().clone()
    for _ in range(2):  # the first step moves the zero-initialised prompts
        train_one_step(model, make_batch())
    assert not torch.equal(model.neck.prototypes, before)
    assert int(model.neck.num_updates) == 0


def test_slide_inference_with_prompting_head():
    cfg = tiny_model_cfg(loss_decode=dict(type='CrossEntropyLoss'))
    cfg.test_cfg = dict(mode='slide', crop_size=(32, 32), stride=(24, 24))
    model = MODELS.build(cfg).eval()
    batch = make_batch(batch=1, size=56)
    results = model.test_step(batch)
    assert results[0].pred_sem_seg.data.shape == (1, 56, 56)


def test_head_in_stock_mmseg_fcn_r18_config():
    """README's example: our neck and head in mmseg's FCN ResNet-18 config."""
    cfg = load_config('configs/examples/fcn_r18_prototype_prompting.py')
    model = cfg.model
    assert model.auxiliary_head.type == 'FCNHead'  # the stock head stays
    bn = dict(type='BN', requires_grad=True)
    model.data_preprocessor.size = (32, 32)
    for part in (model.backbone, model.neck, model.decode_head,
                 model.auxiliary_head):
        part.norm_cfg = bn  # SyncBN needs a process group
    segmentor = MODELS.build(model)
    log_vars = train_one_step(segmentor, make_batch())
    for key in ('decode.loss_ce', 'decode.loss_region',
                'decode.loss_proto_contrast', 'aux.loss_ce'):
        assert torch.isfinite(log_vars[key]), key
    assert int(segmentor.neck.num_updates) == 1


def test_non_finite_loss_never_reaches_the_optimizer():
    model = MODELS.build(tiny_model_cfg(loss_decode=dict(
        type='CrossEntropyLoss', avg_non_ignore=True)))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    data = make_batch()
    data['inputs'][0] = data['inputs'][0].float() * float('nan')
    import pytest
    with pytest.raises(FloatingPointError, match='decode.loss_ce'):
        train_one_step(model, data)
    for key, value in model.state_dict().items():
        if value.is_floating_point() and 'running' not in key:
            assert torch.equal(value, before[key]), key
