"""Segment a large H&E image (a slide region) tile by tile.

    python tools/infer_region.py CONFIG CHECKPOINT IMAGE \
        --out-mask MASK.png --out-overlay OVERLAY.png \
        [--tile 224] [--overlap 32] [--batch 8] [--device cpu] \
        [--canvas-dtype float32|float16] [--background-thresh 220] \
        [--alpha 0.5] [--stain-norm REFERENCE] [--cfg-options ...]

Overlapping tiles are blended by averaging their softmax on a CPU canvas
(see :mod:`protoprompt_mm.apis.region_inference`; memory is the image plus
``N * H * W * 4`` bytes in float32, half with ``--canvas-dtype float16``,
plus one batch of tiles). Outputs:

* ``--out-mask``: uint8 palette PNG of class indices ``0..N-1``; with
  ``--background-thresh``, pixels brighter than that grey level (white
  glass) get index ``N`` (background, white), as in the pseudo masks;
* ``--out-overlay``: the image with the class colours blended over it.

``--stain-norm`` first normalises the image's stains (Macenko) towards a
reference image (e.g. a training patch of typical colour) or towards the
stain target a checkpoint carries (that of its training images).

Colours: the checkpoint's ``meta['dataset_meta']`` palette, else that of the
config's test dataset.
"""
import argparse
import time
from typing import List, Optional

import cv2
import mmcv
import numpy as np
from mmengine.config import DictAction

from protoprompt_mm.apis import (CANVAS_DTYPES, background_mask, infer_region,
                                 init_segmentor, label_map)
from protoprompt_mm.datasets.stain import build_stain_normalizer
from protoprompt_mm.datasets.synthetic_histo import save_palette_mask
from protoprompt_mm.visualization import colorize_labels
from protoprompt_mm.visualization.overlays import BACKGROUND_COLOR


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    """Parse the command line."""
    parser = argparse.ArgumentParser(
        description='Tiled segmentation of a large H&E image')
    parser.add_argument('config', help='stage-2 config')
    parser.add_argument('checkpoint', help='its checkpoint')
    parser.add_argument('image', help='H&E image file (any size)')
    parser.add_argument('--out-mask', required=True, help='palette mask PNG')
    parser.add_argument(
        '--out-overlay', required=True, help='colour overlay image')
    parser.add_argument('--tile', type=int, default=224, help='tile side')
    parser.add_argument(
        '--overlap', type=int, default=32, help='pixels shared by tiles')
    parser.add_argument('--batch', type=int, default=8, help='tiles per pass')
    parser.add_argument('--device', default='cpu', help='e.g. cpu, cuda:0')
    parser.add_argument(
        '--canvas-dtype', choices=sorted(CANVAS_DTYPES), default='float32')
    parser.add_argument(
        '--background-thresh',
        type=float,
        help='grey level above which a pixel is background (e.g. 220); '
        'default: no background detection')
    parser.add_argument(
        '--alpha', type=float, default=0.5, help='opacity of the colours')
    parser.add_argument(
        '--stain-norm',
        metavar='REFERENCE',
        help='Macenko stain normalisation first, towards a reference image '
        'or the stain target a checkpoint carries')
    parser.add_argument(
        '--cfg-options', nargs='+', action=DictAction,
        help='override config keys')
    args = parser.parse_args(argv)
    if args.tile < 1 or not 0 <= args.overlap < args.tile:
        parser.error(f'need --tile >= 1 and 0 <= --overlap < --tile, got '
                     f'{args.tile} / {args.overlap}')
    if args.batch < 1:
        parser.error(f'--batch must be >= 1, got {args.batch}')
    if not 0 <= args.alpha <= 1:
        parser.error(f'--alpha must be in [0, 1], got {args.alpha}')
    return args


def main(argv: Optional[List[str]] = None) -> None:
    """Segment the image and write the mask and the overlay."""
    args = parse_args(argv)
    image = mmcv.imread(args.image)  # BGR, like LoadImageFromFile
    if image is None:
        raise FileNotFoundError(f'{args.image}: not a readable image')
    normalizer = None if args.stain_norm is None else \
        build_stain_normalizer(args.stain_norm)
    model = init_segmentor(args.config, args.checkpoint, args.device,
                           args.cfg_options)
    if model.dataset_meta is None:
        raise KeyError(
            f"{args.checkpoint}: no meta['dataset_meta'] and {args.config}: "
            'no test_dataloader.dataset / val_dataloader.dataset with '
            'classes and a palette; cannot colour the classes')
    start = time.perf_counter()
    probs = infer_region(
        model,
        image,
        tile=args.tile,
        overlap=args.overlap,
        batch_size=args.batch,
        canvas_dtype=CANVAS_DTYPES[args.canvas_dtype],
        progress=True,
        stain_normalizer=normalizer)
    num_classes = probs.shape[0]
    palette = model.dataset_meta['palette']
    if len(palette) < num_classes:
        raise ValueError(f'{args.checkpoint} / {args.config}: palette has '
                         f'{len(palette)} colours for {num_classes} classes')
    labels = label_map(probs)
    if args.background_thresh is not None:
        labels[background_mask(image, args.background_thresh)] = num_classes
    palette = [list(colour) for colour in palette[:num_classes]]
    save_palette_mask(args.out_mask, labels, [*palette, BACKGROUND_COLOR])
    colours = colorize_labels(labels, palette, background_index=num_classes)
    overlay = cv2.addWeighted(colours, args.alpha, mmcv.bgr2rgb(image),
                              1 - args.alpha, 0)
    mmcv.imwrite(mmcv.rgb2bgr(overlay), args.out_overlay)
    counts = np.bincount(labels.ravel(), minlength=num_classes + 1)
    names = [*model.dataset_meta['classes'][:num_classes], 'background']
    shares = ', '.join(f'{name} {100 * n / labels.size:.1f}%'
                       for name, n in zip(names, counts) if n)
    print(f'\n{args.image}: {image.shape[1]}x{image.shape[0]} in '
          f'{time.perf_counter() - start:.1f} s; {shares}\n'
          f'wrote {args.out_mask} and {args.out_overlay}')


if __name__ == '__main__':
    main()
