"""Stage-2 pseudo masks from a stage-1 CAM model's CAMs, and their scores.

:func:`generate_pseudo_masks` labels one split of the config's dataset
(:func:`build_label_dataset`: the ``train_dataloader`` dataset with that
``split`` for the folder datasets, the split's own dataloader dataset for
``HistoManifestDataset``): its images are loaded with the config's test
pipeline (no random augmentation; for the training split minus its mask
loaders; ``test_dataloader.num_workers`` workers), batched (images of a
batch must have one size) and run through the model's own prediction
(``CAMSegmentor.predict``): fused multi-level CAMs averaged over the scales
and horizontal flips, gated by image-level labels and resized to the image
size. The gating (:func:`gating_mode`):

- ``'image_labels'``, the training split: the labels of the file names
  (or of the manifest), the weak supervision stage 1 was trained on;
- ``'predicted'``, val / test by default: the model's predicted labels
  (probability > ``model.test_cfg.cls_thresh``, the top class if none);
- ``'oracle'``, val / test with ``oracle_labels``: labels read from the
  ground-truth masks. Every output of such a run says so.

:func:`~protoprompt_mm.datasets.transforms.cams_to_pseudo_label` with the
config's ``pseudo_label_cfg`` (:func:`pseudo_label_params`) turns the gated
CAMs into ``<out>/<image name>.png`` (:func:`image_name`; for a manifest
the image path as written minus its extension, where the manifest base's
``train_dataloader_pseudo`` reads them with ``out`` =
``<data_root>/pseudo_masks``): uint8 palette PNGs with class ids and 255
(unsure, not trained on). ``save_cams`` also writes
``<out>/<image name>.npy``, the float16 gated CAMs (N, H, W), which
``LoadCAMPseudoLabel`` can read instead of the PNGs. With ``force``, files
of an earlier run that this run does not rewrite are left in place.

Scores, when ground-truth masks exist (:func:`ground_truth_masks`:
``gt_dir``; by default ``<data_root>/training_gt`` for the training split,
the split's own masks otherwise): :class:`PseudoMaskScorer`, written with
the run's settings to ``<out>/pseudo_mask_metrics.json``.

In a distributed run every rank handles every world_size-th image and the
scores are summed over the ranks.
"""
import copy
import inspect
import json
import os
import os.path as osp
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from mmengine.config import Config
from mmengine.dataset import pseudo_collate
from mmengine.device import get_device
from mmengine.dist import all_reduce, barrier, get_dist_info, is_main_process
from mmengine.utils import ProgressBar
from mmseg.datasets.transforms import LoadAnnotations
from mmseg.evaluation import IoUMetric
from mmseg.registry import DATASETS, TRANSFORMS
from mmseg.structures import SegDataSample
from torch.utils.data import DataLoader, Dataset, Subset

from ..datasets.palette_masks import save_palette_mask
from ..datasets.transforms import LoadHistoAnnotations, cams_to_pseudo_label
from ..models.segmentors import CAMSegmentor
from .model_loading import init_segmentor

METRICS_FILE = 'pseudo_mask_metrics.json'
PSEUDO_LABEL_DEFAULTS = dict(
    fg_thresh=None, thresh_mode='fixed', ignore_index=255)
# What each gating (see gating_mode) means, in pseudo_mask_report's words.
GATING_DESCRIPTIONS = dict(
    image_labels='gated by the image labels (file names or manifest)',
    predicted='gated by the predicted image labels',
    oracle='ORACLE: gated by the labels of the ground-truth masks')


def gating_mode(split: str, oracle_labels: bool = False) -> str:
    """How the CAMs of ``split`` are gated.

    Args:
        split: ``'train'``, ``'val'`` or ``'test'``.
        oracle_labels: Gate val / test by the labels of their ground-truth
            masks.

    Returns:
        str: ``'image_labels'`` (train), ``'oracle'`` or ``'predicted'``.

    Raises:
        ValueError: If ``oracle_labels`` is set for the training split,
            whose image labels are the weak supervision, not an oracle.
    """
    if split == 'train':
        if oracle_labels:
            raise ValueError(
                'oracle labels apply to val / test only: the training split '
                'is gated by its image labels (file names or manifest)')
        return 'image_labels'
    return 'oracle' if oracle_labels else 'predicted'


def pseudo_label_params(
        cfg: Config,
        fg_thresh: Optional[float] = None,
        thresh_mode: Optional[str] = None) -> Dict[str, object]:
    """Arguments of ``cams_to_pseudo_label``: ``pseudo_label_cfg`` of
    ``cfg`` with the given overrides.

    Args:
        cfg: A stage-1 config.
        fg_thresh: Overrides ``pseudo_label_cfg.fg_thresh``.
        thresh_mode: Overrides ``pseudo_label_cfg.thresh_mode``.

    Returns:
        dict: ``fg_thresh``, ``thresh_mode`` (default ``'fixed'``),
        ``ignore_index`` (default 255).

    Raises:
        KeyError: If ``fg_thresh`` is neither in ``pseudo_label_cfg`` nor
            given, or ``pseudo_label_cfg`` has unknown keys.
    """
    given = dict(cfg.get('pseudo_label_cfg') or {})
    unknown = sorted(set(given) - set(PSEUDO_LABEL_DEFAULTS))
    if unknown:
        raise KeyError(
            f'{cfg.filename}: unknown pseudo_label_cfg keys {unknown}; '
            f'expected some of {sorted(PSEUDO_LABEL_DEFAULTS)}')
    params = {**PSEUDO_LABEL_DEFAULTS, **given}
    for key, value in (('fg_thresh', fg_thresh),
                       ('thresh_mode', thresh_mode)):
        if value is not None:
            params[key] = value
    if params['fg_thresh'] is None:
        raise KeyError(
            f'{cfg.filename}: pseudo_label_cfg.fg_thresh is missing; set '
            'pseudo_label_cfg = dict(fg_thresh=...) in the config or pass '
            '--fg-thresh')
    return params


def pseudo_mask_of(result: SegDataSample,
                   params: Dict[str, object]) -> Tuple[np.ndarray, np.ndarray]:
    """Gated CAMs and pseudo mask of one ``CAMSegmentor`` prediction.

    Args:
        result: Prediction with ``seg_logits`` (the gated CAMs) and
            ``cam_labels`` (the labels that gated them) in its metainfo.
        params: From :func:`pseudo_label_params`.

    Returns:
        tuple: float32 CAMs (N, H, W) and the uint8 (H, W) pseudo mask,
        gated by the same labels.
    """
    cams = result.seg_logits.data.float().cpu().numpy()
    labels = np.asarray(result.metainfo['cam_labels'])
    return cams, cams_to_pseudo_label(cams, labels, **params)


def build_label_dataset(cfg: Config, split: str) -> Dataset:
    """The dataset of ``split``, loaded for testing.

    A dataset class that takes ``split`` (the folder datasets: BCSS-WSSS,
    LUAD-HistoSeg, synthetic) is built from the ``train_dataloader`` dataset
    with that ``split`` (and no ``pseudo_mask_dir``); any other (e.g.
    ``HistoManifestDataset``, one manifest per split) from the split's own
    ``<split>_dataloader`` dataset. Its pipeline is the ``test_dataloader``
    pipeline; for the training split (no masks) without the transforms that
    load masks (subclasses of mmseg's ``LoadAnnotations``). Val / test keep
    them: their image labels (oracle gating) and scores come from the
    masks.

    Args:
        cfg: A stage-1 config.
        split: ``'train'``, ``'val'`` or ``'test'``.

    Returns:
        Dataset: The dataset.

    Raises:
        KeyError: If the dataset is built from ``<split>_dataloader`` and
            the config has none.
    """
    dataset_cfg = copy.deepcopy(cfg.train_dataloader.dataset)
    dataset_type = dataset_cfg.get('type')
    dataset_cls = dataset_type if inspect.isclass(dataset_type) else \
        DATASETS.get(dataset_type)
    if dataset_cls is not None and 'split' in inspect.signature(
            dataset_cls).parameters:
        dataset_cfg.pop('pseudo_mask_dir', None)
        dataset_cfg['split'] = split
    elif split != 'train':
        loader = f'{split}_dataloader'
        if not cfg.get(loader):
            raise KeyError(
                f'{cfg.filename}: {dataset_type} has no split argument, so '
                f'--split {split} labels the dataset of {loader}, which the '
                'config does not have')
        dataset_cfg = copy.deepcopy(cfg[loader].dataset)
    pipeline = cfg.test_dataloader.dataset.pipeline
    if split == 'train':
        pipeline = [
            transform for transform in pipeline if not issubclass(
                TRANSFORMS.get(transform['type']), LoadAnnotations)
        ]
    dataset_cfg['pipeline'] = pipeline
    return DATASETS.build(dataset_cfg)


def ground_truth_masks(
        dataset: Dataset, split: str, gt_dir: Optional[str] = None
) -> Tuple[Optional[str], Optional[Dict[str, str]]]:
    """The ground-truth mask of every image of ``dataset``, for the scores.

    - ``gt_dir`` given: ``<gt_dir>/<image name><seg_map_suffix>`` (see
      :func:`image_name`);
    - else for the training split: the same names in
      ``<data_root>/training_gt``, when that folder exists;
    - else (val / test): the dataset's own masks, the ``seg_map_path`` of
      every sample (the split's mask folder of the folder datasets,
      ``seg_map_pattern`` of ``HistoManifestDataset``), when every sample
      has one.

    Args:
        dataset: From :func:`build_label_dataset`.
        split: ``'train'``, ``'val'`` or ``'test'``.
        gt_dir: The ground-truth folder, if given.

    Returns:
        tuple: The folder of the masks and the mask path by image path
        (``img_path`` of the data infos), or ``(None, None)`` without
        ground truth.

    Raises:
        FileNotFoundError: If ``gt_dir`` is not a folder.
    """
    infos = [dataset.get_data_info(i) for i in range(len(dataset))]
    if gt_dir is None and split != 'train':
        masks = {info['img_path']: info.get('seg_map_path') for info in infos}
        if not masks or None in masks.values():
            return None, None
        return osp.commonpath(
            [osp.dirname(path) for path in masks.values()]), masks
    if gt_dir is None:
        gt_dir = osp.join(dataset.data_root or '', 'training_gt')
        if not osp.isdir(gt_dir):
            return None, None
    elif not osp.isdir(gt_dir):
        raise FileNotFoundError(f'gt_dir {gt_dir} is not a folder')
    return gt_dir, {
        info['img_path']: osp.join(
            gt_dir, image_name(dataset, info['img_path']) +
            dataset.seg_map_suffix)
        for info in infos
    }


def check_out_dir(out: str, force: bool) -> None:
    """Refuse a non-empty ``out`` without ``force``, then create it.

    Raises:
        FileExistsError: If ``out`` is not empty and ``force`` is False.
    """
    if osp.isdir(out) and os.listdir(out) and not force:
        raise FileExistsError(
            f'--out {out} is not empty ({len(os.listdir(out))} entries); '
            'pass --force (force=True) to write into it (files with the same '
            'names are overwritten)')
    os.makedirs(out, exist_ok=True)


def image_name(dataset: Dataset, img_path: str) -> str:
    """Name of an image of ``dataset``: its path relative to the image
    folder (``data_prefix['img_path']``) without ``img_suffix``, or without
    its extension when it has another suffix.

    For ``HistoManifestDataset`` (whose ``img_suffix``, mmseg's default,
    selects no files) that is the image path as the manifest writes it,
    minus its extension: the ``{path}`` of ``seg_map_pattern``.

    Raises:
        ValueError: If the image lies outside the image folder (e.g. an
            absolute path in a manifest): its name would leave ``out``.
    """
    img_dir = dataset.data_prefix.get('img_path') or os.curdir
    rel = osp.relpath(img_path, img_dir)
    if rel == os.pardir or rel.startswith(os.pardir + os.sep):
        raise ValueError(
            f'image {img_path} is outside the image folder {img_dir!r} of '
            f'the dataset: list images by paths relative to it')
    suffix = dataset.img_suffix
    return rel[:-len(suffix)] if suffix and rel.endswith(suffix) \
        else osp.splitext(rel)[0]


def _mean(values: np.ndarray) -> float:
    """Mean over the non-NaN values; NaN if there are none."""
    return float('nan') if np.isnan(values).all() else float(
        np.nanmean(values))


class PseudoMaskScorer:
    """Accumulates the pseudo-mask scores against ground-truth masks.

    GT background is not scored. Over all GT tissue pixels, a pixel the
    pseudo mask leaves without a class (any value outside ``0..N-1``)
    counts as a miss of its GT class: ``IoU`` / ``mIoU``. Over the GT
    tissue pixels that got a class only: ``precision_IoU`` /
    ``precision_mIoU``. ``coverage``: the fraction of GT tissue pixels that
    got a class.

    Args:
        num_classes: N.
        background_index: GT background value (not scored).
        ignore_index: Ignore value of GT masks.
    """

    def __init__(self, num_classes: int, background_index: int,
                 ignore_index: int) -> None:
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.loader = LoadHistoAnnotations(
            num_classes=num_classes,
            background_index=background_index,
            ignore_index=ignore_index)
        # Intersect, union, pred area, GT area (N each) over all tissue
        # pixels, the same over labelled tissue pixels, tissue, covered.
        self.areas = torch.zeros(8 * num_classes + 2, dtype=torch.float64)

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
        # Pseudo values outside 0..N-1 fall outside every class bin.
        areas = [
            *IoUMetric.intersect_and_union(pred, gt, self.num_classes,
                                           self.ignore_index),
            *IoUMetric.intersect_and_union(pred, scored, self.num_classes,
                                           self.ignore_index)
        ]
        self.areas += torch.cat([
            *[area.double() for area in areas],
            torch.stack([tissue.sum(), (tissue & labelled).sum()]).double()
        ])

    def metrics(self, classes: List[str]) -> Dict[str, object]:
        """Scores summed over all DDP ranks (call on every rank).

        Args:
            classes: The N class names.

        Returns:
            dict: ``mIoU``, ``IoU`` (per class), ``precision_mIoU``,
            ``precision_IoU`` and ``coverage``, fractions in [0, 1]; a class
            without GT or pseudo pixel has NaN IoU and means skip it (NaN if
            no class is left).
        """
        areas = self.areas.clone()
        all_reduce(areas, op='sum')
        n = self.num_classes
        full, precision = (IoUMetric.total_area_to_metrics(
            *areas[4 * n * part:4 * n * (part + 1)].view(4, n),
            metrics=['mIoU'])['IoU'] for part in (0, 1))
        tissue, covered = areas[8 * n:].tolist()
        return dict(
            mIoU=_mean(full),
            IoU={name: float(iou) for name, iou in zip(classes, full)},
            precision_mIoU=_mean(precision),
            precision_IoU={
                name: float(iou)
                for name, iou in zip(classes, precision)
            },
            coverage=covered / tissue if tissue else float('nan'))


def generate_pseudo_masks(cfg: Config,
                          checkpoint: str,
                          out: str,
                          split: str = 'train',
                          oracle_labels: bool = False,
                          batch_size: int = 8,
                          scales: Sequence[float] = (1.0, 0.75, 1.25),
                          flip: bool = True,
                          fg_thresh: Optional[float] = None,
                          thresh_mode: Optional[str] = None,
                          gt_dir: Optional[str] = None,
                          save_cams: bool = False,
                          force: bool = False) -> Dict[str, object]:
    """Write the pseudo masks of ``split`` to ``out`` and score them.

    See the module documentation. Call it on every rank of a distributed
    run.

    Args:
        cfg: A stage-1 (``CAMSegmentor``) config.
        checkpoint: Its local checkpoint.
        out: Output folder.
        split: ``'train'``, ``'val'`` or ``'test'``.
        oracle_labels: Gate val / test by their ground-truth labels.
        batch_size: Images per forward pass.
        scales: Test-time input scales averaged over.
        flip: Also average over horizontal flips.
        fg_thresh: Overrides ``pseudo_label_cfg.fg_thresh``.
        thresh_mode: Overrides ``pseudo_label_cfg.thresh_mode``.
        gt_dir: Ground-truth masks of the split (default: see
            :func:`ground_truth_masks`).
        save_cams: Also write the gated CAMs as float16 ``.npy``.
        force: Write into a non-empty ``out``.

    Returns:
        dict: ``num_images``, ``split``, ``gating`` (see
        :func:`gating_mode`), ``cls_thresh`` (predicted gating only),
        ``gt_dir``, ``scales``, ``flip``, ``fg_thresh``, ``thresh_mode``,
        ``ignore_index`` and, with ground truth, the scores of
        :meth:`PseudoMaskScorer.metrics`; with ground truth it is also
        written to ``<out>/pseudo_mask_metrics.json``.

    Raises:
        TypeError: If the model is not a ``CAMSegmentor``.
        ValueError: If the model and the dataset disagree on the classes.
        FileNotFoundError: If ``gt_dir`` is not a folder.
    """
    gating = gating_mode(split, oracle_labels)
    params = pseudo_label_params(cfg, fg_thresh, thresh_mode)
    check_out_dir(out, force)
    barrier()  # every rank checked `out` before anyone writes
    model = init_segmentor(
        cfg,
        checkpoint,
        get_device(),
        cfg_options={
            'model.test_cfg.use_gt_labels': gating != 'predicted',
            'model.test_cfg.scales': tuple(scales),
            'model.test_cfg.flip': flip
        })
    if not isinstance(model, CAMSegmentor):
        raise TypeError(f'{cfg.filename}: the model must be a CAMSegmentor '
                        f'(a stage-1 config), got {type(model).__name__}')
    dataset = build_label_dataset(cfg, split)
    classes = list(dataset.metainfo['classes'])
    if len(classes) != model.num_classes:
        raise ValueError(f'{cfg.filename}: the model has {model.num_classes} '
                         f'classes, the dataset {len(classes)} ({classes})')
    gt_dir, gt_masks = ground_truth_masks(dataset, split, gt_dir)
    scorer = None if gt_masks is None else PseudoMaskScorer(
        len(classes), len(classes), params['ignore_index'])

    rank, world_size = get_dist_info()
    shard = Subset(dataset, range(rank, len(dataset), world_size))
    loader = DataLoader(
        shard,
        batch_size=batch_size,
        num_workers=cfg.test_dataloader.get('num_workers', 0),
        collate_fn=pseudo_collate,
        shuffle=False)
    bar = ProgressBar(len(shard)) if is_main_process() else None
    for data in loader:
        with torch.no_grad():
            results = model.test_step(data)
        for result in results:
            cams, pseudo = pseudo_mask_of(result, params)
            img_path = result.metainfo['img_path']
            path = osp.join(out, image_name(dataset, img_path))
            os.makedirs(osp.dirname(path), exist_ok=True)
            save_palette_mask(path + '.png', pseudo,
                              dataset.metainfo['palette'])
            if save_cams:
                np.save(path + '.npy', cams.astype(np.float16))
            if scorer is not None:
                scorer.update(pseudo, gt_masks[img_path])
        if bar is not None:
            bar.update(len(results))

    record = dict(num_images=len(dataset), split=split, gating=gating)
    if gating == 'predicted':
        record['cls_thresh'] = model.test_cfg['cls_thresh']
    record.update(
        gt_dir=gt_dir, scales=list(scales), flip=flip, **params)
    if scorer is None:
        return record
    record = dict(scorer.metrics(classes), **record)
    if is_main_process():
        with open(osp.join(out, METRICS_FILE), 'w') as f:
            json.dump(record, f, indent=2)
    return record


def pseudo_mask_report(record: Dict[str, object], out: str) -> str:
    """What a :func:`generate_pseudo_masks` run wrote, and its scores.

    Args:
        record: The run's return value.
        out: The folder it wrote to.

    Returns:
        str: Lines naming the masks, the split and the gating; with ground
        truth, the mIoU (per class), precision mIoU and coverage in
        percent, marked ``[ORACLE labels]`` after an oracle gating.
    """
    lines = [f'Wrote {record["num_images"]} pseudo masks of '
             f'{record["split"]} to {out} '
             f'({GATING_DESCRIPTIONS[record["gating"]]})']
    if 'mIoU' not in record:
        return '\n'.join([*lines, 'No ground truth to score them'])
    oracle = ' [ORACLE labels]' if record['gating'] == 'oracle' else ''
    per_class = ', '.join(f'{name} {100 * iou:.2f}'
                          for name, iou in record['IoU'].items())
    lines += [
        f'pseudo-mask mIoU{oracle}: {100 * record["mIoU"]:.2f} '
        f'({per_class}; unlabelled GT tissue counts as a miss)',
        f'precision mIoU{oracle}: {100 * record["precision_mIoU"]:.2f} '
        f'(labelled pixels only); coverage{oracle}: '
        f'{100 * record["coverage"]:.2f}% of GT tissue pixels got a class '
        f'(GT: {record["gt_dir"]})'
    ]
    return '\n'.join(lines)
