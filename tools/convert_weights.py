"""Convert a published backbone checkpoint into our backbones' keys.

The result is what a config's ``pretrained = '...'`` loads (see
:mod:`protoprompt_mm.utils.weight_conversion` for the layouts). With
``--config`` the converted keys must fill that config's backbone exactly,
else nothing is written.

Example::

    python tools/convert_weights.py pretrain/mit_b1.pth \
        pretrain/mit_b1_mmseg.pth --from mit \
        --config configs/protoprompt/stage1_protocam_mit-b1_bcss-wsss.py
"""
import argparse

from mmengine.logging import print_log

from protoprompt_mm.utils.weight_conversion import (SOURCE_LAYOUTS,
                                                    config_backbone,
                                                    convert_checkpoint)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description='Convert backbone weights for `pretrained = DST`')
    parser.add_argument('src', help='the downloaded checkpoint')
    parser.add_argument('dst', help='the converted checkpoint to write')
    parser.add_argument(
        '--from',
        dest='layout',
        required=True,
        choices=SOURCE_LAYOUTS,
        help='layout of SRC: torchvision-resnet (torchvision resnet*), mit '
        '(SegFormer mit_b*.pth), timm-mit (segformer.* keys of the model '
        'hubs), mmpretrain (an mmpretrain classifier)')
    parser.add_argument(
        '--config',
        help='check that the result fills the backbone of this config')
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    backbone = config_backbone(args.config) if args.config else None
    state_dict = convert_checkpoint(args.src, args.dst, args.layout, backbone)
    checked = f', checked against {args.config}' if args.config else ''
    print_log(
        f'Wrote {len(state_dict)} tensors ({args.layout} -> our keys) to '
        f'{args.dst}{checked}',
        logger='current')


if __name__ == '__main__':
    main()
