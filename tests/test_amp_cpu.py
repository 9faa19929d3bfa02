"""CPU mixed precision: --amp falls back to fp32, bf16 autocast works."""
import os
import os.path as osp
import subprocess
import sys

import torch
from mmseg.registry import MODELS

from protoprompt_mm.datasets.synthetic_histo import generate_synthetic_histo
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
