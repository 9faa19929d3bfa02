"""Initial prototypes of a PrototypeBank (or prototype CAM head) from images.

The logic shared by ``PrototypeInitHook`` and
``tools/build_prototype_bank.py``. The image bank (by default the training
dataset, re-read with a test-style pipeline) is reduced to single-label
images, at most ``max_images_per_class`` per class; each image is embedded
by a backbone and the ``embed`` of the module that holds the prototypes
(:func:`find_prototype_bank`: a :class:`PrototypeBank` neck or a
``MultiLevelPrototypeCAMHead``); the per-image
vectors of each class are clustered by :func:`cosine_kmeans` into K
prototypes.
"""
import copy
import logging
import os
import os.path as osp
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from mmengine.config import Config
from mmengine.dataset import BaseDataset, pseudo_collate
from mmengine.dist import broadcast, get_rank
from mmengine.logging import print_log
from mmengine.model import is_model_wrapper
from mmseg.registry import DATASETS
from torch import Tensor
from torch.utils.data import DataLoader

from ..apis.model_loading import init_segmentor
from ..models.necks.prototype_bank import PrototypeBank
from ..models.utils import cosine_kmeans, stack_img_labels
from ..utils import failure_on_any_rank_raises_on_all

# Keys an ``image_bank`` dataloader config may hold. Images are always read
# in order, unsharded and unshuffled, so sampler settings do not apply.
IMAGE_BANK_KEYS = ('dataset', 'batch_size', 'num_workers')
IMAGE_BANK_META_KEYS = ('img_path', 'ori_shape', 'img_shape', 'img_labels')


def unwrap_model(model: nn.Module) -> nn.Module:
    """Return the module inside a DDP / FSDP style wrapper, else ``model``."""
    return model.module if is_model_wrapper(model) else model


def find_prototype_bank(model: nn.Module) -> nn.Module:
    """The module of a (possibly wrapped) segmentor that holds prototypes.

    That is a :class:`PrototypeBank` neck, or else a decode head with
    prototypes of its own (``MultiLevelPrototypeCAMHead``). Either offers
    ``num_classes``, ``num_prototypes``, ``embed_dim`` (D),
    ``init_prototypes``, ``prototypes`` (N, K, D), ``embed(backbone
    levels) -> (B, D, h, w)`` and ``load_prototypes``.

    Args:
        model: A segmentor, optionally wrapped (DDP, ...).

    Returns:
        nn.Module: ``model.neck`` or ``model.decode_head``.

    Raises:
        TypeError: If neither holds prototypes.
    """
    model = unwrap_model(model)
    neck = getattr(model, 'neck', None)
    if isinstance(neck, PrototypeBank):
        return neck
    head = getattr(model, 'decode_head', None)
    if all(hasattr(head, name) for name in ('embed', 'load_prototypes',
                                            'prototypes')):
        return head
    raise TypeError(
        f'{type(model).__name__} holds no prototypes (model.neck is '
        f'{type(neck).__name__}, model.decode_head {type(head).__name__}); '
        "prototype initialisation needs neck=dict(type='PrototypeBank', ...) "
        "or decode_head=dict(type='MultiLevelPrototypeCAMHead', ...)")


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


def _select_single_label(dataset: BaseDataset, num_classes: int,
                         max_images_per_class: int) -> BaseDataset:
    """Keep the first ``max_images_per_class`` single-label images per class.

    A class without any single-label image keeps, instead, the first
    ``max_images_per_class`` images whose labels include it (the fallback of
    :func:`build_prototype_bank`). Only possible when every data info
    carries ``img_labels``; otherwise the labels are known only after the
    pipeline and the dataset is returned unchanged (:func:`build_prototype_bank`
    filters batches as well).

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
    """Build the dataloader that feeds :func:`build_prototype_bank`.

    The loader is sequential and unsharded on every rank (see
    :func:`build_prototype_bank` for DDP). When the dataset's data infos
    carry ``img_labels`` (as the WSSS histology datasets do), it is reduced
    up front to the single-label images actually needed, so no other image
    is read.

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
        dataset = _select_single_label(dataset, num_classes,
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


def _tissue_weights(images: Sequence[Tensor], padded_hw: torch.Size,
                    out_hw: torch.Size, tissue_threshold: float) -> Tensor:
    """Tissue fraction of every embedding cell.

    A pixel is tissue unless all its channels exceed ``tissue_threshold``
    (white glass). Padding added by the data preprocessor counts as
    background. An image without tissue gets uniform weights.

    Args:
        images: Raw uint8 images, each (C, H_i, W_i).
        padded_hw: (H, W) of the preprocessed batch.
        out_hw: (h, w) of the embedding map.
        tissue_threshold: Intensity above which a channel is white.

    Returns:
        Tensor: Weights (B, h, w) in [0, 1].
    """
    masks = []
    for img in images:
        tissue = (img.amin(dim=0) <= tissue_threshold).float()
        masks.append(
            F.pad(tissue, (0, padded_hw[1] - tissue.shape[1], 0,
                           padded_hw[0] - tissue.shape[0])))
    weights = F.interpolate(
        torch.stack(masks)[:, None], size=tuple(out_hw), mode='area')[:, 0]
    empty = weights.flatten(1).sum(dim=1) <= 0
    weights[empty] = 1.0
    return weights


def _embed_batch(embedder: nn.Module, bank: nn.Module, data: dict,
                 tissue_threshold: float) -> Tuple[Tensor, Tensor]:
    """Embed a batch with ``embedder``'s backbone and ``bank.embed``.

    Args:
        embedder: Segmentor with ``data_preprocessor`` and ``backbone``.
        bank: Its prototype module (:func:`find_prototype_bank`).
        data: Collated batch (``inputs``: raw images, ``data_samples``).
        tissue_threshold: See :func:`_tissue_weights`.

    Returns:
        tuple[Tensor, Tensor]: Embeddings (B, D, h, w) and tissue weights
        (B, h, w), on the embedder's device.
    """
    raw = list(data['inputs'])
    inputs = embedder.data_preprocessor(data, training=False)['inputs']
    embedding = bank.embed(embedder.backbone(inputs))
    weights = _tissue_weights(raw, inputs.shape[-2:], embedding.shape[-2:],
                              tissue_threshold).to(embedding)
    return embedding, weights


class ClassFeatures:
    """Per class, image vectors and some tissue-pixel embeddings.

    Args:
        num_classes: N.
    """

    def __init__(self, num_classes: int) -> None:
        self.image_vecs: List[List[Tensor]] = [[] for _ in range(num_classes)]
        self.pixel_feats: List[List[Tensor]] = [
            [] for _ in range(num_classes)
        ]

    def count(self, cls: int) -> int:
        return len(self.image_vecs[cls])

    def add(self, cls: int, vec: Tensor, pixels: Tensor,
            num_prototypes: int) -> None:
        """Add an image vector (D,); its pixels (P, D) for the first K - 1."""
        if self.count(cls) < num_prototypes - 1:
            self.pixel_feats[cls].append(pixels.cpu())
        self.image_vecs[cls].append(vec.cpu())


def _collect_class_features(
        embedder: nn.Module, bank: nn.Module, dataloader: DataLoader,
        num_classes: int, num_prototypes: int, max_images_per_class: int,
        tissue_threshold: float) -> Tuple[ClassFeatures, ClassFeatures]:
    """Embed single-label images until every class has enough.

    Multi-label images are embedded too, for every class they include that
    has fewer than ``max_images_per_class`` of them: the fallback of a class
    without a single-label image.

    Args:
        embedder: Segmentor that embeds (eval mode, no grad).
        bank: Its prototype module (:func:`find_prototype_bank`).
        dataloader: Image-bank batches.
        num_classes: N.
        num_prototypes: K.
        max_images_per_class: Cap of images per class.
        tissue_threshold: See :func:`_tissue_weights`.

    Returns:
        tuple[ClassFeatures, ClassFeatures]: Of the single-label images and
        of the multi-label images, all on the CPU.
    """
    single, shared = ClassFeatures(num_classes), ClassFeatures(num_classes)
    for data in dataloader:
        labels = stack_img_labels(data['data_samples'], num_classes,
                                  torch.device('cpu')) > 0
        classes = single_label_classes(labels).tolist()
        taken = [single.count(c) for c in range(num_classes)]
        taken_shared = [shared.count(c) for c in range(num_classes)]
        uses = []  # (image, class, pool)
        for i, cls in enumerate(classes):
            if cls >= 0:
                if taken[cls] < max_images_per_class:
                    uses.append((i, cls, single))
                    taken[cls] += 1
                continue
            for other in labels[i].nonzero()[:, 0].tolist():
                if taken_shared[other] < max_images_per_class:
                    uses.append((i, other, shared))
                    taken_shared[other] += 1
        keep = sorted({i for i, _, _ in uses})
        if keep:
            batch = dict(
                inputs=[data['inputs'][i] for i in keep],
                data_samples=[data['data_samples'][i] for i in keep])
            embedding, weights = _embed_batch(embedder, bank, batch,
                                              tissue_threshold)
            pooled = F.normalize(
                torch.einsum('bdhw,bhw->bd', embedding, weights), dim=1)
            for i, cls, pool in uses:
                j = keep.index(i)
                pixels = embedding[j].flatten(1).t()
                pool.add(cls, pooled[j], pixels[weights[j].flatten() > 0],
                         num_prototypes)
        if min(single.count(c)
               for c in range(num_classes)) >= max_images_per_class:
            break
    return single, shared


def build_prototype_bank(model: nn.Module,
                         dataloader: DataLoader,
                         num_classes: int,
                         num_prototypes: int,
                         max_images_per_class: int = 64,
                         encoder: Optional[nn.Module] = None,
                         num_iters: int = 50,
                         seed: int = 0,
                         tissue_threshold: float = 220.0) -> Tensor:
    """K prototypes per class from the single-label images of an image bank.

    Every single-label image (``img_labels`` sums to 1) is embedded, in
    eval mode and without gradients, by the backbone and the PrototypeBank
    ``embed`` of ``encoder`` (or of ``model``), and reduced to one unit
    vector: the tissue-weighted mean of its (B, D, h, w) embedding map,
    where white glass (all channels above ``tissue_threshold``) does not
    count; ``tissue_threshold >= 255`` averages over every pixel. At most
    ``max_images_per_class`` images per class are used (the first ones in
    loader order); the vectors of each class are clustered by
    :func:`cosine_kmeans` into K prototypes.

    Fallbacks (each logged as a warning): a class without a single-label
    image uses the multi-label images that include it instead; a class with
    0 < n < K images is clustered from the tissue-pixel embeddings of those
    n images. A class that no image includes is an error.

    DDP: the images are embedded on rank 0 only (the dataloader is not
    sharded) and the result is broadcast, so every rank gets identical
    prototypes; the other ranks do not iterate the dataloader. An error on
    rank 0 reaches every rank (see
    :func:`~protoprompt_mm.utils.failure_on_any_rank_raises_on_all`): rank
    0 raises it, the others a ``RuntimeError`` quoting it, and none is left
    waiting in the broadcast.

    Args:
        model: The segmentor whose PrototypeBank receives the prototypes
            (D is its ``embed_dim``); it embeds unless ``encoder`` is given.
        dataloader: Image-bank batches (see
            :func:`build_image_bank_dataloader`); every data sample needs
            ``metainfo['img_labels']``.
        num_classes: N.
        num_prototypes: K.
        max_images_per_class: Cap of images per class.
        encoder: Optional frozen segmentor whose backbone embeds the images
            (e.g. a trained stage-1 checkpoint). For a PrototypeBank model
            it needs its own PrototypeBank with the same ``embed_dim``; for
            a prototype CAM head, the model's head reads the encoder's
            backbone level (its channels must be D).
        num_iters: k-means iterations.
        seed: k-means seed.
        tissue_threshold: White level of the tissue mask (uint8 scale).

    Returns:
        Tensor: Unit-length prototypes (N, K, D), on the CPU.

    Raises:
        TypeError: If ``model`` or ``encoder`` has no PrototypeBank neck.
        ValueError: If the embed dims differ, or a class has no
            single-label image (or too few tissue pixels for K clusters).
        RuntimeError: On the other ranks, when rank 0 failed.
    """
    bank = find_prototype_bank(model)
    embedder = unwrap_model(model if encoder is None else encoder)
    if encoder is not None and isinstance(bank, PrototypeBank):
        embed_bank = find_prototype_bank(embedder)
    else:
        # A prototype CAM head's embed has no weights of its own: it reads
        # a backbone level, so any encoder's backbone feeds it.
        embed_bank = bank
    if embed_bank.embed_dim != bank.embed_dim:
        raise ValueError(
            f'encoder prototype embed_dim={embed_bank.embed_dim} does not '
            f"match the model's prototype embed_dim={bank.embed_dim}")
    prototypes = torch.zeros(num_classes, num_prototypes, bank.embed_dim)
    # Only rank 0 reads the image bank; its failure must reach the ranks
    # that would otherwise wait for its prototypes in broadcast.
    with failure_on_any_rank_raises_on_all('Prototype init on rank 0'):
        if get_rank() == 0:
            names = image_bank_classes(dataloader, num_classes)
            was_training = embedder.training
            embedder.eval()
            try:
                with torch.no_grad():
                    single, shared = _collect_class_features(
                        embedder, embed_bank, dataloader, num_classes,
                        num_prototypes, max_images_per_class, tissue_threshold)
            finally:
                embedder.train(was_training)
            for cls, name in enumerate(names):
                pool, kind = single, 'single-label'
                if single.count(cls) == 0:
                    if shared.count(cls) == 0:
                        raise ValueError(
                            f'class {cls} ({name}): no single-label image in '
                            'the image bank, and no image whose img_labels '
                            f'include it; {num_prototypes} prototypes need '
                            'images of it')
                    pool, kind = shared, 'multi-label'
                    print_log(
                        f'class {cls} ({name}): no single-label image; its '
                        f'prototypes come from {shared.count(cls)} '
                        'multi-label image(s) that include it (mixed with '
                        'other classes)',
                        logger='current',
                        level=logging.WARNING)
                count = pool.count(cls)
                if count >= num_prototypes:
                    points = torch.stack(pool.image_vecs[cls])
                else:
                    points = torch.cat(pool.pixel_feats[cls])
                    print_log(
                        f'class {cls} ({name}): only {count} {kind} '
                        f'image(s) for {num_prototypes} prototypes; '
                        f'clustering their {points.shape[0]} tissue-pixel '
                        'embeddings instead',
                        logger='current',
                        level=logging.WARNING)
                    if points.shape[0] < num_prototypes:
                        raise ValueError(
                            f'class {cls} ({name}): {points.shape[0]} '
                            'tissue pixels are too few for '
                            f'{num_prototypes} prototypes')
                prototypes[cls] = cosine_kmeans(points, num_prototypes,
                                                num_iters, seed)
            print_log(
                'Prototype init: single-label images per class: ' + ', '.join(
                    f'{name}={single.count(cls)}'
                    for cls, name in enumerate(names)) +
                f' (cap {max_images_per_class}, K={num_prototypes})',
                logger='current')
    broadcast(prototypes, src=0)
    return prototypes


def build_frozen_model(cfg: Config,
                       checkpoint: Optional[str] = None) -> nn.Module:
    """:func:`~protoprompt_mm.apis.init_segmentor` on the CPU, frozen.

    Args:
        cfg: A full config with a ``model`` key.
        checkpoint: Optional local ``.pth`` file (loaded strictly); without,
            ``init_weights`` initialises the model.

    Returns:
        nn.Module: The model on the CPU, in eval mode, without gradients.
    """
    model = init_segmentor(cfg, checkpoint)
    model.requires_grad_(False)
    return model


def build_prototype_record(model: nn.Module,
                           train_dataloader: Optional[dict],
                           image_bank: Optional[dict] = None,
                           encoder: Optional[nn.Module] = None,
                           max_images_per_class: int = 64,
                           num_iters: int = 50,
                           seed: int = 0,
                           tissue_threshold: float = 220.0) -> Dict[str, Any]:
    """Build the image bank of ``model``'s PrototypeBank and its prototypes.

    Args:
        model: Segmentor with a PrototypeBank neck (possibly wrapped).
        train_dataloader: Training dataloader config (the default image
            bank), or None when ``image_bank`` names a dataset type.
        image_bank: See :func:`build_image_bank_dataloader`.
        encoder: See :func:`build_prototype_bank`.
        max_images_per_class: Cap of images per class.
        num_iters: k-means iterations.
        seed: k-means seed.
        tissue_threshold: See :func:`build_prototype_bank`.

    Returns:
        dict: ``prototypes`` (N, K, D) CPU tensor, ``classes`` (N names) and
        ``meta`` (the settings), the layout of :func:`save_prototype_file`.
    """
    bank = find_prototype_bank(model)
    dataloader = build_image_bank_dataloader(image_bank, train_dataloader,
                                             bank.num_classes,
                                             max_images_per_class)
    prototypes = build_prototype_bank(
        model,
        dataloader,
        bank.num_classes,
        bank.num_prototypes,
        max_images_per_class=max_images_per_class,
        encoder=encoder,
        num_iters=num_iters,
        seed=seed,
        tissue_threshold=tissue_threshold)
    meta = dict(
        max_images_per_class=max_images_per_class,
        num_iters=num_iters,
        seed=seed,
        tissue_threshold=float(tissue_threshold))
    return dict(
        prototypes=prototypes,
        classes=image_bank_classes(dataloader, bank.num_classes),
        meta=meta)


def save_prototype_file(path: str, record: Dict[str, Any]) -> None:
    """Write a prototype record readable by ``PrototypeBank.init_prototypes``.

    Args:
        path: Target ``.pth`` file; parent folders are created.
        record: ``prototypes`` (N, K, D), ``classes`` and ``meta`` (plain
            Python values only, so ``torch.load(weights_only=True)`` works).
    """
    folder = osp.dirname(osp.abspath(path))
    os.makedirs(folder, exist_ok=True)
    torch.save(
        dict(
            prototypes=record['prototypes'].detach().cpu(),
            classes=list(record['classes']),
            meta=dict(record['meta'])), path)
