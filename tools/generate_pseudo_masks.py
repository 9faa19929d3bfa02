"""Turn a stage-1 CAM model's CAMs into stage-2 pseudo masks.

    python tools/generate_pseudo_masks.py CONFIG CHECKPOINT --out DIR \
        [--split train] [--oracle-labels] [--batch-size 8] \
        [--scales 1.0 0.75 1.25] [--no-flip] [--save-cams] [--force] \
        [--gt-dir DIR] [--fg-thresh T] [--thresh-mode fixed|adaptive] \
        [--cfg-options ...] [--launcher none|pytorch]

Writes ``DIR/<image name>.png`` (class ids, 255 = unsure) for the images of
``--split``, see :mod:`protoprompt_mm.apis.pseudo_masks`: of the training
dataset config with that split for the folder datasets (BCSS-WSSS,
LUAD-HistoSeg, synthetic), of the split's own dataloader for a manifest
(``HistoManifestDataset``), whose image paths, minus their extension, name
the masks; the manifest base's ``train_dataloader_pseudo`` reads them from
``--out <data_root>/pseudo_masks``. The training split is gated by its
image labels (of the file names, or of the manifest); val / test by the
model's predicted labels (``model.test_cfg.cls_thresh``), or, with
``--oracle-labels``, by the labels of their ground-truth masks, and the
scores then say "oracle". Where ground truth exists it prints and writes to
``DIR/pseudo_mask_metrics.json`` the mIoU over all GT tissue pixels
(unlabelled ones count as misses), the precision mIoU over the labelled
ones and the coverage, as fractions in [0, 1].

With ``--launcher pytorch`` (``torchrun``; gloo on CPU-only machines) every
rank handles every world_size-th image and the scores are summed over the
ranks.
"""
import argparse
import os

from mmengine.config import DictAction
from mmengine.dist import init_dist, is_main_process

from protoprompt_mm.apis import generate_pseudo_masks, pseudo_mask_report
from protoprompt_mm.datasets.transforms import THRESH_MODES
from protoprompt_mm.utils import init_cpu_process_group, load_config


def parse_args() -> argparse.Namespace:
    """Parse the command line."""
    parser = argparse.ArgumentParser(
        description='Generate pseudo masks from a stage-1 CAM model')
    parser.add_argument('config', help='stage-1 config file')
    parser.add_argument('checkpoint', help='stage-1 checkpoint')
    parser.add_argument('--out', required=True, help='output folder')
    parser.add_argument(
        '--split',
        default='train',
        choices=['train', 'val', 'test'],
        help='split to label: the training dataset config with that split '
        "(folder datasets) or the split's dataloader (manifests)")
    parser.add_argument(
        '--oracle-labels',
        action='store_true',
        help='val / test: gate by the ground-truth labels (an oracle)')
    parser.add_argument('--batch-size', type=int, default=8)
    parser.add_argument(
        '--scales',
        type=float,
        nargs='+',
        default=[1.0, 0.75, 1.25],
        help='test-time input scales averaged over')
    parser.add_argument(
        '--no-flip', action='store_true', help='no horizontal-flip TTA')
    parser.add_argument(
        '--save-cams',
        action='store_true',
        help='also write the float16 CAMs (N, H, W) as .npy')
    parser.add_argument(
        '--force',
        action='store_true',
        help='write into a non-empty --out (same names are overwritten)')
    parser.add_argument(
        '--gt-dir', help='ground-truth masks of the split, for scoring')
    parser.add_argument(
        '--fg-thresh', type=float, help='override pseudo_label_cfg')
    parser.add_argument(
        '--thresh-mode',
        choices=THRESH_MODES,
        help='override pseudo_label_cfg (adaptive: --fg-thresh is a '
        "fraction of each CAM's peak)")
    parser.add_argument(
        '--cfg-options',
        nargs='+',
        action=DictAction,
        help='override config keys, e.g. model.test_cfg.cls_thresh=0.4')
    parser.add_argument(
        '--launcher', choices=['none', 'pytorch'], default='none')
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)
    args = parser.parse_args()
    os.environ.setdefault('LOCAL_RANK', str(args.local_rank))
    if args.batch_size < 1:
        parser.error(f'--batch-size must be >= 1, got {args.batch_size}')
    if min(args.scales) <= 0:
        parser.error(f'--scales must be positive, got {args.scales}')
    if args.oracle_labels and args.split == 'train':
        parser.error('--oracle-labels applies to --split val / test: the '
                     'training split is gated by its image labels')
    return args


def main() -> None:
    args = parse_args()
    cfg = load_config(args.config, args.cfg_options)
    if args.launcher != 'none':
        dist_cfg = cfg.get('env_cfg', {}).get('dist_cfg', {})
        if not init_cpu_process_group(args.launcher,
                                      dist_cfg.get('backend', 'gloo')):
            init_dist(args.launcher, **dist_cfg)
    record = generate_pseudo_masks(
        cfg,
        args.checkpoint,
        args.out,
        split=args.split,
        oracle_labels=args.oracle_labels,
        batch_size=args.batch_size,
        scales=args.scales,
        flip=not args.no_flip,
        fg_thresh=args.fg_thresh,
        thresh_mode=args.thresh_mode,
        gt_dir=args.gt_dir,
        save_cams=args.save_cams,
        force=args.force)
    if is_main_process():
        print(f'\n{pseudo_mask_report(record, args.out)}')


if __name__ == '__main__':
    main()
