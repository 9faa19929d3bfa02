"""Generate the synthetic H&E data set in the BCSS-WSSS layout.

Example::

    python tools/make_synthetic_histo.py --out data/synthetic_histo --seed 0

Writes ``training/``, ``val/{img,mask}``, ``test/{img,mask}`` and the
hidden ``training_gt/`` masks (only for scoring pseudo masks); see
:mod:`protoprompt_mm.datasets.synthetic_histo`.
"""
import argparse
import time

from protoprompt_mm.datasets.synthetic_histo import generate_synthetic_histo


def parse_args() -> argparse.Namespace:
    """Parse the command line."""
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--out', required=True, help='output folder')
    parser.add_argument('--seed', type=int, required=True, help='seed >= 0')
    parser.add_argument('--num-train', type=int, default=400)
    parser.add_argument('--num-val', type=int, default=60)
    parser.add_argument('--num-test', type=int, default=60)
    parser.add_argument('--size', type=int, default=224, help='patch side')
    parser.add_argument(
        '--difficulty',
        choices=['standard', 'hard'],
        default='standard',
        help='hard: per-slide stains, shared textures, small regions, soft '
        'borders')
    parser.add_argument(
        '--workers',
        type=int,
        default=1,
        help='processes; the output does not depend on it')
    return parser.parse_args()


def main() -> None:
    """Generate the data set and print what was written."""
    args = parse_args()
    start = time.perf_counter()
    counts = generate_synthetic_histo(args.out, args.seed, args.num_train,
                                      args.num_val, args.num_test, args.size,
                                      args.workers, args.difficulty)
    print(f'Wrote {counts} {args.difficulty} patches of {args.size}x'
          f'{args.size} to {args.out} in {time.perf_counter() - start:.1f} s')


if __name__ == '__main__':
    main()
