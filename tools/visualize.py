"""Overlay panels of a few test patches.

    python tools/visualize.py CONFIG CHECKPOINT --out DIR [--num 4]
        [--split test] [--oracle-labels]
        [--cam-config STAGE1_CONFIG --cam-checkpoint STAGE1_CKPT]

For each patch it writes ``<name>_panel.png``: image | CAM per class |
pseudo-mask | prediction | ground truth, and, when CONFIG's model has a
``PrototypeBank`` neck, ``<name>_prototypes.png``: the prototype-similarity
map of every class. The prediction | ground-truth overlay of mmseg's
``SegLocalVisualizer`` goes to ``<name>_seg.png``. CONFIG may itself be a
stage-1 (CAM) config; otherwise the CAM columns need
``--cam-config``/``--cam-checkpoint``.

The CAM columns are the stage-1 CAMs gated, as by
``tools/generate_pseudo_masks.py`` on val / test, by the stage-1 model's
predicted image labels (``test_cfg.cls_thresh``); the pseudo-mask is them
thresholded with its ``pseudo_label_cfg``. With ``--oracle-labels`` they
are gated by the labels of the ground-truth masks (an oracle): their titles
say "oracle" and the panel is ``<name>_oracle_panel.png`` (and, as a CAM
CONFIG's prediction is gated the same way, its ``<name>_oracle_seg.png``).
"""
import argparse
import os
import os.path as osp
from typing import List, Optional

import cv2
import numpy as np
import torch
from mmengine.config import DictAction
from mmseg.models.utils import resize
from mmseg.registry import DATASETS, VISUALIZERS

from protoprompt_mm.apis import (gating_mode, init_segmentor,
                                 pseudo_label_params, pseudo_mask_of)
from protoprompt_mm.models.necks import PromptedFeatures
from protoprompt_mm.models.segmentors import CAMSegmentor
from protoprompt_mm.utils import load_config
from protoprompt_mm.visualization import (colorize_labels, heatmap_overlay,
                                          make_panel)


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description='Draw overlay panels')
    parser.add_argument('config')
    parser.add_argument('checkpoint')
    parser.add_argument('--out', required=True, help='output folder')
    parser.add_argument('--num', type=int, default=4, help='patches to draw')
    parser.add_argument('--split', choices=['val', 'test'], default='test')
    parser.add_argument(
        '--oracle-labels', action='store_true',
        help='gate the CAMs by the ground-truth labels (an oracle)')
    parser.add_argument('--cam-config', help='stage-1 config (CAM columns)')
    parser.add_argument('--cam-checkpoint', help='stage-1 checkpoint')
    parser.add_argument('--device', default='cpu')
    parser.add_argument(
        '--cfg-options', nargs='+', action=DictAction,
        help='overrides applied to CONFIG and --cam-config alike')
    args = parser.parse_args(argv)
    if (args.cam_config is None) != (args.cam_checkpoint is None):
        parser.error('--cam-config and --cam-checkpoint go together')
    return args


def to_rgb(sample_inputs: torch.Tensor) -> np.ndarray:
    """The packed (3, H, W) BGR uint8 input as an RGB array."""
    return np.ascontiguousarray(
        sample_inputs.permute(1, 2, 0).numpy()[..., ::-1])


@torch.no_grad()
def main(argv: Optional[List[str]] = None) -> None:
    args = parse_args(argv)
    cfg = load_config(args.config, args.cfg_options)
    model = init_segmentor(cfg, args.checkpoint, args.device)
    if isinstance(model, CAMSegmentor):
        cam_cfg, cam_model = cfg, model
    elif args.cam_config is not None:
        cam_cfg = load_config(args.cam_config, args.cfg_options)
        cam_model = init_segmentor(cam_cfg, args.cam_checkpoint, args.device)
    elif args.oracle_labels:
        raise ValueError(f'--oracle-labels gates the CAM columns, but '
                         f'{args.config} is no CAM config and no '
                         '--cam-config is given')
    else:
        cam_cfg = cam_model = None
    oracle = gating_mode(args.split, args.oracle_labels) == 'oracle'
    # Titles and file names of what the oracle gating touched.
    tag, suffix = (' (oracle)', '_oracle') if oracle else ('', '')
    pred_tag, seg_suffix = (tag, suffix) if cam_model is model else ('', '')
    if cam_model is not None:
        cam_model.test_cfg['use_gt_labels'] = oracle
        params = pseudo_label_params(cam_cfg)

    dataset = DATASETS.build(cfg[f'{args.split}_dataloader'].dataset)
    classes = dataset.metainfo['classes']
    palette = dataset.metainfo['palette']
    visualizer = VISUALIZERS.build(
        dict(type='SegLocalVisualizer', name='protoprompt_visualize',
             alpha=0.6))
    visualizer.dataset_meta = dict(classes=classes, palette=palette)
    os.makedirs(args.out, exist_ok=True)

    for index in range(min(args.num, len(dataset))):
        packed = dataset[index]
        data = dict(inputs=[packed['inputs']],
                    data_samples=[packed['data_samples']])
        sample = packed['data_samples']
        name = osp.splitext(osp.basename(sample.img_path))[0]
        image = to_rgb(packed['inputs'])
        size = image.shape[:2]
        gt = sample.gt_sem_seg.data[0].numpy()
        result = model.test_step(data)[0]
        pred = result.pred_sem_seg.data[0].cpu().numpy()

        tiles, titles = [image], ['image']
        if cam_model is not None:
            cam_result = result if cam_model is model else \
                cam_model.test_step(data)[0]
            cams, pseudo = pseudo_mask_of(cam_result, params)
            tiles += [heatmap_overlay(image, cam) for cam in cams]
            titles += [f'CAM {c}{tag}' for c in classes]
            tiles.append(colorize_labels(pseudo, palette))
            titles.append(f'pseudo-mask{tag}')
        tiles += [colorize_labels(pred, palette),
                  colorize_labels(gt, palette)]
        titles += [f'prediction{pred_tag}', 'ground truth']
        cv2.imwrite(osp.join(args.out, f'{name}{suffix}_panel.png'),
                    cv2.cvtColor(make_panel(tiles, titles), cv2.COLOR_RGB2BGR))

        feats = model.extract_feat(
            model.data_preprocessor(data, False)['inputs'])
        if isinstance(feats, PromptedFeatures):
            sims = resize(feats.similarity, size=size, mode='bilinear')[0]
            sims = ((sims + 1) / 2).cpu().numpy()  # cosine -> [0, 1]
            panel = make_panel([image] + [heatmap_overlay(image, s)
                                          for s in sims],
                               ['image'] + [f'proto {c}' for c in classes])
            cv2.imwrite(osp.join(args.out, f'{name}_prototypes.png'),
                        cv2.cvtColor(panel, cv2.COLOR_RGB2BGR))
        visualizer.add_datasample(
            name, image, result, draw_gt=True, draw_pred=True, show=False,
            out_file=osp.join(args.out, f'{name}{seg_suffix}_seg.png'))
    print(f'Wrote panels of {min(args.num, len(dataset))} patches to '
          f'{args.out}')


if __name__ == '__main__':
    main()
