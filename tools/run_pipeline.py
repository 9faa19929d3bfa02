"""The whole WSSS pipeline in one command, through the project's own tools.

    python tools/run_pipeline.py --data-root DIR --work-dir W \
        [--preset demo|ablation|stain|bcss-wsss[-pbip]|luad-histoseg[-pbip]] \
        [--variants full ...] [--seeds 0 1 2]

Synthetic data (synthetic presets, when DIR is missing) -> per seed: stage-1
CAM training, test and pseudo-masks -> per variant: stage-2 training on
them, test on the clean and re-stained test split -> overlay pictures ->
``W/results.json`` (fractions in [0, 1]; mean and sample std over the
seeds) and ``W/results.md`` (percentages), under both protocols of
``TissueIoUMetric``. Outputs of seed s are in ``W/seed_<s>/``. A step that
finished before with the same command, after the same runs of the steps it
depends on, is reused (marker ``W/.steps/<name>.json``), so an interrupted
run finishes what is missing when started again; a failed step stops the
run with the step named (exit code 1). The steps are those of
:class:`protoprompt_mm.apis.Pipeline`.
"""
import argparse
import sys
from typing import List, Optional

from protoprompt_mm.apis import PRESETS, PipelineError, run_pipeline


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description='Stage 1 -> pseudo-masks -> stage 2 -> test, one command')
    parser.add_argument('--data-root', required=True,
                        help='dataset in the BCSS-WSSS / LUAD-HistoSeg layout')
    parser.add_argument('--work-dir', required=True)
    parser.add_argument('--preset', choices=sorted(PRESETS), default='demo')
    parser.add_argument(
        '--variants', nargs='+',
        help='variants (names of the preset, or stage-2 config paths, which '
        "then start from the stage 1 of the preset's full variant)")
    parser.add_argument('--seeds', type=int, nargs='+', default=[0],
                        help='training seeds; each runs the whole chain')
    parser.add_argument('--data-seed', type=int, default=0,
                        help='seed of the generated synthetic data')
    parser.add_argument('--stage1-options', nargs='*', default=[],
                        action='extend',
                        help='extra --cfg-options for stage 1 (k=v ...)')
    parser.add_argument('--stage2-options', nargs='*', default=[],
                        action='extend',
                        help='extra --cfg-options for every stage-2 variant')
    parser.add_argument(
        '--pseudo-mask-args', default='',
        help='extra arguments of generate_pseudo_masks.py, one string, e.g. '
        '"--scales 1.0 --no-flip --fg-thresh 0.2"')
    parser.add_argument('--synthetic', nargs='*', default=[],
                        action='extend',
                        help='generator settings when data is generated, '
                        'e.g. num_train=200 size=160 difficulty=hard (a '
                        'repeated flag adds to the list; so do --stage*-'
                        'options)')
    parser.add_argument(
        '--stain-norm', action='store_true',
        help='also test the final models on the stain-shifted test split '
        'Macenko-normalised towards the stain their checkpoints carry')
    parser.add_argument('--num-visualize', type=int, default=4,
                        help='test patches drawn as overlay panels')
    args = parser.parse_args(argv)
    if len(set(args.seeds)) != len(args.seeds):
        parser.error(f'--seeds must be distinct, got {args.seeds}')
    return args


def main(argv: Optional[List[str]] = None) -> int:
    args = parse_args(argv)
    try:
        run_pipeline(**vars(args))
    except PipelineError as err:
        print(f'[pipeline] {err}', file=sys.stderr, flush=True)
        return 1
    return 0


if __name__ == '__main__':
    sys.exit(main())
