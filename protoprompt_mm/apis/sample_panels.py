"""Overlay panels of a few val / test patches (what ``tools/visualize.py``
draws).

For each patch, in the output folder:

* ``<name>_panel.png``: image | CAM per class | pseudo-mask | prediction |
  ground truth (the CAM and pseudo-mask columns only with a CAM model);
* ``<name>_prototypes.png``, when the model's neck returns
  ``PromptedFeatures``: the prototype-similarity map of every class;
* ``<name>_seg.png``: the prediction | ground-truth overlay of mmseg's
  ``SegLocalVisualizer``.

The CAM model is the model itself when it is a ``CAMSegmentor`` (a stage-1
config), else the given stage-1 config and checkpoint. Its CAMs are gated,
as by :func:`~.pseudo_masks.generate_pseudo_masks` on val / test, by its
predicted image labels (``test_cfg.cls_thresh``), and the pseudo-mask is
them thresholded with its ``pseudo_label_cfg``. With ``oracle_labels`` they
are gated by the labels of the ground-truth masks (an oracle): their titles
say "oracle" and the panel is ``<name>_oracle_panel.png`` (and, when the
model is the CAM model, whose prediction is gated the same way,
``<name>_oracle_seg.png``).
"""
import os
import os.path as osp
from typing import Optional

import cv2
import numpy as np
import torch
from mmengine.config import Config
from mmseg.models.utils import resize
from mmseg.registry import DATASETS, VISUALIZERS

from ..models.necks import PrototypeBank, as_prompted_features
from ..models.segmentors import CAMSegmentor
from ..visualization import colorize_labels, heatmap_overlay, make_panel
from .model_loading import init_segmentor
from .pseudo_masks import gating_mode, pseudo_label_params, pseudo_mask_of


def _to_rgb(sample_inputs: torch.Tensor) -> np.ndarray:
    """The packed (3, H, W) BGR uint8 input as an (H, W, 3) RGB array."""
    return np.ascontiguousarray(
        sample_inputs.permute(1, 2, 0).numpy()[..., ::-1])


def _write_rgb(path: str, rgb: np.ndarray) -> None:
    """Write an (H, W, 3) RGB uint8 image."""
    cv2.imwrite(path, cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))


@torch.no_grad()
def draw_sample_panels(cfg: Config,
                       checkpoint: str,
                       out_dir: str,
                       num: int = 4,
                       split: str = 'test',
                       oracle_labels: bool = False,
                       cam_cfg: Optional[Config] = None,
                       cam_checkpoint: Optional[str] = None,
                       device: str = 'cpu') -> int:
    """Draw the panels of the first ``num`` patches of ``split``.

    Args:
        cfg: The config of the model drawn (stage 1 or 2).
        checkpoint: Its local checkpoint.
        out_dir: Output folder (created).
        num: Patches to draw.
        split: ``'val'`` or ``'test'``: the dataloader whose dataset is
            drawn.
        oracle_labels: Gate the CAM columns by the ground-truth labels.
        cam_cfg: A stage-1 config for the CAM columns when ``cfg``'s model
            is no ``CAMSegmentor``; with ``cam_checkpoint``.
        cam_checkpoint: Its local checkpoint.
        device: Device of the models.

    Returns:
        int: The number of patches drawn.

    Raises:
        ValueError: If only one of ``cam_cfg`` and ``cam_checkpoint`` is
            given, or ``oracle_labels`` without a CAM model.
    """
    if (cam_cfg is None) != (cam_checkpoint is None):
        raise ValueError('cam_cfg and cam_checkpoint (--cam-config and '
                         '--cam-checkpoint) go together')
    model = init_segmentor(cfg, checkpoint, device)
    if isinstance(model, CAMSegmentor):
        cam_cfg, cam_model = cfg, model
    elif cam_cfg is not None:
        cam_model = init_segmentor(cam_cfg, cam_checkpoint, device)
    elif oracle_labels:
        raise ValueError(f'oracle_labels (--oracle-labels) gates the CAM '
                         f'columns, but {cfg.filename} is no CAM config and '
                         'no cam_cfg (--cam-config) is given')
    else:
        cam_model = None
    oracle = gating_mode(split, oracle_labels) == 'oracle'
    # Titles and file names of what the oracle gating touched.
    tag, suffix = (' (oracle)', '_oracle') if oracle else ('', '')
    pred_tag, seg_suffix = (tag, suffix) if cam_model is model else ('', '')
    if cam_model is not None:
        cam_model.test_cfg['use_gt_labels'] = oracle
        params = pseudo_label_params(cam_cfg)

    dataset = DATASETS.build(cfg[f'{split}_dataloader'].dataset)
    classes = dataset.metainfo['classes']
    palette = dataset.metainfo['palette']
    visualizer = VISUALIZERS.build(
        dict(type='SegLocalVisualizer', name='protoprompt_visualize',
             alpha=0.6))
    visualizer.dataset_meta = dict(classes=classes, palette=palette)
    os.makedirs(out_dir, exist_ok=True)

    count = min(num, len(dataset))
    for index in range(count):
        packed = dataset[index]
        data = dict(inputs=[packed['inputs']],
                    data_samples=[packed['data_samples']])
        sample = packed['data_samples']
        name = osp.splitext(osp.basename(sample.img_path))[0]
        image = _to_rgb(packed['inputs'])
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
        _write_rgb(osp.join(out_dir, f'{name}{suffix}_panel.png'),
                   make_panel(tiles, titles))

        feats = model.extract_feat(
            model.data_preprocessor(data, False)['inputs'])
        if isinstance(getattr(model, 'neck', None), PrototypeBank):
            similarity = as_prompted_features(
                feats, 'draw_sample_panels').similarity
            sims = resize(similarity, size=image.shape[:2],
                          mode='bilinear')[0]
            sims = ((sims + 1) / 2).cpu().numpy()  # cosine -> [0, 1]
            _write_rgb(
                osp.join(out_dir, f'{name}_prototypes.png'),
                make_panel([image] + [heatmap_overlay(image, s)
                                      for s in sims],
                           ['image'] + [f'proto {c}' for c in classes]))
        visualizer.add_datasample(
            name, image, result, draw_gt=True, draw_pred=True, show=False,
            out_file=osp.join(out_dir, f'{name}{seg_suffix}_seg.png'))
    return count
