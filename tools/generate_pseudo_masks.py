"""Turn a stage-1 CAM model's CAMs into stage-2 pseudo masks.

    python tools/generate_pseudo_masks.py CONFIG CHECKPOINT --out DIR \
        [--split train] [--batch-size 8] [--scales 1.0 0.75 1.25] \
        [--no-flip] [--save-cams] [--force] [--gt-dir DIR] \
        [--bg-thresh T] [--fg-thresh T] [--cfg-options ...] \
        [--launcher none|pytorch]

The images of ``--split`` (the dataset of the config's ``train_dataloader``)
are loaded with the config's test pipeline (no random augmentation; for the
training split minus its mask loaders; ``test_dataloader.num_workers``
workers), batched (images of a batch must have one size), and run through
the model's own prediction (``CAMSegmentor.predict``): fused multi-level
CAMs averaged over the scales and horizontal flips, gated by the
GROUND-TRUTH image labels and resized to the image size.
``cams_to_pseudo_label`` with the config's ``pseudo_label_cfg``
(``bg_thresh``, ``fg_thresh``; optional ``background_index`` = number of
classes and ``ignore_index`` = 255) turns them into
``DIR/<image name>.png``: uint8 palette PNGs with class ids, background and
ignore. ``--save-cams`` also writes
``DIR/<image name>.npy``, the float16 gated CAMs (N, H, W), which
``LoadCAMPseudoLabel`` can read instead of the PNGs. With ``--force``,
files of an earlier run that this run does not rewrite are left in place.

Scoring, when ground-truth masks exist (``--gt-dir``; by default
``<data_root>/training_gt`` for the training split, the split's mask folder
otherwise): IoU per class over the pixels that are tissue in the GT (GT
background is ignored) AND labelled with a class in the pseudo mask (its
background / ignore pixels are not scored); ``coverage`` is the fraction of
GT tissue pixels that got a class. Both are printed and written, as
fractions in [0, 1], to ``DIR/pseudo_mask_metrics.json``.

With ``--launcher pytorch`` (``torchrun``; gloo on CPU-only machines) every
rank handles every world_size-th image and the scores are summed over the
ranks.
"""
import argparse
import copy
import json
import os
import os.path as osp
from typing import Dict, List, Optional, Sequence

import numpy as np
import torch
from mmengine.config import Config, DictAction
from mmengine.dataset import pseudo_collate
from mmengine.device import get_device
from mmengine.dist import (all_reduce, barrier, get_dist_info, init_dist,
                           is_main_process)
from mmengine.registry import init_default_scope
from mmengine.runner import load_checkpoint
from mmengine.utils import ProgressBar
from mmseg.datasets.transforms import LoadAnnotations
from mmseg.evaluation import IoUMetric
from mmseg.registry import DATASETS, MODELS, TRANSFORMS
from torch.utils.data import DataLoader, Dataset, Subset

from protoprompt_mm.datasets.synthetic_histo import save_palette_mask
from protoprompt_mm.datasets.transforms import (LoadHistoAnnotations,
                                                cams_to_pseudo_label)
from protoprompt_mm.models.segmentors import CAMSegmentor
from protoprompt_mm.utils import init_cpu_process_group, load_config

METRICS_FILE = 'pseudo_mask_metrics.json'


def parse_args() -> argparse.Namespace:
    """Parse the command line."""
    parser = argparse.ArgumentParser(
        description='Generate pseudo masks from a stage-1 CAM model')
    parser.add_argument('config', help='stage-1 config file')
    parser.add_argument('checkpoint', help='stage-1 checkpoint')
    parser.add_argument('--out', required=True, help='output folder')
    parser.add_argument(
        '--split',
        default='train',
        choices=['train', 'val', 'test'],
        help='split of the training dataset config to label')
    parser.add_argument('--batch-size', type=int, default=8)
    parser.add_argument(
        '--scales',
        type=float,
        nargs='+',
        default=[1.0, 0.75, 1.25],
        help='test-time input scales averaged over')
    parser.add_argument(
        '--no-flip', action='store_true', help='no horizontal-flip TTA')
    parser.add_argument(
        '--save-cams',
        action='store_true',
        help='also write the float16 CAMs (N, H, W) as .npy')
    parser.add_argument(
        '--force',
        action='store_true',
        help='write into a non-empty --out (same names are overwritten)')
    parser.add_argument(
        '--gt-dir', help='ground-truth masks of the split, for scoring')
    parser.add_argument(
        '--bg-thresh', type=float, help='override pseudo_label_cfg')
    parser.add_argument(
        '--fg-thresh', type=float, help='override pseudo_label_cfg')
    parser.add_argument(
        '--cfg-options',
        nargs='+',
        action=DictAction,
        help='override config keys, e.g. model.test_cfg.cls_thresh=0.4')
    parser.add_argument(
        '--launcher', choices=['none', 'pytorch'], default='none')
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)
    args = parser.parse_args()
    os.environ.setdefault('LOCAL_RANK', str(args.local_rank))
    if args.batch_size < 1:
        parser.error(f'--batch-size must be >= 1, got {args.batch_size}')
    if min(args.scales) <= 0:
        parser.error(f'--scales must be positive, got {args.scales}')
    return args


def setup_dist(launcher: str, dist_cfg: dict) -> None:
    """Join the process group started by ``torchrun`` (gloo without GPU)."""
    if not init_cpu_process_group(launcher, dist_cfg.get('backend', 'gloo')):
        init_dist(launcher, **dist_cfg)


def pseudo_label_params(cfg: Config, args: argparse.Namespace,
                        num_classes: int) -> Dict[str, float]:
    """Thresholds and label ids of :func:`cams_to_pseudo_label`.

    Returns:
        dict: ``bg_thresh``, ``fg_thresh``, ``ignore_index``,
        ``background_index``.

    Raises:
        KeyError: If a threshold is neither in ``pseudo_label_cfg`` nor on
            the command line, or ``pseudo_label_cfg`` has unknown keys.
    """
    given = dict(cfg.get('pseudo_label_cfg') or {})
    params = dict(
        bg_thresh=None,
        fg_thresh=None,
        ignore_index=255,
        background_index=num_classes)
    unknown = sorted(set(given) - set(params))
    if unknown:
        raise KeyError(f'{cfg.filename}: unknown pseudo_label_cfg keys '
                       f'{unknown}; expected some of {sorted(params)}')
    params.update(given)
    for key in ('bg_thresh', 'fg_thresh'):
        if getattr(args, key) is not None:
            params[key] = getattr(args, key)
        if params[key] is None:
            raise KeyError(
                f'{cfg.filename}: pseudo_label_cfg.{key} is missing; set '
                f'pseudo_label_cfg = dict(bg_thresh=..., fg_thresh=...) in '
                f'the config or pass --{key.replace("_", "-")}')
    return params


def build_dataset(cfg: Config, split: str) -> Dataset:
    """The ``train_dataloader`` dataset for ``split``, loaded for testing.

    Its pipeline is the ``test_dataloader`` pipeline; for the training split
    (no masks) without the transforms that load masks (subclasses of
    mmseg's ``LoadAnnotations``). Val / test keep them: their image labels
    may come from the masks.
    """
    dataset_cfg = copy.deepcopy(cfg.train_dataloader.dataset)
    dataset_cfg.pop('pseudo_mask_dir', None)
    dataset_cfg['split'] = split
    pipeline = cfg.test_dataloader.dataset.pipeline
    if split == 'train':
        pipeline = [
            transform for transform in pipeline if not issubclass(
                TRANSFORMS.get(transform['type']), LoadAnnotations)
        ]
    dataset_cfg['pipeline'] = pipeline
    return DATASETS.build(dataset_cfg)


def default_gt_dir(dataset: Dataset, split: str) -> Optional[str]:
    """``<data_root>/training_gt`` for train, the split's masks otherwise."""
    if split == 'train':
        gt_dir = osp.join(dataset.data_root or '', 'training_gt')
    else:
        gt_dir = dataset.data_prefix.get('seg_map_path')
    return gt_dir if gt_dir and osp.isdir(gt_dir) else None


def check_out_dir(out: str, force: bool) -> None:
    """Refuse a non-empty ``out`` without ``force``, then create it.

    Raises:
        FileExistsError: If ``out`` is not empty and ``force`` is False.
    """
    if osp.isdir(out) and os.listdir(out) and not force:
        raise FileExistsError(
            f'--out {out} is not empty ({len(os.listdir(out))} entries); '
            'pass --force to write into it (files with the same names are '
            'overwritten)')
    os.makedirs(out, exist_ok=True)


def image_name(img_path: str, img_dir: str, img_suffix: str) -> str:
    """Image path relative to ``img_dir`` without its suffix."""
    rel = osp.relpath(img_path, img_dir)
    return rel[:-len(img_suffix)] if rel.endswith(img_suffix) \
        else osp.splitext(rel)[0]


class PseudoMaskScorer:
    """Accumulates the pseudo-mask scores against ground-truth masks.

    Args:
        num_classes: N.
        background_index: GT background value (not scored).
        ignore_index: Ignore value of GT and pseudo masks.
    """

    def __init__(self, num_classes: int, background_index: int,
                 ignore_index: int) -> None:
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.loader = LoadHistoAnnotations(
            num_classes=num_classes,
            background_index=background_index,
            ignore_index=ignore_index)
        # intersect, union, pred area, GT area (N each), tissue, covered.
        self.areas = torch.zeros(4 * num_classes + 2, dtype=torch.float64)

    def update(self, pseudo: np.ndarray, gt_path: str) -> None:
        """Add one image.

        Args:
            pseudo: uint8 (H, W) pseudo mask.
            gt_path: Its ground-truth mask file.

        Raises:
            FileNotFoundError: If ``gt_path`` does not exist.
            ValueError: If the sizes differ.
        """
        if not osp.isfile(gt_path):
            raise FileNotFoundError(f'ground-truth mask {gt_path} not found')
        gt = self.loader(dict(seg_map_path=gt_path))['gt_seg_map']
        if gt.shape != pseudo.shape:
            raise ValueError(f'{gt_path}: mask size {gt.shape} differs from '
                             f'the image size {pseudo.shape}')
        gt = torch.from_numpy(gt.astype(np.int64))
        pred = torch.from_numpy(pseudo.astype(np.int64))
        tissue = gt < self.num_classes
        labelled = pred < self.num_classes
        scored = torch.where(labelled, gt,
                             torch.full_like(gt, self.ignore_index))
        areas = IoUMetric.intersect_and_union(pred, scored, self.num_classes,
                                              self.ignore_index)
        self.areas += torch.cat([
            *[area.double() for area in areas],
            torch.stack([tissue.sum(), (tissue & labelled).sum()]).double()
        ])

    def metrics(self, classes: List[str]) -> Dict[str, object]:
        """Scores summed over all DDP ranks (call on every rank).

        Returns:
            dict: ``mIoU`` (mean over classes with a scored pixel, NaN if
            none), ``IoU`` per class and ``coverage``, fractions in [0, 1].
        """
        areas = self.areas.clone()
        all_reduce(areas, op='sum')
        n = self.num_classes
        per_class = IoUMetric.total_area_to_metrics(
            *areas[:4 * n].view(4, n), metrics=['mIoU'])['IoU']
        tissue, covered = areas[4 * n:].tolist()
        return dict(
            mIoU=float(np.nanmean(per_class)) if not np.isnan(
                per_class).all() else float('nan'),
            IoU={name: float(iou) for name, iou in zip(classes, per_class)},
            coverage=covered / tissue if tissue else float('nan'))


def mask_palette(class_colours: Sequence[Sequence[int]],
                 background_index: int) -> List[List[int]]:
    """PNG palette: the class colours, white background, black others."""
    palette = [list(colour) for colour in class_colours]
    palette += [[0, 0, 0]] * (256 - len(palette))
    palette[background_index] = [255, 255, 255]
    return palette


def label_batch(model: CAMSegmentor, data: dict, out: str, img_dir: str,
                img_suffix: str, params: Dict[str, float],
                palette: List[List[int]], save_cams: bool,
                scorer: Optional[PseudoMaskScorer],
                gt_dir: Optional[str], gt_suffix: str) -> int:
    """Predict one batch, write its pseudo masks (and CAMs), score them.

    Returns:
        int: Number of images written.
    """
    with torch.no_grad():
        results = model.test_step(data)
    for result in results:
        cams = result.seg_logits.data.float().cpu().numpy()
        labels = np.asarray(result.metainfo['img_labels'])
        pseudo = cams_to_pseudo_label(cams, labels, **params)
        name = image_name(result.metainfo['img_path'], img_dir, img_suffix)
        path = osp.join(out, name)
        os.makedirs(osp.dirname(path), exist_ok=True)
        save_palette_mask(path + '.png', pseudo, palette)
        if save_cams:
            np.save(path + '.npy', cams.astype(np.float16))
        if scorer is not None:
            scorer.update(pseudo, osp.join(gt_dir, name + gt_suffix))
    return len(results)


def main() -> None:
    args = parse_args()
    cfg = load_config(args.config, args.cfg_options)
    if args.launcher != 'none':
        setup_dist(args.launcher, cfg.get('env_cfg', {}).get('dist_cfg', {}))
    rank, world_size = get_dist_info()
    check_out_dir(args.out, args.force)
    barrier()  # every rank checked --out before anyone writes
    init_default_scope(cfg.get('default_scope', 'mmseg'))

    cfg.model.test_cfg = dict(
        cfg.model.get('test_cfg') or {},
        use_gt_labels=True,
        scales=tuple(args.scales),
        flip=not args.no_flip)
    model = MODELS.build(cfg.model)
    if not isinstance(model, CAMSegmentor):
        raise TypeError(f'{args.config}: the model must be a CAMSegmentor '
                        f'(a stage-1 config), got {type(model).__name__}')
    params = pseudo_label_params(cfg, args, model.num_classes)
    load_checkpoint(model, args.checkpoint, map_location='cpu', strict=True)
    model = model.to(get_device()).eval()

    dataset = build_dataset(cfg, args.split)
    classes = list(dataset.metainfo['classes'])
    if len(classes) != model.num_classes:
        raise ValueError(f'{args.config}: the model has {model.num_classes} '
                         f'classes, the dataset {len(classes)} ({classes})')
    palette = mask_palette(dataset.metainfo['palette'],
                           params['background_index'])

    gt_dir = args.gt_dir or default_gt_dir(dataset, args.split)
    if gt_dir is not None and not osp.isdir(gt_dir):
        raise FileNotFoundError(f'--gt-dir {gt_dir} is not a folder')
    scorer = None if gt_dir is None else PseudoMaskScorer(
        len(classes), params['background_index'], params['ignore_index'])

    shard = Subset(dataset, range(rank, len(dataset), world_size))
    loader = DataLoader(
        shard,
        batch_size=args.batch_size,
        num_workers=cfg.test_dataloader.get('num_workers', 0),
        collate_fn=pseudo_collate,
        shuffle=False)
    bar = ProgressBar(len(shard)) if is_main_process() else None
    for data in loader:
        done = label_batch(model, data, args.out,
                           dataset.data_prefix['img_path'],
                           dataset.img_suffix, params, palette,
                           args.save_cams, scorer, gt_dir,
                           dataset.seg_map_suffix)
        if bar is not None:
            bar.update(done)

    if scorer is None:
        if is_main_process():
            print(f'\nWrote {len(dataset)} pseudo masks to {args.out} '
                  '(no ground truth to score them)')
        return
    metrics = scorer.metrics(classes)
    if is_main_process():
        per_class = ', '.join(f'{name} {100 * iou:.2f}'
                              for name, iou in metrics['IoU'].items())
        print(f'\nWrote {len(dataset)} pseudo masks to {args.out}\n'
              f'pseudo-mask mIoU: {100 * metrics["mIoU"]:.2f} '
              f'({per_class}); coverage: {100 * metrics["coverage"]:.2f}% '
              f'of GT tissue pixels got a class (GT: {gt_dir})')
        with open(osp.join(args.out, METRICS_FILE), 'w') as f:
            json.dump(
                dict(
                    metrics,
                    num_images=len(dataset),
                    split=args.split,
                    gt_dir=gt_dir,
                    scales=list(args.scales),
                    flip=not args.no_flip,
                    **params),
                f,
                indent=2)


if __name__ == '__main__':
    main()
