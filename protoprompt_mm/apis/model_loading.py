"""Build a segmentor from its config and load a local checkpoint.

The one loader of the tools, the APIs and the prototype initialisation.
mmseg's ``init_model`` is not used: it loads checkpoints non-strictly, fails
on checkpoints without ``meta`` (the tests' and hand-made ones) and, without
``meta['dataset_meta']``, names the classes after some mmseg dataset with
as many classes (else Cityscapes) instead of the config's dataset.
"""
import copy
import os.path as osp
from typing import Optional, Union

from mmengine.config import Config
from mmengine.registry import init_default_scope
from mmengine.runner import load_checkpoint
from mmseg.registry import DATASETS, MODELS
from torch import nn

from ..utils import load_config


def config_dataset_meta(cfg: Config) -> Optional[dict]:
    """``classes`` / ``palette`` of the config's test (or val) dataset.

    The dataset class's ``METAINFO`` updated by the dataset config's
    ``metainfo``; no file is read.

    Args:
        cfg: A full mmseg config.

    Returns:
        dict or None: The metainfo, or None when the config names no dataset
        with classes and a palette.
    """
    for loader in ('test_dataloader', 'val_dataloader'):
        dataset = (cfg.get(loader) or {}).get('dataset') or {}
        if 'type' not in dataset:
            continue
        meta = dict(getattr(DATASETS.get(dataset['type']), 'METAINFO', {}))
        meta.update(dataset.get('metainfo') or {})
        if meta.get('classes') and meta.get('palette'):
            return meta
    return None


def require_dataset_meta(model: nn.Module, source: str) -> dict:
    """The model's ``dataset_meta``, which must name classes and colours.

    Args:
        model: A segmentor from :func:`init_segmentor` (or any module with
            ``dataset_meta``).
        source: What the model was loaded from, for the error (e.g. the
            checkpoint and config files).

    Returns:
        dict: ``model.dataset_meta``, with ``classes`` and ``palette``.

    Raises:
        KeyError: If it lacks either.
    """
    meta = getattr(model, 'dataset_meta', None) or {}
    if 'classes' not in meta or 'palette' not in meta:
        raise KeyError(
            f"{source}: the model's dataset_meta has no classes and "
            "palette: neither the checkpoint's meta['dataset_meta'] nor the "
            "config's test_dataloader.dataset / val_dataloader.dataset names "
            'them; cannot name or colour the classes')
    return meta


def init_segmentor(config: Union[str, Config],
                   checkpoint: Optional[str] = None,
                   device: str = 'cpu',
                   cfg_options: Optional[dict] = None,
                   strict: bool = True,
                   init_weights: bool = True) -> nn.Module:
    """Build ``config``'s model, load a local checkpoint, eval mode.

    With ``checkpoint`` every weight comes from it; without,
    ``init_weights`` initialises the model (local pretrained paths and
    ``init_prototypes`` of the config apply), unless ``init_weights`` is
    False: then the weights are the random ones of the model's constructors
    (the benchmarks', whose figures do not depend on the values).
    Nothing is downloaded.
    ``model.dataset_meta`` (``classes``, ``palette``) comes from the
    checkpoint's ``meta['dataset_meta']`` (written by mmengine's Runner),
    else from the config's test / val dataset, else is None; ``model.cfg``
    is the config.

    Args:
        config: Config file or loaded config (not modified).
        checkpoint: Optional local ``.pth`` file.
        device: Device of the model.
        cfg_options: ``--cfg-options`` style overrides.
        strict: Require the checkpoint's keys to match the model's.
        init_weights: Without ``checkpoint``, run ``model.init_weights()``.

    Returns:
        nn.Module: The model on ``device`` in eval mode.

    Raises:
        KeyError: If the config has no ``model``.
        FileNotFoundError: If ``checkpoint`` is not an existing local file.
    """
    if isinstance(config, Config):
        cfg = config
        if cfg_options:
            cfg = copy.deepcopy(config)
            cfg.merge_from_dict(cfg_options)
    else:
        cfg = load_config(config, cfg_options)
    if 'model' not in cfg:
        raise KeyError(f'{cfg.filename}: the config has no `model` key')
    if checkpoint is not None and not osp.isfile(checkpoint):
        raise FileNotFoundError(
            f'checkpoint {checkpoint} is not a local file (nothing is '
            'downloaded)')
    init_default_scope(cfg.get('default_scope', 'mmseg'))
    model = MODELS.build(cfg.model)
    meta = None
    if checkpoint is None:
        if init_weights:
            model.init_weights()
    else:
        ckpt = load_checkpoint(
            model, checkpoint, map_location='cpu', strict=strict)
        meta = (ckpt.get('meta') or {}).get('dataset_meta')
    model.dataset_meta = meta or config_dataset_meta(cfg)
    model.cfg = cfg
    return model.to(device).eval()
