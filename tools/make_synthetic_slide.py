"""Write a synthetic whole slide (pyramidal TIFF) to try the slide tools on.

Example::

    python tools/make_synthetic_slide.py --out data/synthetic_slide.tif \
        --size 4096x3072 --seed 0

White glass with six blobs of the synthetic H&E textures, as a tiled,
zlib-compressed pyramid (levels 1, 4, 16) that OpenSlide opens, with its
µm per pixel in the resolution tags; see
:mod:`protoprompt_mm.datasets.synthetic_slide`.
"""
import argparse

from protoprompt_mm.datasets.synthetic_slide import (synthetic_slide,
                                                     write_pyramidal_tiff)


def parse_args() -> argparse.Namespace:
    """Parse the command line."""
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--out', required=True, help='output .tif')
    parser.add_argument('--size', default='4096x3072',
                        help='WIDTHxHEIGHT in pixels')
    parser.add_argument('--mpp', type=float, default=0.25,
                        help='µm per pixel written into the file')
    parser.add_argument('--seed', type=int, default=0)
    args = parser.parse_args()
    try:
        args.width, args.height = (int(v) for v in args.size.split('x'))
    except ValueError:
        parser.error(f'--size must be WIDTHxHEIGHT, got {args.size!r}')
    return args


def blob_boxes(width: int, height: int) -> list:
    """A 3 x 2 grid of blob boxes, each filling most of its cell."""
    cell_w, cell_h = width // 3, height // 2
    return [(col * cell_w + cell_w // 10, row * cell_h + cell_h // 10,
             cell_w * 4 // 5, cell_h * 4 // 5)
            for row in range(2) for col in range(3)]


def main() -> None:
    """Draw the slide and write it."""
    args = parse_args()
    rgb, tissue = synthetic_slide(args.height, args.width, args.seed,
                                  blob_boxes(args.width, args.height))
    write_pyramidal_tiff(args.out, rgb, args.mpp, levels=(1, 4, 16))
    print(f'Wrote {args.out}: {args.width}x{args.height} at {args.mpp} µm/px, '
          f'{100 * tissue.mean():.1f}% tissue')


if __name__ == '__main__':
    main()
