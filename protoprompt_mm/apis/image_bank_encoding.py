"""Embedding the images of an image bank into per-class features.

Each image is embedded by a segmentor's backbone and the ``embed`` of the
module that holds the prototypes (:func:`find_prototype_bank`: a
:class:`PrototypeBank` neck or a ``MultiLevelPrototypeCAMHead``) and reduced
to one unit vector, the tissue-weighted mean of its embedding map. Which
images feed which class is decided by
:func:`~protoprompt_mm.datasets.prototype_image_bank.image_bank_batch_uses`.
"""
from typing import Optional, Sequence, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F
from mmengine.model import is_model_wrapper
from torch import Tensor
from torch.utils.data import DataLoader

from ..datasets.prototype_image_bank import image_bank_batch_uses
from ..models.necks.prototype_bank import PrototypeBank
from ..models.utils import ClassFeatures, stack_img_labels


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


def prototype_embedder(
        model: nn.Module,
        encoder: Optional[nn.Module] = None) -> Tuple[nn.Module, nn.Module]:
    """The segmentor that embeds images for ``model``'s prototypes.

    Args:
        model: The segmentor whose prototypes are initialised (possibly
            wrapped).
        encoder: Optional frozen segmentor that embeds instead of ``model``.
            For a PrototypeBank model it needs its own PrototypeBank with the
            same ``embed_dim``; for a prototype CAM head, the model's head
            reads the encoder's backbone level (its channels must be D).

    Returns:
        tuple[nn.Module, nn.Module]: The unwrapped embedding segmentor and
        the module whose ``embed`` it uses (:func:`find_prototype_bank`).

    Raises:
        TypeError: If ``model`` or ``encoder`` holds no prototypes.
        ValueError: If the embed dims differ.
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
    return embedder, embed_bank


def tissue_weights(images: Sequence[Tensor], padded_hw: torch.Size,
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


def embed_batch(embedder: nn.Module, embed_bank: nn.Module, data: dict,
                tissue_threshold: float) -> Tuple[Tensor, Tensor]:
    """Embed a batch with ``embedder``'s backbone and ``embed_bank.embed``.

    Args:
        embedder: Segmentor with ``data_preprocessor`` and ``backbone``.
        embed_bank: Its prototype module (:func:`prototype_embedder`).
        data: Collated batch (``inputs``: raw images, ``data_samples``).
        tissue_threshold: See :func:`tissue_weights`.

    Returns:
        tuple[Tensor, Tensor]: Embeddings (B, D, h, w) and tissue weights
        (B, h, w), on the embedder's device.
    """
    raw = list(data['inputs'])
    inputs = embedder.data_preprocessor(data, training=False)['inputs']
    embedding = embed_bank.embed(embedder.backbone(inputs))
    weights = tissue_weights(raw, inputs.shape[-2:], embedding.shape[-2:],
                             tissue_threshold).to(embedding)
    return embedding, weights


def add_batch_features(single: ClassFeatures, multi: ClassFeatures,
                       embedder: nn.Module, embed_bank: nn.Module, data: dict,
                       max_images_per_class: int,
                       tissue_threshold: float) -> None:
    """Embed the images of a batch that the classes still need.

    Only the images that
    :func:`~protoprompt_mm.datasets.prototype_image_bank.image_bank_batch_uses`
    selects are embedded; each becomes the unit-length tissue-weighted mean
    of its embedding map, added with its tissue-pixel embeddings to
    ``single`` or ``multi``.

    Args:
        single: Features of the single-label images so far; extended.
        multi: Features of the multi-label images so far; extended.
        embedder: Segmentor that embeds (:func:`prototype_embedder`).
        embed_bank: Its prototype module.
        data: Collated batch; every data sample needs
            ``metainfo['img_labels']``.
        max_images_per_class: Cap of images per class.
        tissue_threshold: See :func:`tissue_weights`.
    """
    num_classes = single.num_classes
    labels = stack_img_labels(data['data_samples'], num_classes,
                              torch.device('cpu'))
    uses = image_bank_batch_uses(
        labels, [single.count(c) for c in range(num_classes)],
        [multi.count(c) for c in range(num_classes)], max_images_per_class)
    keep = sorted({index for index, _, _ in uses})
    if not keep:
        return
    batch = dict(
        inputs=[data['inputs'][i] for i in keep],
        data_samples=[data['data_samples'][i] for i in keep])
    embedding, weights = embed_batch(embedder, embed_bank, batch,
                                     tissue_threshold)
    pooled = F.normalize(
        torch.einsum('bdhw,bhw->bd', embedding, weights), dim=1)
    for index, cls, is_single in uses:
        j = keep.index(index)
        pixels = embedding[j].flatten(1).t()
        (single if is_single else multi).add(
            cls, pooled[j], pixels[weights[j].flatten() > 0])


def encode_image_bank(
        embedder: nn.Module, embed_bank: nn.Module, dataloader: DataLoader,
        num_classes: int, num_prototypes: int, max_images_per_class: int,
        tissue_threshold: float) -> Tuple[ClassFeatures, ClassFeatures]:
    """Embed image-bank batches until every class has enough images.

    ``embedder`` runs in eval mode and without gradients (its mode is
    restored afterwards); see :func:`add_batch_features` for what a batch
    contributes. White glass (all channels above ``tissue_threshold``) does
    not count in an image's vector; ``tissue_threshold >= 255`` averages
    over every pixel. Iteration stops once every class has
    ``max_images_per_class`` single-label images.

    Args:
        embedder: Segmentor that embeds (:func:`prototype_embedder`).
        embed_bank: Its prototype module.
        dataloader: Image-bank batches (see
            :func:`~protoprompt_mm.datasets.build_image_bank_dataloader`);
            every data sample needs ``metainfo['img_labels']``.
        num_classes: N.
        num_prototypes: K.
        max_images_per_class: Cap of images per class.
        tissue_threshold: White level of the tissue mask (uint8 scale).

    Returns:
        tuple[ClassFeatures, ClassFeatures]: Of the single-label images and
        of the multi-label images, all on the CPU.
    """
    single = ClassFeatures(num_classes, num_prototypes)
    multi = ClassFeatures(num_classes, num_prototypes)
    was_training = embedder.training
    embedder.eval()
    try:
        with torch.no_grad():
            for data in dataloader:
                add_batch_features(single, multi, embedder, embed_bank, data,
                                   max_images_per_class, tissue_threshold)
                if min(single.count(c)
                       for c in range(num_classes)) >= max_images_per_class:
                    break
    finally:
        embedder.train(was_training)
    return single, multi
