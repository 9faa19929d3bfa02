"""Overlay panels of a few test patches.

    python tools/visualize.py CONFIG CHECKPOINT --out DIR [--num 4]
        [--split test] [--oracle-labels]
        [--cam-config STAGE1_CONFIG --cam-checkpoint STAGE1_CKPT]

For each patch it writes ``<name>_panel.png``: image | CAM per class |
pseudo-mask | prediction | ground truth, and, when CONFIG's model has a
``PrototypeBank`` neck, ``<name>_prototypes.png``: the prototype-similarity
map of every class. The prediction | ground-truth overlay of mmseg's
``SegLocalVisualizer`` goes to ``<name>_seg.png``. CONFIG may itself be a
stage-1 (CAM) config; otherwise the CAM columns need
``--cam-config``/``--cam-checkpoint``.

The CAM columns are the stage-1 CAMs gated, as by
``tools/generate_pseudo_masks.py`` on val / test, by the stage-1 model's
predicted image labels (``test_cfg.cls_thresh``); the pseudo-mask is them
thresholded with its ``pseudo_label_cfg``. With ``--oracle-labels`` they
are gated by the labels of the ground-truth masks (an oracle): their titles
say "oracle" and the panel is ``<name>_oracle_panel.png`` (and, as a CAM
CONFIG's prediction is gated the same way, its ``<name>_oracle_seg.png``).
See :mod:`protoprompt_mm.apis.sample_panels`.
"""
import argparse

from mmengine.config import DictAction

from protoprompt_mm.apis import draw_sample_panels
from protoprompt_mm.utils import load_config


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description='Draw overlay panels')
    parser.add_argument('config')
    parser.add_argument('checkpoint')
    parser.add_argument('--out', required=True, help='output folder')
    parser.add_argument('--num', type=int, default=4, help='patches to draw')
    parser.add_argument('--split', choices=['val', 'test'], default='test')
    parser.add_argument(
        '--oracle-labels', action='store_true',
        help='gate the CAMs by the ground-truth labels (an oracle)')
    parser.add_argument('--cam-config', help='stage-1 config (CAM columns)')
    parser.add_argument('--cam-checkpoint', help='stage-1 checkpoint')
    parser.add_argument('--device', default='cpu')
    parser.add_argument(
        '--cfg-options', nargs='+', action=DictAction,
        help='overrides applied to CONFIG and --cam-config alike')
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    cam_cfg = None if args.cam_config is None else \
        load_config(args.cam_config, args.cfg_options)
    count = draw_sample_panels(
        load_config(args.config, args.cfg_options), args.checkpoint,
        args.out, num=args.num, split=args.split,
        oracle_labels=args.oracle_labels, cam_cfg=cam_cfg,
        cam_checkpoint=args.cam_checkpoint, device=args.device)
    print(f'Wrote panels of {count} patches to {args.out}')


if __name__ == '__main__':
    main()
