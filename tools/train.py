"""Train a ProtoPrompt-MM (or any mmseg) config with mmengine's Runner.

Same command line as mmseg's ``tools/train.py``; ``--amp`` also takes
``fp16`` or ``bf16`` (see :func:`protoprompt_mm.engine.amp.configure_amp`).
"""
import argparse
import os

from mmengine.config import DictAction
from mmengine.runner import Runner

from mmseg.registry import RUNNERS
from protoprompt_mm.engine.amp import add_amp_argument, configure_amp
from protoprompt_mm.utils import (init_cpu_process_group, load_runner_config,
                                  set_training_start)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description='Train a segmentor')
    parser.add_argument('config', help='train config file path')
    parser.add_argument('--work-dir', help='where logs and checkpoints go')
    parser.add_argument(
        '--resume',
        action='store_true',
        help='continue the work dir: resume from its last checkpoint '
        '(load_from is then not used), or, when it has none, start a new '
        'run from load_from')
    add_amp_argument(parser)
    parser.add_argument(
        '--cfg-options',
        nargs='+',
        action=DictAction,
        help='override config keys, e.g. train_cfg.max_iters=100')
    parser.add_argument(
        '--launcher',
        choices=['none', 'pytorch', 'slurm', 'mpi'],
        default='none',
        help='job launcher')
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)
    args = parser.parse_args()
    os.environ.setdefault('LOCAL_RANK', str(args.local_rank))
    return args


def main() -> None:
    args = parse_args()
    cfg = load_runner_config(args.config, args.cfg_options, args.launcher,
                             args.work_dir)
    configure_amp(cfg, args.amp)
    set_training_start(cfg, args.resume)
    backend = cfg.get('env_cfg', {}).get('dist_cfg', {}).get('backend', 'gloo')
    if init_cpu_process_group(args.launcher, backend):
        # CPU DDP: no device_ids; buffers as in mmengine's default wrapper.
        cfg.model_wrapper_cfg = cfg.get('model_wrapper_cfg') or dict(
            type='MMDistributedDataParallel',
            device_ids=None,
            broadcast_buffers=False,
            find_unused_parameters=cfg.get('find_unused_parameters', False))
    runner = Runner.from_cfg(cfg) if 'runner_type' not in cfg \
        else RUNNERS.build(cfg)
    runner.train()


if __name__ == '__main__':
    main()
