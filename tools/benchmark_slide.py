"""Whole-slide throughput and peak RSS against the model's own forward pass.

    python tools/benchmark_slide.py CONFIG [--checkpoint CKPT] \
        [--sides 2048x2048 4096x4096] [--tile 224] [--overlap 32] \
        [--batch-size 8] [--device cpu] --work-dir DIR [--json OUT]

Writes synthetic slides (mostly tissue, glass around it) into
``DIR/slides``, segments each with ``infer_slide`` and prints a markdown
table: slide tiles/s, the forward pass's tiles/s on the same tiles, their
ratio and the peak RSS of a fresh process per slide; see
:mod:`protoprompt_mm.benchmarks.slide_throughput`. Without
``--checkpoint`` the model has random weights (the figures do not depend
on the values).
"""
import argparse
import json
from typing import List, Optional, Tuple

from protoprompt_mm.benchmarks.slide_throughput import (
    format_slide_benchmark, run_slide_benchmark)


def parse_side(text: str) -> Tuple[int, int]:
    """``WIDTHxHEIGHT`` -> (width, height)."""
    try:
        width, height = (int(value) for value in text.split('x'))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f'expected WIDTHxHEIGHT in pixels, got {text!r}') from None
    return width, height


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    """Parse the command line."""
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('config', help='segmentor config')
    parser.add_argument('--checkpoint', help='weights (default: random)')
    parser.add_argument('--sides', nargs='+', type=parse_side,
                        default=[(2048, 2048), (4096, 4096)],
                        help='slide sizes, WIDTHxHEIGHT level-0 pixels')
    parser.add_argument('--tile', type=int, default=224, help='tile side')
    parser.add_argument('--overlap', type=int, default=32,
                        help='pixels shared by tiles')
    parser.add_argument('--batch-size', type=int, default=8,
                        help='tiles per forward pass')
    parser.add_argument('--device', default='cpu', help='cpu or cuda:N')
    parser.add_argument('--work-dir', required=True,
                        help='folder of the slides and outputs')
    parser.add_argument('--json', help='also write the results here')
    return parser.parse_args(argv)


def main(argv: Optional[List[str]] = None) -> dict:
    """Run the benchmark, print the table, return the results."""
    args = parse_args(argv)
    results = run_slide_benchmark(
        args.config, args.checkpoint, sides=args.sides, tile=args.tile,
        overlap=args.overlap, batch_size=args.batch_size,
        device=args.device, work_dir=args.work_dir)
    print(format_slide_benchmark(results))
    if args.json:
        with open(args.json, 'w') as f:
            json.dump(results, f, indent=2)
    return results


if __name__ == '__main__':
    main()
