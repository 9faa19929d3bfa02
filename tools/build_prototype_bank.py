"""Build k-means prototypes of a config's PrototypeBank and save them.

The written file (``{'prototypes': (N, K, D), 'classes': [...], 'meta':
{...}}``) is what ``PrototypeBank(init_prototypes=FILE)`` loads. The image
bank and the settings are those of ``PrototypeInitHook`` (same code): the
config's ``PrototypeInitHook`` entry in ``custom_hooks`` when present, its
defaults otherwise, overridden by the options below. The images are
embedded by the config's model (with CHECKPOINT loaded when given); the
hook's ``encoder`` setting is not used here. See
:func:`protoprompt_mm.apis.build_prototype_bank_from_config`.

Example::

    python tools/build_prototype_bank.py configs/stage1.py \
        work_dirs/stage1/iter_4000.pth --out work_dirs/prototypes.pth
"""
import argparse
from typing import List, Optional

import torch
from mmengine.config import DictAction
from mmengine.logging import print_log

from protoprompt_mm.apis import (build_prototype_bank_from_config,
                                 save_prototype_file)


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description='Build PrototypeBank prototypes by k-means over '
        'single-label training images')
    parser.add_argument('config', help='config file with a PrototypeBank')
    parser.add_argument(
        'checkpoint',
        nargs='?',
        help='optional local checkpoint to embed with')
    parser.add_argument('--out', required=True, help='output .pth file')
    parser.add_argument(
        '--max-images-per-class',
        type=int,
        help='cap of single-label images per class')
    parser.add_argument('--num-iters', type=int, help='k-means iterations')
    parser.add_argument('--seed', type=int, help='k-means seed')
    parser.add_argument(
        '--tissue-threshold',
        type=float,
        help='white level of the tissue mask (>= 255: every pixel)')
    parser.add_argument(
        '--device',
        default='cuda' if torch.cuda.is_available() else 'cpu',
        help='device that embeds the images')
    parser.add_argument(
        '--cfg-options',
        nargs='+',
        action=DictAction,
        help='override config keys, e.g. train_dataloader.dataset.'
        'data_root=data/bcss')
    return parser.parse_args(argv)


def main(argv: Optional[List[str]] = None) -> None:
    args = parse_args(argv)
    record = build_prototype_bank_from_config(
        args.config,
        args.checkpoint,
        device=args.device,
        cfg_options=args.cfg_options,
        max_images_per_class=args.max_images_per_class,
        num_iters=args.num_iters,
        seed=args.seed,
        tissue_threshold=args.tissue_threshold)
    save_prototype_file(args.out, record)
    print_log(
        f"Saved prototypes {tuple(record['prototypes'].shape)} of classes "
        f"{record['classes']} to {args.out}",
        logger='current')


if __name__ == '__main__':
    main()
