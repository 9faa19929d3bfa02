"""Segment a large H&E image (a slide region) tile by tile.

    python tools/infer_region.py CONFIG CHECKPOINT IMAGE \
        --out-mask MASK.png --out-overlay OVERLAY.png \
        [--tile 224] [--overlap 32] [--batch 8] [--device cpu] \
        [--canvas-dtype float32|float16] [--background-thresh 220] \
        [--alpha 0.5] [--stain-norm REFERENCE] [--cfg-options ...]

Overlapping tiles are blended by averaging their softmax on a CPU canvas
(see :mod:`protoprompt_mm.apis.region_inference`; memory is the image plus
``N * H * W * 4`` bytes in float32, half with ``--canvas-dtype float16``,
plus one batch of tiles). ``--out-mask`` is a uint8 palette PNG of class
indices, ``--out-overlay`` the image with the class colours blended over
it; see :mod:`protoprompt_mm.apis.region_segmentation` (with
``--background-thresh``, white glass gets the background index, white).

``--stain-norm`` first normalises the image's stains (Macenko) towards a
reference image (e.g. a training patch of typical colour) or towards the
stain target a checkpoint carries (that of its training images).
"""
import argparse

from mmengine.config import DictAction

from protoprompt_mm.apis import CANVAS_DTYPES, check_tiling, segment_region


def parse_args() -> argparse.Namespace:
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
    args = parser.parse_args()
    try:
        check_tiling(args.tile, args.overlap, args.batch)
    except ValueError as error:
        parser.error(f'--tile / --overlap / --batch: {error}')
    return args


def main() -> None:
    """Segment the image and write the mask and the overlay."""
    args = parse_args()
    stats = segment_region(
        args.config,
        args.checkpoint,
        args.image,
        args.out_mask,
        args.out_overlay,
        tile=args.tile,
        overlap=args.overlap,
        batch_size=args.batch,
        device=args.device,
        canvas_dtype=CANVAS_DTYPES[args.canvas_dtype],
        background_thresh=args.background_thresh,
        alpha=args.alpha,
        stain_norm=args.stain_norm,
        cfg_options=args.cfg_options)
    shares = ', '.join(f'{name} {100 * share:.1f}%'
                       for name, share in stats['class_shares'].items())
    print(f'\n{args.image}: {stats["width"]}x{stats["height"]} in '
          f'{stats["seconds"]:.1f} s; {shares}\n'
          f'wrote {args.out_mask} and {args.out_overlay}')


if __name__ == '__main__':
    main()
