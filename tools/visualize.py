"""Overlay panels of a few test patches.

    python tools/visualize.py CONFIG CHECKPOINT --out DIR [--num 4]
        [--cam-config STAGE1_CONFIG --cam-checkpoint STAGE1_CKPT]

For each patch it writes ``<name>_panel.png``: image | CAM per class |
pseudo-mask (the stage-1 CAMs thresholded as for training) | prediction |
ground truth, and, when CONFIG's model has a ``PrototypeBank`` neck,
``<name>_prototypes.png``: the prototype-similarity map of every class. The
prediction | ground-truth overlay of mmseg's ``SegLocalVisualizer`` goes to
``<name>_seg.png``. CONFIG may itself be a stage-1 (CAM) config; otherwise
the CAM columns need ``--cam-config``/``--cam-checkpoint``.
"""
import argparse
import os
import os.path as osp
from typing import List, Optional

import cv2
import numpy as np
import torch
from mmengine.config import DictAction
from mmengine.registry import init_default_scope
from mmengine.runner import load_checkpoint
from mmseg.models.utils import resize
from mmseg.registry import DATASETS, MODELS, VISUALIZERS

from protoprompt_mm.datasets.transforms import cams_to_pseudo_label
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


def build_model(cfg, checkpoint: str, device: str) -> torch.nn.Module:
    model = MODELS.build(cfg.model)
    load_checkpoint(model, checkpoint, map_location='cpu')
    return model.to(device).eval()


def to_rgb(sample_inputs: torch.Tensor) -> np.ndarray:
    """The packed (3, H, W) BGR uint8 input as an RGB array."""
    return np.ascontiguousarray(
        sample_inputs.permute(1, 2, 0).numpy()[..., ::-1])


@torch.no_grad()
def main(argv: Optional[List[str]] = None) -> None:
    args = parse_args(argv)
    cfg = load_config(args.config, args.cfg_options)
    init_default_scope(cfg.get('default_scope', 'mmseg'))
    model = build_model(cfg, args.checkpoint, args.device)
    if isinstance(model, CAMSegmentor):
        cam_cfg, cam_model = cfg, model
    elif args.cam_config is not None:
        cam_cfg = load_config(args.cam_config, args.cfg_options)
        cam_model = build_model(cam_cfg, args.cam_checkpoint, args.device)
    else:
        cam_cfg = cam_model = None

    dataset = DATASETS.build(cfg[f'{args.split}_dataloader'].dataset)
    classes = dataset.metainfo['classes']
    palette = dataset.metainfo['palette']
    num_classes = len(classes)
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
            batch = cam_model.data_preprocessor(data, False)
            cams = cam_model.inference(batch['inputs'])[0]
            cams = resize(cams, size=size, mode='bilinear')[0].cpu().numpy()
            tiles += [heatmap_overlay(image, cam) for cam in cams]
            titles += [f'CAM {c}' for c in classes]
            pseudo = cams_to_pseudo_label(cams, np.asarray(sample.img_labels),
                                          **cam_cfg.pseudo_label_cfg)
            tiles.append(colorize_labels(pseudo, palette,
                                         background_index=num_classes))
            titles.append('pseudo-mask')
        tiles += [colorize_labels(pred, palette),
                  colorize_labels(gt, palette)]
        titles += ['prediction', 'ground truth']
        cv2.imwrite(osp.join(args.out, f'{name}_panel.png'),
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
            out_file=osp.join(args.out, f'{name}_seg.png'))
    print(f'Wrote panels of {min(args.num, len(dataset))} patches to '
          f'{args.out}')


if __name__ == '__main__':
    main()
