"""Test a checkpoint with mmengine's Runner (mmseg's ``tools/test.py`` CLI)."""
import argparse
import os

from mmengine.config import DictAction
from mmengine.dist import is_main_process
from mmengine.runner import Runner

from protoprompt_mm.apis import (stain_shift_table, stain_shift_test,
                                 with_stain_normalization,
                                 write_stain_shift_report)
from protoprompt_mm.datasets.stain import STAIN_SHIFTS
from protoprompt_mm.utils import load_runner_config, set_test_options


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description='Test a segmentor')
    parser.add_argument('config', help='test config file path')
    parser.add_argument('checkpoint', help='checkpoint file')
    parser.add_argument('--work-dir', help='where the metrics log goes')
    parser.add_argument(
        '--out', help='directory to save the predicted masks as PNGs')
    parser.add_argument(
        '--show', action='store_true', help='show prediction overlays')
    parser.add_argument(
        '--show-dir', help='directory to save prediction overlays')
    parser.add_argument(
        '--wait-time', type=float, default=2, help='seconds per shown image')
    parser.add_argument(
        '--cfg-options',
        nargs='+',
        action=DictAction,
        help='override config keys, e.g. test_dataloader.batch_size=4')
    parser.add_argument(
        '--launcher',
        choices=['none', 'pytorch', 'slurm', 'mpi'],
        default='none',
        help='job launcher')
    parser.add_argument(
        '--tta', action='store_true', help='test-time augmentation')
    parser.add_argument(
        '--stain-shift',
        nargs='*',
        choices=sorted(STAIN_SHIFTS),
        metavar='CONDITION',
        help='also test on the test images re-stained in HED space (all '
        f'of {", ".join(STAIN_SHIFTS)} when none is named); writes '
        'stain_shift.json / .md to the work dir')
    parser.add_argument(
        '--stain-norm',
        metavar='REFERENCE',
        help='Macenko-normalise the test images first, towards a reference '
        'image or the stain target a checkpoint carries (e.g. the tested '
        'checkpoint: the stain of its training images)')
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)
    args = parser.parse_args()
    os.environ.setdefault('LOCAL_RANK', str(args.local_rank))
    return args


def main() -> None:
    args = parse_args()
    cfg = load_runner_config(args.config, args.cfg_options, args.launcher,
                             args.work_dir)
    set_test_options(cfg, args.checkpoint, show=args.show,
                     show_dir=args.show_dir, wait_time=args.wait_time,
                     tta=args.tta, out=args.out)
    if args.stain_norm is not None:
        cfg = with_stain_normalization(cfg, args.stain_norm)
    if args.stain_shift is None:
        Runner.from_cfg(cfg).test()
        return
    results = stain_shift_test(cfg, args.stain_shift or list(STAIN_SHIFTS))
    if is_main_process():
        _, md_path = write_stain_shift_report(results, cfg.work_dir,
                                              checkpoint=args.checkpoint,
                                              stain_norm=args.stain_norm)
        print(f'\n{stain_shift_table(results)}wrote {md_path}')


if __name__ == '__main__':
    main()
