"""Initial prototypes of a PrototypeBank (or prototype CAM head) from images.

The code of ``PrototypeInitHook`` and ``tools/build_prototype_bank.py``:
the image bank (:mod:`protoprompt_mm.datasets.prototype_image_bank`) is
embedded (:func:`~protoprompt_mm.apis.encode_image_bank`) and the vectors of
each class are clustered into K sub-prototypes
(:func:`~protoprompt_mm.models.utils.cluster_class_features`).
"""
import os
import os.path as osp
from typing import Any, Dict, Optional

import torch
import torch.nn as nn
from mmengine.config import Config
from mmengine.dist import broadcast, get_rank
from mmengine.hooks import Hook
from mmengine.logging import print_log
from mmengine.registry import init_default_scope
from mmseg.registry import HOOKS
from torch import Tensor
from torch.utils.data import DataLoader

from ..datasets.prototype_image_bank import (build_image_bank_dataloader,
                                             image_bank_classes)
from ..models.utils import cluster_class_features
from ..utils import failure_on_any_rank_raises_on_all, load_config
from .image_bank_encoding import (encode_image_bank, find_prototype_bank,
                                  prototype_embedder)
from .model_loading import init_segmentor

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
    :func:`~protoprompt_mm.models.utils.cosine_kmeans` into K prototypes.

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
            :func:`~protoprompt_mm.datasets.build_image_bank_dataloader`);
            every data sample needs ``metainfo['img_labels']``.
        num_classes: N.
        num_prototypes: K.
        max_images_per_class: Cap of images per class.
        encoder: Optional frozen segmentor whose backbone embeds the images
            (e.g. a trained stage-1 checkpoint); see
            :func:`~protoprompt_mm.apis.prototype_embedder`.
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
    embedder, embed_bank = prototype_embedder(model, encoder)
    prototypes = torch.zeros(num_classes, num_prototypes, bank.embed_dim)
    # Only rank 0 reads the image bank; its failure must reach the ranks
    # that would otherwise wait for its prototypes in broadcast.
    with failure_on_any_rank_raises_on_all('Prototype init on rank 0'):
        if get_rank() == 0:
            names = image_bank_classes(dataloader, num_classes)
            single, multi = encode_image_bank(embedder, embed_bank,
                                              dataloader, num_classes,
                                              num_prototypes,
                                              max_images_per_class,
                                              tissue_threshold)
            prototypes.copy_(
                cluster_class_features(single, multi, names, bank.embed_dim,
                                       num_iters, seed))
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
        image_bank: See
            :func:`~protoprompt_mm.datasets.build_image_bank_dataloader`.
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


def config_prototype_init_hook(cfg: Config) -> Hook:
    """The config's ``PrototypeInitHook``, or one with default settings.

    Args:
        cfg: A full config; its ``custom_hooks`` may hold the hook.

    Returns:
        PrototypeInitHook: Built from the config's entry, else with its
        defaults.

    Raises:
        ValueError: If ``custom_hooks`` holds several of them.
    """
    hook_type = HOOKS.get('PrototypeInitHook')
    entries = [
        hook for hook in cfg.get('custom_hooks', [])
        if hook.get('type') in ('PrototypeInitHook', hook_type)
    ]
    if len(entries) > 1:
        raise ValueError(f'{cfg.filename}: custom_hooks has {len(entries)} '
                         'PrototypeInitHook entries, expected at most one')
    return HOOKS.build(entries[0] if entries else dict(
        type='PrototypeInitHook'))


def build_prototype_bank_from_config(
        config: str,
        checkpoint: Optional[str] = None,
        device: str = 'cpu',
        cfg_options: Optional[dict] = None,
        max_images_per_class: Optional[int] = None,
        num_iters: Optional[int] = None,
        seed: Optional[int] = None,
        tissue_threshold: Optional[float] = None) -> Dict[str, Any]:
    """Prototypes of a config's PrototypeBank, embedded by its own model.

    The image bank and the settings are those of the config's
    ``PrototypeInitHook`` entry in ``custom_hooks`` when present, its
    defaults otherwise (:func:`config_prototype_init_hook`); the settings
    given here (not None) replace the hook's. The images are embedded by the
    config's model (with ``checkpoint`` loaded when given); the hook's
    ``encoder`` setting is not used here.

    Args:
        config: Config file with a PrototypeBank (or prototype CAM head).
        checkpoint: Optional local checkpoint to embed with.
        device: Device that embeds the images.
        cfg_options: ``--cfg-options`` style overrides of the config.
        max_images_per_class: Cap of images per class, or None.
        num_iters: k-means iterations, or None.
        seed: k-means seed, or None.
        tissue_threshold: See :func:`build_prototype_bank`, or None.

    Returns:
        dict: The record of :func:`build_prototype_record`, its ``meta``
        also holding ``config`` and ``checkpoint``; for
        :func:`save_prototype_file`.
    """
    overrides = dict(
        max_images_per_class=max_images_per_class,
        num_iters=num_iters,
        seed=seed,
        tissue_threshold=tissue_threshold)
    cfg = load_config(config, cfg_options)
    init_default_scope(cfg.get('default_scope', 'mmseg'))
    hook = config_prototype_init_hook(cfg)
    settings = {
        key: getattr(hook, key) if value is None else value
        for key, value in overrides.items()
    }
    model = build_frozen_model(cfg, checkpoint).to(device)
    record = build_prototype_record(
        model,
        cfg.get('train_dataloader'),
        image_bank=hook.image_bank,
        **settings)
    record['meta'].update(config=config, checkpoint=checkpoint)
    return record


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
