"""Speed and peak memory of a ProtoPrompt config against a baseline config.

    python tools/benchmark.py CONFIG --baseline BASELINE_CONFIG \
        [--size 224] [--batch 8] [--iters 10] [--warmup 2] \
        [--device cpu|cuda] [--threads T] [--num-prototypes K] \
        [--num-classes N] \
        [--pseudo-mask-config STAGE1_CONFIG] [--tta-scales 1.0 0.75 1.25] \
        [--no-tta-flip] [--breakdown] [--no-memory] [--json FILE] \
        [--cfg-options ...] [--baseline-cfg-options ...]

Both models have random weights and run on synthetic batches, timed
interleaved (A B, then B A, ...); prints the medians (p25-p75), the time
ratio ProtoPrompt / baseline and, unless ``--no-memory``, the step peak
memory. ``--breakdown`` times each component of a training step,
``--pseudo-mask-config`` the stage-1 pseudo-mask TTA. The figures are
described in :mod:`protoprompt_mm.benchmarks.model_comparison`.
"""
import argparse
import json
from typing import List, Optional

import torch
from mmengine.config import DictAction

from protoprompt_mm.benchmarks.comparison_report import format_report
from protoprompt_mm.benchmarks.model_comparison import run_benchmark


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    """Parse the command line."""
    parser = argparse.ArgumentParser(
        description='Time and memory of ProtoPrompt vs a baseline config')
    parser.add_argument(
        'config', help='ProtoPrompt (stage-2) config, or a stage-1 config')
    parser.add_argument(
        '--baseline', required=True,
        help='baseline config (e.g. no-prototypes)')
    parser.add_argument('--size', type=int, default=224, help='image side')
    parser.add_argument('--batch', type=int, default=8, help='batch size')
    parser.add_argument('--iters', type=int, default=10, help='timed iters')
    parser.add_argument(
        '--warmup', type=int, default=2, help='untimed iterations first')
    parser.add_argument('--device', choices=['cpu', 'cuda'], default='cpu')
    parser.add_argument(
        '--threads',
        type=int,
        help='torch CPU threads (default: torch\'s choice); on a shared '
        'machine use fewer threads than free cores: oversubscribed OpenMP '
        'threads slow every step down by an order of magnitude')
    parser.add_argument(
        '--num-prototypes', type=int, help='override num_prototypes (K)')
    parser.add_argument(
        '--num-classes', type=int, help='override num_classes (N)')
    parser.add_argument(
        '--pseudo-mask-config',
        help='stage-1 (CAMSegmentor) config: also time pseudo-mask TTA')
    parser.add_argument(
        '--tta-scales',
        type=float,
        nargs='+',
        default=[1.0, 0.75, 1.25],
        help='pseudo-mask test-time scales (tools/generate_pseudo_masks.py '
        'defaults)')
    parser.add_argument(
        '--no-tta-flip', action='store_true', help='no flipped TTA views')
    parser.add_argument(
        '--breakdown',
        action='store_true',
        help='also time each component of a training step')
    parser.add_argument(
        '--no-memory', action='store_true', help='skip the memory figures')
    parser.add_argument(
        '--cfg-options', nargs='+', action=DictAction,
        help='overrides of CONFIG, e.g. model.neck.embed_dim=64')
    parser.add_argument(
        '--baseline-cfg-options', nargs='+', action=DictAction,
        help='overrides of the baseline config')
    parser.add_argument('--json', help='also write the figures to this file')
    args = parser.parse_args(argv)
    for name in ('size', 'batch', 'iters', 'threads'):
        if getattr(args, name) is not None and getattr(args, name) < 1:
            parser.error(f'--{name} must be >= 1, got {getattr(args, name)}')
    if args.warmup < 0:
        parser.error(f'--warmup must be >= 0, got {args.warmup}')
    if args.device == 'cuda' and not torch.cuda.is_available():
        parser.error('--device cuda, but CUDA is not available')
    if min(args.tta_scales) <= 0:
        parser.error(f'--tta-scales must be positive, got {args.tta_scales}')
    return args


def main(argv: Optional[List[str]] = None) -> None:
    """Run the benchmark and print (and optionally save) the figures."""
    args = parse_args(argv)
    results = run_benchmark(
        args.config, args.baseline, size=args.size, batch=args.batch,
        iters=args.iters, warmup=args.warmup, device=args.device,
        threads=args.threads, num_prototypes=args.num_prototypes,
        num_classes=args.num_classes, cfg_options=args.cfg_options,
        baseline_cfg_options=args.baseline_cfg_options,
        memory=not args.no_memory, breakdown=args.breakdown,
        pseudo_mask_config=args.pseudo_mask_config,
        tta_scales=args.tta_scales, tta_flip=not args.no_tta_flip)
    print(format_report(results))
    if args.json:
        with open(args.json, 'w') as f:
            json.dump(results, f, indent=2)
        print(f'\nwrote {args.json}')


if __name__ == '__main__':
    main()
