"""CPU mixed precision: --amp falls back to fp32, bf16 autocast works, the
finite-loss check leaves fp16 gradient overflows to GradScaler."""
import argparse
import copy
import os
import os.path as osp
import subprocess
import sys

import pytest
import torch
from mmengine.config import Config
from mmengine.logging import MMLogger
from mmengine.optim.optimizer import amp_optimizer_wrapper
from mmseg.registry import MODELS

from protoprompt_mm.datasets.synthetic_histo import generate_synthetic_histo
from protoprompt_mm.engine.amp import add_amp_argument, configure_amp
from protoprompt_mm.engine.optim_wrappers import (FiniteLossAmpOptimWrapper,
                                                  NonFiniteLossError)
from test_segmentor import make_batch, tiny_model_cfg

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
STAGE2_CFG = 'configs/protoprompt/protoprompt_r18_synthetic.py'
LOSSES = [
    dict(type='CrossEntropyLoss', avg_non_ignore=True),
    dict(type='PrototypeContrastiveLoss', max_pixels_per_class=64,
         loss_weight=0.2),
    dict(type='RegionConsistencyLoss', loss_weight=0.2),
]


def tiny_data_options(data_root: str) -> list:
    """--cfg-options for 2 iterations on tools/make_synthetic_histo.py data
    (its hidden masks serve as the pseudo masks)."""
    options = [
        'train_cfg.max_iters=2', 'train_cfg.val_interval=1000',
        'default_hooks.checkpoint.interval=2', 'param_scheduler.0.end=1',
        'param_scheduler.1.begin=1',
        f'train_dataloader.dataset.pseudo_mask_dir={data_root}/training_gt',
        'train_dataloader.batch_size=2'
    ]
    for loader in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        options += [
            f'{loader}.dataset.data_root={data_root}',
            f'{loader}.num_workers=0', f'{loader}.persistent_workers=False'
        ]
    return options


def make_tiny_data(out: str) -> None:
    """8 training, 2 val and 2 test patches of 64 x 64 (the generator of
    tools/make_synthetic_histo.py, called in-process)."""
    generate_synthetic_histo(out, seed=0, num_train=8, num_val=2, num_test=2,
                             size=64)


def test_amp_flag_trains_in_fp32_on_cpu(tmp_path):
    data_root, work_dir = str(tmp_path / 'data'), str(tmp_path / 'work')
    make_tiny_data(data_root)
    proc = subprocess.run(
        [sys.executable, 'tools/train.py', STAGE2_CFG, '--amp',
         '--work-dir', work_dir, '--cfg-options',
         *tiny_data_options(data_root)],
        cwd=REPO, capture_output=True, text=True, timeout=300,
        env=dict(os.environ, OMP_NUM_THREADS='1'))
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-3000:]
    assert '--amp needs a CUDA device; training in fp32' in log
    assert 'AmpOptimWrapper' not in log
    ckpt = torch.load(osp.join(work_dir, 'iter_2.pth'), map_location='cpu',
                      weights_only=False)
    assert ckpt['meta']['iter'] == 2
    state = ckpt['state_dict']
    assert state['neck.prototypes'].dtype == torch.float32
    assert int(state['neck.num_updates']) == 2


def bf16_losses(model):
    """Features and losses of one batch under CPU bf16 autocast."""
    data = model.data_preprocessor(make_batch(), True)
    with torch.autocast('cpu', dtype=torch.bfloat16):
        feats = model.extract_feat(data['inputs'])
        losses = model.loss(data['inputs'], data['data_samples'])
    return feats, losses


def test_prompting_model_under_cpu_bf16_autocast():
    torch.manual_seed(0)
    model = MODELS.build(tiny_model_cfg(loss_decode=LOSSES)).train()
    feats, losses = bf16_losses(model)
    assert feats.embedding.dtype == torch.bfloat16
    assert feats.prototypes.dtype == torch.float32
    for name in ('decode.loss_ce', 'decode.loss_proto_contrast',
                 'decode.loss_region'):
        assert torch.isfinite(losses[name]), name
    sum(v for k, v in losses.items() if 'loss' in k).backward()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)
    # The momentum update kept the bank in fp32.
    assert model.neck.prototypes.dtype == torch.float32
    assert int(model.neck.num_updates) == 1

    model.eval()
    with torch.no_grad(), torch.autocast('cpu', dtype=torch.bfloat16):
        results = model.test_step(make_batch())
    assert results[0].pred_sem_seg.data.shape == (1, 32, 32)
    assert torch.isfinite(results[0].seg_logits.data.float()).all()


def test_losses_are_fp32_under_autocast():
    torch.manual_seed(0)
    model = MODELS.build(tiny_model_cfg(loss_decode=LOSSES)).train()
    _, losses = bf16_losses(model)
    for name in ('decode.loss_ce', 'decode.loss_proto_contrast',
                 'decode.loss_region'):
        assert losses[name].dtype == torch.float32, name


# --------------------------------------------------------------------------
# FiniteLossAmpOptimWrapper: GradScaler's skips vs non-finite losses
# --------------------------------------------------------------------------


@pytest.fixture
def cpu_amp_wrapper(monkeypatch):
    """Build FiniteLossAmpOptimWrapper on the CPU: mmengine's GPU check is
    bypassed and its CUDA GradScaler (disabled without CUDA) replaced by
    torch's CPU GradScaler, so update_params runs the real scaler logic."""
    monkeypatch.setattr(amp_optimizer_wrapper, 'is_cuda_available',
                        lambda: True)

    def build(module, on_nonfinite='raise'):
        wrapper = FiniteLossAmpOptimWrapper(
            optimizer=torch.optim.SGD(module.parameters(), lr=0.1),
            dtype='float16', on_nonfinite=on_nonfinite)
        wrapper.loss_scaler = torch.amp.GradScaler('cpu', init_scale=2.**16)
        return wrapper

    return build


def fp16_loss(layer, value: float):
    """Sum of an fp16-autocast linear layer's output on a constant input."""
    with torch.autocast('cpu', dtype=torch.float16):
        out = layer(torch.full((1, 4), value))
    return out.float().sum()


def test_fp16_gradient_overflow_stays_a_gradscaler_skip(cpu_amp_wrapper):
    torch.manual_seed(0)
    layer = torch.nn.Linear(4, 4)
    wrapper = cpu_amp_wrapper(layer)
    before = copy.deepcopy(layer.state_dict())
    # A finite loss whose scaled gradient (2 ** 16 per output) overflows
    # fp16 (max 65504) in the backward pass.
    loss = fp16_loss(layer, 1.0)
    assert torch.isfinite(loss)
    wrapper.update_params(loss)
    assert wrapper.loss_scaler.get_scale() == 2.**15
    for key, value in layer.state_dict().items():
        assert torch.equal(value, before[key]), key
    # The lowered scale lets the next step through.
    wrapper.update_params(fp16_loss(layer, 1.0))
    assert wrapper.loss_scaler.get_scale() == 2.**15
    assert not torch.equal(layer.weight, before['weight'])
    assert torch.isfinite(layer.weight).all()


@pytest.mark.parametrize('policy', ['raise', 'skip'])
def test_fp16_forward_overflow_is_not_a_gradscaler_skip(cpu_amp_wrapper,
                                                        policy):
    torch.manual_seed(0)
    layer = torch.nn.Linear(4, 4)
    wrapper = cpu_amp_wrapper(layer, policy)
    before = copy.deepcopy(layer.state_dict())
    # 1e5 is beyond fp16: the forward pass overflows, the loss is not
    # finite, and no loss scale would help.
    loss = fp16_loss(layer, 1e5)
    assert not torch.isfinite(loss)
    if policy == 'raise':
        with pytest.raises(NonFiniteLossError,
                           match=r'iteration 1 \(rank 0: the total loss\)'):
            wrapper.update_params(loss)
    else:
        wrapper.update_params(loss)
        assert all(p.grad is None for p in layer.parameters())
    # Neither the weights nor the loss scale moved.
    assert wrapper.loss_scaler.get_scale() == 2.**16
    for key, value in layer.state_dict().items():
        assert torch.equal(value, before[key]), key


# --------------------------------------------------------------------------
# configure_amp and tools/train.py --amp
# --------------------------------------------------------------------------


def wrapper_cfg(**wrapper) -> Config:
    return Config(dict(optim_wrapper=dict(
        optimizer=dict(type='SGD', lr=0.1), **wrapper)))


FP16 = dict(dtype='float16', loss_scale='dynamic')
BF16 = dict(dtype='bfloat16', loss_scale=dict(enabled=False))


@pytest.mark.parametrize('amp, wrapper, expected', [
    (None, dict(type='FiniteLossOptimWrapper'),
     dict(type='FiniteLossOptimWrapper')),
    ('default', dict(type='FiniteLossOptimWrapper'),
     dict(type='FiniteLossAmpOptimWrapper', **FP16)),
    ('fp16', dict(type='OptimWrapper'), dict(type='AmpOptimWrapper', **FP16)),
    ('bf16', dict(type='FiniteLossOptimWrapper'),
     dict(type='FiniteLossAmpOptimWrapper', **BF16)),
    # A config that already trains with AMP: plain --amp keeps it, a
    # precision replaces its dtype and loss scaling.
    ('default', dict(type='FiniteLossAmpOptimWrapper', **BF16),
     dict(type='FiniteLossAmpOptimWrapper', **BF16)),
    ('fp16', dict(type='FiniteLossAmpOptimWrapper', **BF16),
     dict(type='FiniteLossAmpOptimWrapper', **FP16)),
    ('bf16', dict(type='AmpOptimWrapper', **FP16),
     dict(type='AmpOptimWrapper', **BF16)),
])
def test_configure_amp_with_a_gpu(monkeypatch, amp, wrapper, expected):
    MMLogger.get_current_instance()  # mmengine's logger cannot start under
    # the fake GPU (it asks torch.cuda for the device), whatever ran before
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: True)
    monkeypatch.setattr(torch.cuda, 'is_bf16_supported', lambda: True)
    cfg = wrapper_cfg(**wrapper)
    configure_amp(cfg, amp)
    assert cfg.optim_wrapper.pop('optimizer') == dict(type='SGD', lr=0.1)
    assert cfg.optim_wrapper == expected


def test_configure_amp_refuses_what_it_cannot_do(monkeypatch):
    MMLogger.get_current_instance()
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: True)
    monkeypatch.setattr(torch.cuda, 'is_bf16_supported', lambda: False)
    with pytest.raises(ValueError, match='bfloat16 support'):
        configure_amp(wrapper_cfg(type='OptimWrapper'), 'bf16')
    with pytest.raises(ValueError, match='ApexOptimWrapper'):
        configure_amp(wrapper_cfg(type='ApexOptimWrapper'), 'fp16')
    with pytest.raises(ValueError, match='one of'):
        configure_amp(wrapper_cfg(type='OptimWrapper'), 'fp8')
    untouched = wrapper_cfg(type='ApexOptimWrapper')
    configure_amp(untouched, None)
    assert untouched.optim_wrapper.type == 'ApexOptimWrapper'


def test_configure_amp_trains_in_fp32_without_a_gpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: False)
    flag = wrapper_cfg(type='FiniteLossOptimWrapper')
    configure_amp(flag, 'bf16')
    assert flag.optim_wrapper.type == 'FiniteLossOptimWrapper'
    assert 'dtype' not in flag.optim_wrapper
    # An AMP config (e.g. PBIP's fp16 stage 1) runs in fp32 on the CPU.
    config = wrapper_cfg(type='FiniteLossAmpOptimWrapper', **FP16)
    configure_amp(config, None)
    assert config.optim_wrapper == dict(
        type='FiniteLossOptimWrapper', optimizer=dict(type='SGD', lr=0.1))


def test_amp_argument_choices():
    """``--amp`` of tools/train.py."""
    parser = argparse.ArgumentParser()
    parser.add_argument('config')
    add_amp_argument(parser)
    for argv, amp in [([], None), (['--amp'], 'default'),
                      (['--amp', 'bf16'], 'bf16'), (['--amp', 'fp16'],
                                                    'fp16')]:
        assert parser.parse_args(['cfg.py', *argv]).amp == amp
    with pytest.raises(SystemExit):
        parser.parse_args(['cfg.py', '--amp', 'fp8'])
