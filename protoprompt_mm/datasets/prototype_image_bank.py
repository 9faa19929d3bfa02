"""The image bank of prototype initialisation: which images feed which class.

By default the training dataset, re-read with a test-style pipeline, reduced
to single-label images (at most ``max_images_per_class`` per class); a class
without any single-label image falls back to the multi-label images that
include it. The images are embedded by
:func:`~protoprompt_mm.apis.encode_image_bank` and clustered by
:func:`~protoprompt_mm.models.utils.cluster_class_features`.
"""
import copy
from typing import List, Optional, Sequence, Tuple

import numpy as np
import torch
from mmengine.dataset import BaseDataset, pseudo_collate
from mmseg.registry import DATASETS
from torch import Tensor
from torch.utils.data import DataLoader

# Keys an ``image_bank`` dataloader config may hold. Images are always read
# in order, unsharded and unshuffled, so sampler settings do not apply.
IMAGE_BANK_KEYS = ('dataset', 'batch_size', 'num_workers')
IMAGE_BANK_META_KEYS = ('img_path', 'ori_shape', 'img_shape', 'img_labels')


def single_label_classes(labels: Tensor) -> Tensor:
    """Class of every single-label image.

    Args:
        labels: Multi-hot image labels (B, N).

    Returns:
        Tensor: (B,) long; the class index where exactly one flag is set,
        -1 otherwise.
    """
    labels = labels > 0
    single = labels.sum(dim=1) == 1
    return torch.where(single, labels.long().argmax(dim=1),
                       torch.full_like(single, -1, dtype=torch.long))


def default_image_bank_pipeline(num_classes: int) -> List[dict]:
    """Test-style pipeline: load the image and its labels, no augmentation.

    Args:
        num_classes: N, for ``LoadImageLevelLabels``.

    Returns:
        list[dict]: Transform configs.
    """
    return [
        dict(type='LoadImageFromFile'),
        dict(type='LoadImageLevelLabels', num_classes=num_classes),
        dict(type='PackSegInputs', meta_keys=IMAGE_BANK_META_KEYS),
    ]


def image_bank_dataset_cfg(image_bank: dict,
                           train_dataloader: Optional[dict],
                           num_classes: int) -> dict:
    """Resolve the dataset config of an image bank.

    ``image_bank['dataset']`` with a ``type`` is used as is. Without a
    ``type``, its keys override those of the training dataset config
    (``train_dataloader['dataset']``; ``RepeatDataset``-style wrappers are
    unwrapped), whose training pipeline is dropped. A missing ``pipeline``
    becomes :func:`default_image_bank_pipeline`.

    Args:
        image_bank: The image-bank dataloader config.
        train_dataloader: The training dataloader config, or None.
        num_classes: N.

    Returns:
        dict: A dataset config.

    Raises:
        ValueError: If the config needs the training dataset and there is
            none, or it is a concatenation of datasets.
    """
    dataset = copy.deepcopy(dict(image_bank.get('dataset', {})))
    if 'type' not in dataset:
        if not train_dataloader or 'dataset' not in train_dataloader:
            raise ValueError(
                'image_bank: without image_bank.dataset.type the image bank '
                'reuses train_dataloader.dataset, but no train_dataloader '
                'config was given')
        base = copy.deepcopy(dict(train_dataloader['dataset']))
        while 'dataset' in base and 'pipeline' not in base:
            base = dict(base['dataset'])
        if 'datasets' in base:
            raise ValueError(
                f"image_bank: train_dataloader.dataset is a {base.get('type')}"
                ' of several datasets; give image_bank=dict(dataset=dict('
                'type=..., ...)) explicitly')
        base.pop('pipeline', None)
        base.update(dataset)
        dataset = base
    dataset.setdefault('pipeline', default_image_bank_pipeline(num_classes))
    return dataset


def select_single_label_images(dataset: BaseDataset, num_classes: int,
                               max_images_per_class: int) -> BaseDataset:
    """Keep the first ``max_images_per_class`` single-label images per class.

    A class without any single-label image keeps, instead, the first
    ``max_images_per_class`` images whose labels include it (the fallback of
    :func:`image_bank_batch_uses`). Only possible when every data info
    carries ``img_labels``; otherwise the labels are known only after the
    pipeline and the dataset is returned unchanged (the batches are filtered
    by :func:`image_bank_batch_uses` as well).

    Args:
        dataset: A built mmengine dataset.
        num_classes: N.
        max_images_per_class: Cap per class.

    Returns:
        BaseDataset: The subset, or ``dataset``.

    Raises:
        ValueError: If stored labels do not have shape (N,).
    """
    infos = [dataset.get_data_info(i) for i in range(len(dataset))]
    if any(info.get('img_labels') is None for info in infos):
        return dataset
    for info in infos:
        if np.shape(info['img_labels']) != (num_classes, ):
            raise ValueError(
                f"{info.get('img_path')}: img_labels must have shape "
                f"({num_classes},), got {np.shape(info['img_labels'])}")
    labels = torch.as_tensor(np.stack([info['img_labels'] for info in infos]))
    classes = single_label_classes(labels)
    counts = [0] * num_classes
    keep = set()
    for index, cls in enumerate(classes.tolist()):
        if cls >= 0 and counts[cls] < max_images_per_class:
            keep.add(index)
            counts[cls] += 1
    for cls in range(num_classes):
        if counts[cls] == 0:
            with_cls = (labels[:, cls] > 0).nonzero()[:, 0]
            keep.update(with_cls[:max_images_per_class].tolist())
    return dataset.get_subset(sorted(keep))


def build_image_bank_dataloader(image_bank: Optional[dict],
                                train_dataloader: Optional[dict],
                                num_classes: int,
                                max_images_per_class: int) -> DataLoader:
    """Build the dataloader of an image bank.

    The loader is sequential and unsharded on every rank (see
    :func:`~protoprompt_mm.apis.build_prototype_bank` for DDP). When the
    dataset's data infos carry ``img_labels`` (as the WSSS histology
    datasets do), it is reduced up front to the single-label images actually
    needed (:func:`select_single_label_images`), so no other image is read.

    Args:
        image_bank: Dataloader config with optional keys ``dataset`` (see
            :func:`image_bank_dataset_cfg`), ``batch_size`` (default 8;
            images of a batch must share one size) and ``num_workers``
            (default 0). None means ``{}``.
        train_dataloader: The training dataloader config, or None.
        num_classes: N.
        max_images_per_class: Cap of single-label images per class.

    Returns:
        DataLoader: Batches collated by ``pseudo_collate``.

    Raises:
        ValueError: On unknown keys in ``image_bank`` or an unresolvable
            dataset config.
    """
    image_bank = dict(image_bank or {})
    unknown = sorted(set(image_bank) - set(IMAGE_BANK_KEYS))
    if unknown:
        raise ValueError(f'image_bank: unknown keys {unknown}; expected a '
                         f'subset of {list(IMAGE_BANK_KEYS)}')
    dataset = DATASETS.build(
        image_bank_dataset_cfg(image_bank, train_dataloader, num_classes))
    if isinstance(dataset, BaseDataset):
        dataset = select_single_label_images(dataset, num_classes,
                                             max_images_per_class)
    return DataLoader(
        dataset,
        batch_size=image_bank.get('batch_size', 8),
        num_workers=image_bank.get('num_workers', 0),
        shuffle=False,
        collate_fn=pseudo_collate)


def image_bank_classes(dataloader: DataLoader,
                       num_classes: int) -> List[str]:
    """Class names of the image bank's dataset (``metainfo['classes']``).

    Args:
        dataloader: The image-bank dataloader.
        num_classes: N.

    Returns:
        list[str]: N names; ``'class_<i>'`` when the dataset has none.

    Raises:
        ValueError: If the dataset names a different number of classes.
    """
    dataset = getattr(dataloader, 'dataset', None)
    metainfo = getattr(dataset, 'metainfo', None) or {}
    names = metainfo.get('classes')
    if names is None:
        return [f'class_{i}' for i in range(num_classes)]
    if len(names) != num_classes:
        raise ValueError(
            f'image bank dataset has {len(names)} classes {list(names)}, but '
            f'the PrototypeBank expects num_classes={num_classes}')
    return [str(name) for name in names]


def image_bank_batch_uses(
        labels: Tensor, single_counts: Sequence[int],
        multi_counts: Sequence[int],
        max_images_per_class: int) -> List[Tuple[int, int, bool]]:
    """Which images of a batch feed which class.

    A single-label image feeds its class while that class has fewer than
    ``max_images_per_class`` single-label images. A multi-label image feeds
    every class it includes that has fewer than ``max_images_per_class``
    multi-label images: the fallback of a class without a single-label
    image. An image without labels feeds none.

    Args:
        labels: Multi-hot image labels of the batch (B, N).
        single_counts: Single-label images each class already has (N,).
        multi_counts: Multi-label images each class already has (N,).
        max_images_per_class: Cap per class and kind.

    Returns:
        list[tuple[int, int, bool]]: ``(image index, class, single-label)``
        in batch order.
    """
    labels = labels > 0
    single_taken, multi_taken = list(single_counts), list(multi_counts)
    uses = []
    for index, cls in enumerate(single_label_classes(labels).tolist()):
        if cls >= 0:
            if single_taken[cls] < max_images_per_class:
                uses.append((index, cls, True))
                single_taken[cls] += 1
            continue
        for other in labels[index].nonzero()[:, 0].tolist():
            if multi_taken[other] < max_images_per_class:
                uses.append((index, other, False))
                multi_taken[other] += 1
    return uses
