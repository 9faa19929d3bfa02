"""Every config under configs/ loads, and every model in them builds."""
import copy
import glob
import os
import socket

import pytest
import torch
from mmseg.registry import MODELS

from protoprompt_mm.utils import load_config

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIGS = sorted(
    os.path.relpath(path, REPO_ROOT) for path in glob.glob(
        os.path.join(REPO_ROOT, 'configs', '**', '*.py'), recursive=True))


def test_configs_found():
    assert any('protoprompt_r18' in path for path in CONFIGS)


@pytest.fixture
def no_network(monkeypatch):
    """Any attempt to open a connection fails the test (a download)."""
    def refuse(*args, **kwargs):
        raise AssertionError(f'network access attempted: {args}')

    monkeypatch.setattr(socket.socket, 'connect', refuse)
    monkeypatch.setattr(socket, 'create_connection', refuse)
    monkeypatch.setattr(socket, 'getaddrinfo', refuse)


def test_no_network_fixture_refuses_a_download(no_network):
    # The guard itself: mmengine's loader of an http checkpoint must fail.
    from mmengine.runner import CheckpointLoader
    with pytest.raises(AssertionError, match='network access attempted'):
        CheckpointLoader.load_checkpoint('https://example.com/weights.pth')


@pytest.mark.parametrize('path', CONFIGS)
def test_config_loads_and_model_builds(path, no_network):
    """Each model builds and initialises (init_weights: pretrained
    checkpoints, init_cfg) offline, then runs a forward pass."""
    cfg = load_config(os.path.join(REPO_ROOT, path))
    runnable = not path.startswith(os.path.join('configs', '_base_'))
    if runnable:
        assert cfg.default_scope == 'mmseg'
        assert 'protoprompt_mm' in cfg.custom_imports['imports']
        assert cfg.custom_imports['allow_failed_imports'] is False
    if 'model' not in cfg:
        return
    if not runnable and 'type' not in cfg.model:
        # A fragment (e.g. resnet18_v1c.py) that the model bases complete;
        # they are built below as configs of their own.
        assert 'backbone' in cfg.model, path
        return
    model = MODELS.build(cfg.model)
    model.init_weights()
    model.eval()
    with torch.no_grad():
        out = model(torch.randn(1, 3, 64, 64), mode='tensor')
    num_classes = cfg.model.decode_head.num_classes
    assert out.shape[:2] == (1, num_classes), path


# --------------------------------------------------------------------------
# real-data configs: pretrained weights, PBIP's stage 1, SegFormer's stage 2
# --------------------------------------------------------------------------
REAL_DATA = [
    path for path in CONFIGS
    if path.startswith(os.path.join('configs', 'protoprompt')) and (
        'bcss-wsss' in path or 'luad-histoseg' in path)
]
PBIP_STAGE1 = [p for p in REAL_DATA if 'stage1_protocam_mit-b1' in p]
MIT_STAGE2 = [p for p in REAL_DATA if 'protoprompt_mit-b1' in p]


@pytest.fixture(scope='module')
def converted(tmp_path_factory):
    """Converted random checkpoints: SegFormer's MiT-B1 layout and an
    mmpretrain ResNetV1c-18 classifier, keyed by backbone type."""
    from test_convert_weights import (MIT_B1, mmpretrain_classifier,
                                      nvlabs_layout, random_mit)

    from protoprompt_mm.utils.weight_conversion import convert_checkpoint
    folder = tmp_path_factory.mktemp('pretrained')
    sources = {
        'MixVisionTransformer': ('mit', nvlabs_layout(random_mit(**MIT_B1))),
        'ResNetV1c': ('mmpretrain', dict(state_dict=mmpretrain_classifier(
            dict(type='ResNetV1c', depth=18)).state_dict())),
    }
    files = {}
    for backbone, (layout, ckpt) in sources.items():
        src, dst = folder / f'{backbone}_src.pth', folder / f'{backbone}.pth'
        torch.save(ckpt, src)
        files[backbone] = (str(dst),
                           convert_checkpoint(str(src), str(dst), layout))
    return files


def test_real_data_configs_found():
    assert len(PBIP_STAGE1) == len(MIT_STAGE2) == 2
    assert len(REAL_DATA) == 8


@pytest.mark.parametrize('path', REAL_DATA)
def test_real_data_config_loads_its_pretrained_backbone(path, converted):
    assert load_config(os.path.join(REPO_ROOT, path)).pretrained is None
    backbone_type = load_config(os.path.join(REPO_ROOT,
                                             path)).model.backbone.type
    checkpoint, tensors = converted[backbone_type]
    cfg = load_config(os.path.join(REPO_ROOT, path),
                      dict(pretrained=checkpoint))
    model = MODELS.build(cfg.model)
    model.init_weights()
    loaded = model.backbone.state_dict()
    assert set(loaded) == set(tensors), path
    for key, value in tensors.items():
        assert torch.equal(loaded[key], value), f'{path}: {key}'


def test_child_config_sets_pretrained(tmp_path, converted):
    """mmengine does not re-evaluate a base's expressions for a child's
    value: load_config applies the merged `pretrained` itself."""
    checkpoint, tensors = converted['MixVisionTransformer']
    child = tmp_path / 'child.py'
    child.write_text(f"_base_ = [{os.path.join(REPO_ROOT, PBIP_STAGE1[0])!r}]"
                     f"\npretrained = {checkpoint!r}\n")
    cfg = load_config(str(child))
    assert cfg.model.backbone.init_cfg == dict(type='Pretrained',
                                               checkpoint=checkpoint)


def strings_in(node):
    """Every string inside a config value."""
    if isinstance(node, str):
        yield node
    elif isinstance(node, dict):
        for value in node.values():
            yield from strings_in(value)
    elif isinstance(node, (list, tuple)):
        for value in node:
            yield from strings_in(value)


@pytest.mark.parametrize('path', CONFIGS)
def test_config_downloads_nothing(path):
    """No checkpoint URL anywhere (mmseg's FCN ResNet-18 config, the base
    of the example, names open-mmlab://resnet18_v1c)."""
    cfg = load_config(os.path.join(REPO_ROOT, path))
    assert not [s for s in strings_in(cfg.to_dict()) if '://' in s]
    if 'model' in cfg and 'backbone' in cfg.model:
        assert cfg.model.backbone.get('init_cfg') is None, path
        assert cfg.model.get('pretrained') is None, path


@pytest.mark.parametrize('path', PBIP_STAGE1)
def test_pbip_stage1_settings(path):
    cfg = load_config(os.path.join(REPO_ROOT, path))
    assert cfg.model.backbone.type == 'MixVisionTransformer'
    assert cfg.model.backbone.strides == [4, 2, 2, 1]
    head = cfg.model.decode_head
    assert head.type == 'MultiLevelPrototypeCAMHead'
    assert head.num_prototypes == 3
    assert head.in_channels == [64, 128, 320, 512]
    assert cfg.train_dataloader.batch_size == 10
    assert cfg.train_dataloader.sampler.type == 'DefaultSampler'
    assert [step.type for step in cfg.train_dataloader.dataset.pipeline] == [
        'LoadImageFromFile', 'LoadImageLevelLabels', 'RandomHEDJitter',
        'RandomFlip', 'RandomFlip', 'RandomRotate90', 'PackSegInputs'
    ]
    assert cfg.optim_wrapper.type.endswith('AmpOptimWrapper')
    assert cfg.optim_wrapper.dtype == 'float16'
    optimizer = cfg.optim_wrapper.optimizer
    assert (optimizer.type, optimizer.lr, optimizer.weight_decay) == (
        'AdamW', 5e-5, 1e-3)
    assert cfg.train_cfg == dict(type='EpochBasedTrainLoop', max_epochs=8,
                                 val_interval=1)
    (poly, ) = cfg.param_scheduler
    assert (poly.type, poly.power, poly.eta_min, poly.end) == ('PolyLR', 1.0,
                                                               0.0, 8)
    assert poly.by_epoch and poly.convert_to_iter_based
    assert cfg.auto_scale_lr == dict(enable=False, base_batch_size=10)
    # PBIP's model selection: the protocol that counts GT background.
    assert cfg.default_hooks.checkpoint.save_best == \
        'background_as_error/mIoU'
    assert 'background_as_error' in cfg.val_evaluator.extra_protocols


def train_optim_wrapper(model, cfg):
    """The config's optim wrapper as tools/train.py builds it (an AMP
    wrapper, CUDA-only in mmengine, becomes its fp32 twin on a CPU)."""
    from mmengine.optim import build_optim_wrapper

    from protoprompt_mm.engine.amp import configure_amp
    cfg = copy.deepcopy(cfg)
    configure_amp(cfg)
    return build_optim_wrapper(model, cfg.optim_wrapper)


def test_pbip_stage1_train_step_on_a_tiny_batch():
    """MiT-B1 (stride-16 stage 4) under the 4-level prototype-CAM head:
    one optimiser step of batch 2 at 64 x 64, gradients in every stage."""
    from test_cam_model import make_batch
    cfg = load_config(os.path.join(REPO_ROOT, PBIP_STAGE1[0]))
    torch.manual_seed(0)
    model = MODELS.build(cfg.model)
    model.init_weights()
    model.train()
    data = model.data_preprocessor(make_batch(size=(64, 64)), True)
    feats = model.extract_feat(data['inputs'])
    assert [tuple(f.shape[1:]) for f in feats] == [(64, 16, 16),
                                                   (128, 8, 8),
                                                   (320, 4, 4), (512, 4, 4)]
    losses = model.loss(data['inputs'], data['data_samples'])
    assert {'loss_cls', 'loss_mask_contrast'} <= set(losses)
    total = sum(v for k, v in losses.items() if k.startswith('loss'))
    assert torch.isfinite(total)
    total.backward()
    for stage in model.backbone.layers:
        assert stage[0].projection.weight.grad.abs().sum() > 0
    wrapper = train_optim_wrapper(model, cfg)
    before = model.backbone.layers[3][2].weight.detach().clone()
    model.train_step(make_batch(size=(64, 64)), wrapper)
    assert not torch.equal(before, model.backbone.layers[3][2].weight)


@pytest.mark.parametrize('path', MIT_STAGE2)
def test_segformer_paramwise_cfg_of_mit_stage2(path):
    cfg = load_config(os.path.join(REPO_ROOT, path))
    model = MODELS.build(cfg.model)
    wrapper = train_optim_wrapper(model, cfg)
    names = {id(p): n for n, p in model.named_parameters()}
    groups = {names[id(g['params'][0])]: g for g in
              wrapper.optimizer.param_groups}
    base = cfg.optim_wrapper.optimizer
    assert (base.lr, base.weight_decay) == (6e-5, 0.01)
    norm = groups['backbone.layers.0.1.0.norm1.weight']
    assert (norm['lr'], norm['weight_decay']) == (base.lr, 0.0)
    attn = groups['backbone.layers.0.1.0.attn.attn.in_proj_weight']
    assert (attn['lr'], attn['weight_decay']) == (base.lr, 0.01)
    head = next(g for n, g in groups.items() if n.startswith('decode_head'))
    assert head['lr'] == pytest.approx(10 * base.lr)
    neck = next(g for n, g in groups.items() if n.startswith('neck'))
    assert neck['lr'] == pytest.approx(10 * base.lr)
    warmup, poly = cfg.param_scheduler
    assert (warmup.type, warmup.end, poly.type, poly.power,
            poly.end) == ('LinearLR', 1500, 'PolyLR', 1.0, 20000)
