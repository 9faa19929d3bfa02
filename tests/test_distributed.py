"""CPU DDP (gloo): the momentum PrototypeBank stays identical on every rank."""
import os
import os.path as osp
import socket
import subprocess

import torch
import torch.distributed as torch_dist
import torch.multiprocessing as mp
import torch.nn as nn
import torch.nn.functional as F
from mmengine.dist import get_rank
from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper
from mmseg.registry import HOOKS

from protoprompt_mm.models.necks import PrototypeBank
from test_amp_cpu import REPO, STAGE2_CFG, make_tiny_data, tiny_data_options

TESTS_DIR = osp.dirname(osp.abspath(__file__))
WORLD_SIZE = 2
STEPS = 3
NUM_CLASSES, NUM_PROTOS, DIM = 3, 2, 8
DUMP_NAME = 'prototypes_rank{}.pth'
# Adds the hook below to the stage-2 config; ``test_distributed`` is
# importable in the ranks through PYTHONPATH.
DIST_CFG = """_base_ = [{base!r}]
custom_imports = dict(
    imports=['protoprompt_mm', 'test_distributed'], allow_failed_imports=False)
custom_hooks = [dict(type='DumpPrototypesHook')]
"""


@HOOKS.register_module()
class DumpPrototypesHook(Hook):
    """Save each rank's bank and its first BN running mean (a buffer DDP
    does not synchronise) to ``<work_dir>/prototypes_rank<r>.pth``."""

    def after_train(self, runner) -> None:
        model = runner.model.module if is_model_wrapper(runner.model) \
            else runner.model
        bn = next(m for m in model.modules() if isinstance(m, nn.BatchNorm2d))
        torch.save(
            dict(prototypes=model.neck.prototypes.detach().cpu(),
                 bn_mean=bn.running_mean.detach().cpu()),
            osp.join(runner.work_dir, DUMP_NAME.format(get_rank())))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(('127.0.0.1', 0))
        return sock.getsockname()[1]


def make_bank() -> PrototypeBank:
    bank = PrototypeBank([DIM], NUM_CLASSES, embed_dim=DIM,
                         num_prototypes=NUM_PROTOS, update_mode='momentum',
                         momentum=0.9)
    gen = torch.Generator().manual_seed(123)
    bank.load_prototypes(torch.randn(NUM_CLASSES, NUM_PROTOS, DIM,
                                     generator=gen))
    return bank


def global_batch(step: int):
    """Embeddings (4, D, 6, 6) and labels (4, 6, 6) with ignored pixels."""
    gen = torch.Generator().manual_seed(step)
    emb = F.normalize(torch.randn(4, DIM, 6, 6, generator=gen), dim=1)
    label = torch.randint(0, NUM_CLASSES, (4, 6, 6), generator=gen)
    label[torch.rand(label.shape, generator=gen) < 0.2] = 255
    return emb, label


def update(bank: PrototypeBank, rank: int, world_size: int) -> None:
    """STEPS momentum updates with this rank's share of each global batch."""
    for step in range(STEPS):
        emb, label = global_batch(step)
        share = emb.shape[0] // world_size
        part = slice(rank * share, (rank + 1) * share)
        bank.momentum_update(emb[part], label[part])


def rank_worker(rank: int, port: int, out_dir: str) -> None:
    torch.set_num_threads(1)
    torch_dist.init_process_group(
        'gloo', init_method=f'tcp://127.0.0.1:{port}', rank=rank,
        world_size=WORLD_SIZE)
    try:
        bank = make_bank()
        update(bank, rank, WORLD_SIZE)
        torch.save(bank.prototypes, osp.join(out_dir, DUMP_NAME.format(rank)))
    finally:
        torch_dist.destroy_process_group()


def test_momentum_banks_equal_the_global_batch_update(tmp_path):
    mp.spawn(rank_worker, args=(free_port(), str(tmp_path)),
             nprocs=WORLD_SIZE, join=True)
    banks = [torch.load(tmp_path / DUMP_NAME.format(rank))
             for rank in range(WORLD_SIZE)]
    assert torch.equal(banks[0], banks[1])

    single = make_bank()  # no process group: the all-reduce is a no-op
    update(single, rank=0, world_size=1)
    torch.testing.assert_close(banks[0], single.prototypes, atol=1e-6,
                               rtol=0)
    # The check is sensitive: a rank-local update gives other prototypes.
    local = make_bank()
    update(local, rank=0, world_size=WORLD_SIZE)
    assert not torch.allclose(local.prototypes, single.prototypes, atol=1e-3)
    assert not torch.allclose(single.prototypes,
                              make_bank().prototypes, atol=1e-3)


def test_dist_train_sh_keeps_ranks_in_sync(tmp_path):
    data_root, work_dir = str(tmp_path / 'data'), str(tmp_path / 'work')
    make_tiny_data(data_root)
    config = tmp_path / 'dist_config.py'
    config.write_text(DIST_CFG.format(base=osp.join(REPO, STAGE2_CFG)))
    env = dict(
        os.environ,
        PYTHON=os.environ.get('PYTHON', osp.join(REPO, '.venv/bin/python')),
        PORT=str(free_port()),
        OMP_NUM_THREADS='1',
        PYTHONPATH=os.pathsep.join(
            filter(None, [TESTS_DIR, os.environ.get('PYTHONPATH')])))
    proc = subprocess.run(
        ['bash', 'tools/dist_train.sh', str(config), str(WORLD_SIZE),
         '--work-dir', work_dir, '--cfg-options',
         'env_cfg.dist_cfg.backend=gloo', *tiny_data_options(data_root)],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    state = torch.load(osp.join(work_dir, 'iter_2.pth'), map_location='cpu',
                       weights_only=False)['state_dict']
    assert int(state['neck.num_updates']) == 2
    dumps = [torch.load(osp.join(work_dir, DUMP_NAME.format(rank)))
             for rank in range(WORLD_SIZE)]
    # Each rank saw other images: its local BN statistics differ, so equal
    # banks come from the all-reduce, not from DDP broadcasting buffers.
    assert not torch.equal(dumps[0]['bn_mean'], dumps[1]['bn_mean'])
    assert torch.equal(dumps[0]['prototypes'], dumps[1]['prototypes'])
    assert torch.equal(state['neck.prototypes'], dumps[1]['prototypes'])
