"""Segment whole-slide images (or a folder of them) for QuPath.

    python tools/infer_slide.py CONFIG CHECKPOINT SLIDE_OR_FOLDER [...] \
        --out DIR [--mpp 0.25] [--model-mpp 0.25] [--tile 224] \
        [--overlap 32] [--batch-size 8] [--device cuda:0] \
        [--stain-norm REFERENCE] [--force] [--cfg-options ...]

    torchrun --nproc_per_node 4 tools/infer_slide.py ... --device cuda

Per slide, in ``--out``: ``<name>.tif`` (tiled pyramidal uint8 mask, class
ids, 255 = not tissue), ``<name>.geojson`` (QuPath annotations),
``<name>_overlay.png`` and ``<name>.json`` (areas, MPP, tiles, seconds);
see :mod:`protoprompt_mm.apis.slide_inference` and
:mod:`protoprompt_mm.apis.slide_segmentation`. Slides are read at the
model's training resolution: ``--model-mpp``, else the config's
``train_mpp``; ``--mpp`` gives the slides' own µm per pixel when their
metadata lacks it. A folder run skips slides whose outputs are complete
(``--force`` redoes them); under torchrun every rank takes its share of
the slides on its own GPU (``--device cuda`` becomes ``cuda:LOCAL_RANK``).
``--stain-norm`` normalises each slide's stains (one Macenko mapping per
slide) towards a reference image or the target a checkpoint carries.
"""
import argparse

from mmengine.config import DictAction

from protoprompt_mm.apis import (check_tiling, segment_slides,
                                 torchrun_placement)


def parse_args() -> argparse.Namespace:
    """Parse the command line."""
    parser = argparse.ArgumentParser(
        description='Whole-slide segmentation with QuPath outputs')
    parser.add_argument('config', help='stage-2 config')
    parser.add_argument('checkpoint', help='its checkpoint')
    parser.add_argument('slides', nargs='+',
                        help='slide files or folders of slides')
    parser.add_argument('--out', required=True, help='output folder')
    parser.add_argument('--mpp', type=float,
                        help="the slides' level-0 µm per pixel (overrides "
                        'their metadata)')
    parser.add_argument('--model-mpp', type=float,
                        help="µm per pixel of the training images (default: "
                        "the config's train_mpp)")
    parser.add_argument('--tile', type=int, default=224, help='tile side')
    parser.add_argument('--overlap', type=int, default=32,
                        help='pixels shared by tiles')
    parser.add_argument('--batch-size', type=int, default=8,
                        help='tiles per forward pass')
    parser.add_argument('--device', default='cpu',
                        help='cpu, cuda or cuda:N')
    parser.add_argument('--stain-norm', metavar='REFERENCE',
                        help='Macenko normalisation towards a reference '
                        'image or a checkpoint carrying a stain target')
    parser.add_argument('--force', action='store_true',
                        help='redo slides whose outputs exist')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override config keys')
    args = parser.parse_args()
    try:
        check_tiling(args.tile, args.overlap, args.batch_size)
    except ValueError as error:
        parser.error(f'--tile / --overlap / --batch-size: {error}')
    return args


def main() -> None:
    """Segment the slides this rank is given."""
    args = parse_args()
    rank, world_size, device = torchrun_placement(args.device)
    results = segment_slides(
        args.config, args.checkpoint, args.slides, args.out, device=device,
        rank=rank, world_size=world_size, force=args.force,
        model_mpp=args.model_mpp, slide_mpp=args.mpp, tile=args.tile,
        overlap=args.overlap, batch_size=args.batch_size,
        stain_norm=args.stain_norm, cfg_options=args.cfg_options)
    for slide, stats in results.items():
        if stats.get('skipped'):
            continue
        print(f'\n{slide}: {stats["tiles_segmented"]} tiles segmented, '
              f'{stats["tiles_skipped"]} skipped, tissue '
              f'{stats["tissue_area_mm2"]:.3f} mm², {stats["seconds"]} s')
    print(f'rank {rank}/{world_size}: {len(results)} slide(s) in {args.out}')


if __name__ == '__main__':
    main()
