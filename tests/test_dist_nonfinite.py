"""A failure on one of 2 gloo ranks reaches both, within a timeout: a NaN
loss in FiniteLossOptimWrapper (raise and skip) and PrototypeInitHook's
rank-0 image-bank pass; the Runner's iteration in the message; every config
uses the wrapper."""
import glob
import os.path as osp
import time
from datetime import timedelta

import pytest
import torch
import torch.distributed as torch_dist
import torch.multiprocessing as mp
import torch.nn as nn
from mmengine.model import BaseModel, MMDistributedDataParallel
from mmengine.registry import init_default_scope
from mmengine.runner import Runner
from mmseg.registry import MODELS
from torch.utils.data import Dataset

from protoprompt_mm.apis import build_prototype_record
from protoprompt_mm.engine.optim_wrappers import (FiniteLossOptimWrapper,
                                                  NonFiniteLossError)
from protoprompt_mm.models.segmentors.finite_loss import FiniteLossMixin
from protoprompt_mm.utils import load_config
from test_amp_cpu import REPO
from test_distributed import free_port
from test_prototype_init_hook import (tiny_model_cfg, train_dataloader_cfg,
                                      write_tiny_data)

WORLD_SIZE = 2
TIMEOUT_S = 60
NAN_RANK, NAN_STEP = 1, 2
RESULT = 'rank{}.pth'


class TinyRegressor(FiniteLossMixin, BaseModel):
    """A linear layer with two loss terms; NaN inputs make both NaN."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.linear = nn.Linear(3, 1)

    def forward(self, inputs, data_samples=None, mode='loss'):
        out = self.linear(inputs)
        return dict(loss_fit=out.pow(2).mean(), loss_l1=out.abs().mean())


def batch(rank: int, step: int) -> dict:
    inputs = torch.full((2, 3), 1.0 + rank + step)
    if (rank, step) == (NAN_RANK, NAN_STEP):
        inputs[0, 0] = float('nan')
    return dict(inputs=inputs)


def train_with_a_nan_on_rank_1(rank: int) -> dict:
    """Three DDP steps per policy; rank 1's step 2 has a NaN input."""
    result = {}
    for policy in ('raise', 'skip'):
        ddp = MMDistributedDataParallel(TinyRegressor(), device_ids=None)
        wrapper = FiniteLossOptimWrapper(
            torch.optim.AdamW(ddp.parameters(), lr=0.1, weight_decay=0.1),
            on_nonfinite=policy)
        params, error = [], None
        try:
            for step in (1, 2, 3):
                ddp.train_step(batch(rank, step), wrapper)
                params.append(ddp.module.linear.weight.detach().clone())
        except NonFiniteLossError as exc:
            error = str(exc)
        result[policy] = dict(error=error, params=params)
    return result


def prototypes_without_classes_2_and_3(data_root: str) -> str:
    """Every rank builds the prototypes; only rank 0 reads the image bank,
    in which classes 2 and 3 have no image. Returns the error raised."""
    init_default_scope('mmseg')
    model = MODELS.build(tiny_model_cfg())
    try:
        build_prototype_record(model, train_dataloader_cfg(data_root),
                               max_images_per_class=2)
    except Exception as exc:
        return f'{type(exc).__name__}: {exc}'
    return 'no error'


def rank_worker(rank: int, port: int, data_root: str, out_dir: str) -> None:
    torch.set_num_threads(1)
    torch_dist.init_process_group(
        'gloo', init_method=f'tcp://127.0.0.1:{port}', rank=rank,
        world_size=WORLD_SIZE, timeout=timedelta(seconds=TIMEOUT_S * 2))
    try:
        torch.save(
            dict(train=train_with_a_nan_on_rank_1(rank),
                 prototypes=prototypes_without_classes_2_and_3(data_root)),
            osp.join(out_dir, RESULT.format(rank)))
    finally:
        torch_dist.destroy_process_group()


@pytest.fixture(scope='module')
def rank_results(tmp_path_factory) -> list:
    """One 2-rank gloo job (spawned once for the tests below), killed and
    failed if it has not ended within TIMEOUT_S."""
    out_dir = tmp_path_factory.mktemp('ranks')
    data_root = str(out_dir / 'data')
    write_tiny_data(data_root, per_class=0, multi=2)
    context = mp.spawn(rank_worker, args=(free_port(), data_root,
                                          str(out_dir)),
                       nprocs=WORLD_SIZE, join=False)
    deadline = time.monotonic() + TIMEOUT_S
    while not context.join(timeout=1):
        if time.monotonic() > deadline:
            for process in context.processes:
                process.kill()
            pytest.fail(f'the ranks still run after {TIMEOUT_S} s: a rank '
                        'is left waiting in a collective')
    return [torch.load(out_dir / RESULT.format(rank))
            for rank in range(WORLD_SIZE)]


def test_nan_loss_on_one_rank_stops_or_skips_on_every_rank(rank_results):
    results = [result['train'] for result in rank_results]
    for rank, result in enumerate(results):
        # raise: both ranks stop at iteration 2 with the same message,
        # naming rank 1's NaN terms; step 1 was taken.
        error = result['raise']['error']
        assert error is not None, rank
        assert 'non-finite training loss at iteration 2' in error
        assert 'rank 1: loss_fit=nan, loss_l1=nan' in error
        assert 'rank 0:' not in error
        assert len(result['raise']['params']) == 1
        # skip: both ranks go on; step 2 changed nothing, step 3 stepped.
        skip = result['skip']
        assert skip['error'] is None, rank
        after_1, after_2, after_3 = skip['params']
        assert torch.equal(after_1, after_2)
        assert not torch.equal(after_2, after_3)
        assert torch.isfinite(after_3).all()
    assert results[0]['raise']['error'] == results[1]['raise']['error']
    for key in range(3):
        assert torch.equal(results[0]['skip']['params'][key],
                           results[1]['skip']['params'][key])


def test_prototype_init_failure_on_rank_0_reaches_every_rank(rank_results):
    errors = [result['prototypes'] for result in rank_results]
    assert errors[0].startswith('ValueError: class 2 ')
    assert 'no single-label image' in errors[0]
    assert errors[1].startswith('RuntimeError: Prototype init on rank 0 '
                                'failed on another rank')
    assert f'rank 0: {errors[0]}' in errors[1]


class TinySet(Dataset):
    """Four batches of :func:`batch` for rank 0; item 1 is NaN."""

    def __len__(self) -> int:
        return 4

    def __getitem__(self, index: int) -> dict:
        return batch(NAN_RANK if index == 1 else 0, NAN_STEP)


@pytest.mark.parametrize('policy', ['raise', 'skip'])
def test_runner_names_the_iteration(tmp_path, policy):
    runner = Runner(
        model=TinyRegressor(),
        work_dir=str(tmp_path),
        train_dataloader=dict(
            dataset=TinySet(),
            sampler=dict(type='InfiniteSampler', shuffle=False),
            collate_fn=dict(type='default_collate'),
            batch_size=1,
            num_workers=0),
        optim_wrapper=dict(
            type='FiniteLossOptimWrapper',
            optimizer=dict(type='SGD', lr=0.1),
            on_nonfinite=policy),
        train_cfg=dict(by_epoch=False, max_iters=3),
        default_hooks=dict(checkpoint=dict(type='CheckpointHook',
                                           interval=3, by_epoch=False)),
        default_scope='mmseg')
    if policy == 'raise':
        with pytest.raises(NonFiniteLossError,
                           match=r'iteration 2 \(rank 0: loss_fit=nan'):
            runner.train()
        assert runner.iter == 1
    else:
        runner.train()
        assert runner.iter == 3
        assert torch.isfinite(runner.model.linear.weight).all()


def test_every_config_trains_with_a_finite_loss_wrapper():
    configs = [
        path for path in glob.glob(
            osp.join(REPO, 'configs', '**', '*.py'), recursive=True)
        if '_base_' not in path
    ]
    assert configs
    for path in configs:
        wrapper = load_config(path).optim_wrapper
        assert wrapper.type in ('FiniteLossOptimWrapper',
                                'FiniteLossAmpOptimWrapper'), path
        assert wrapper.get('on_nonfinite', 'raise') == 'raise', path
