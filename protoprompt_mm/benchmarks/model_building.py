"""The models of the ProtoPrompt-vs-baseline benchmark, from their configs.

Every model is built by :func:`~protoprompt_mm.apis.init_segmentor` with
``init_weights=False``: the random weights of the model's constructors
(speed and memory do not depend on the values, and ``init_weights`` could
load pretrained files), seeded by the caller.
"""
from typing import Dict, NamedTuple, Optional, Sequence, Tuple

from mmengine.config import Config
from mmengine.optim import OptimWrapper, build_optim_wrapper
from torch import nn

from protoprompt_mm.apis import init_segmentor
from protoprompt_mm.engine.amp import configure_amp
from protoprompt_mm.models.segmentors import CAMSegmentor
from protoprompt_mm.utils import load_config

# The two models compared: the config under test and its baseline.
ROLES = ('protoprompt', 'baseline')


class SegmentorSource(NamedTuple):
    """What one compared model is built from.

    Attributes:
        config: Config file.
        overrides: Key -> value for every such key of the model config
            (:func:`load_model_cfg`); None values are skipped.
        cfg_options: ``--cfg-options`` style overrides, or None.
    """
    config: str
    overrides: Dict[str, Optional[int]]
    cfg_options: Optional[dict] = None


def segmentor_sources(config: str,
                      baseline: str,
                      num_prototypes: Optional[int] = None,
                      num_classes: Optional[int] = None,
                      cfg_options: Optional[dict] = None,
                      baseline_cfg_options: Optional[dict] = None
                      ) -> Dict[str, SegmentorSource]:
    """The sources of both roles of :data:`ROLES`.

    The ProtoPrompt model gets both scaling overrides, the baseline the
    number of classes only; each gets its own ``cfg_options``.

    Args:
        config: ProtoPrompt (or stage-1) config file.
        baseline: Baseline config file.
        num_prototypes: Override of every ``num_prototypes`` key, or None.
        num_classes: Override of every ``num_classes`` key, or None.
        cfg_options: Overrides of ``config``.
        baseline_cfg_options: Overrides of ``baseline``.

    Returns:
        dict: Role -> :class:`SegmentorSource`.
    """
    return dict(
        protoprompt=SegmentorSource(
            config,
            dict(num_classes=num_classes, num_prototypes=num_prototypes),
            cfg_options),
        baseline=SegmentorSource(baseline, dict(num_classes=num_classes),
                                 baseline_cfg_options))


def override_key(node: object, key: str, value: int) -> int:
    """Set ``key`` to ``value`` wherever it occurs in a nested config.

    Args:
        node: A config dict / list (or a leaf, left alone).
        key: The key to override.
        value: Its new value.

    Returns:
        int: How many occurrences were set.
    """
    found = 0
    if isinstance(node, dict):
        for name, child in node.items():
            if name == key:
                node[name] = value
                found += 1
            else:
                found += override_key(child, key, value)
    elif isinstance(node, (list, tuple)):
        found = sum(override_key(child, key, value) for child in node)
    return found


def load_model_cfg(path: str,
                   overrides: Dict[str, Optional[int]],
                   cfg_options: Optional[dict] = None) -> Config:
    """The config with ``cfg_options`` and the scaling overrides applied.

    Args:
        path: Config file.
        overrides: Key -> value for every ``key`` in the model config; None
            values are skipped.
        cfg_options: ``--cfg-options`` style overrides.

    Raises:
        KeyError: If an override is asked for but the model has no such key.
    """
    cfg = load_config(path, cfg_options)
    for key, value in overrides.items():
        if value is not None and not override_key(cfg.model, key, value):
            raise KeyError(f'{path}: --{key.replace("_", "-")} given, but '
                           f'the model config has no {key!r} key')
    return cfg


def build_segmentor(source: SegmentorSource, device: str
                    ) -> Tuple[nn.Module, OptimWrapper, int]:
    """A compared model in train mode, its optimizer wrapper, N classes.

    ``test_cfg`` is forced to ``mode='whole'``; the wrapper's precision is
    set by :func:`~protoprompt_mm.engine.amp.configure_amp` for ``device``,
    as ``tools/train.py`` does (an AMP config runs in fp32 on the CPU).

    Args:
        source: What to build.
        device: ``'cpu'`` or ``'cuda'``.

    Returns:
        tuple: The model (random weights, on ``device``), the wrapper, and
        the number of classes of its decode head.

    Raises:
        TypeError: If the model is not a segmentor with a ``decode_head``.
        KeyError: If the config has no ``optim_wrapper``.
    """
    cfg = load_model_cfg(source.config, source.overrides, source.cfg_options)
    cfg.model.test_cfg = dict(mode='whole')
    model = init_segmentor(cfg, device=device, init_weights=False).train()
    if not hasattr(model, 'decode_head'):
        raise TypeError(f'{source.config}: expected a segmentor with a '
                        f'decode_head, got {type(model).__name__}')
    if 'optim_wrapper' not in cfg:
        raise KeyError(f'{source.config}: the config has no optim_wrapper')
    configure_amp(cfg, device=device)
    return (model, build_optim_wrapper(model, cfg.optim_wrapper),
            model.decode_head.num_classes)


def build_cam_model(config: str, device: str, num_classes: Optional[int],
                    tta_scales: Sequence[float],
                    tta_flip: bool) -> CAMSegmentor:
    """The stage-1 model with the given test-time views, in eval mode.

    Args:
        config: Stage-1 (``CAMSegmentor``) config file.
        device: ``'cpu'`` or ``'cuda'``.
        num_classes: Override of every ``num_classes`` key, or None.
        tta_scales: ``test_cfg.scales``.
        tta_flip: ``test_cfg.flip``.

    Raises:
        TypeError: If the config's model is not a ``CAMSegmentor``.
    """
    cfg = load_model_cfg(config, dict(num_classes=num_classes))
    cfg.model.test_cfg = dict(
        cfg.model.get('test_cfg') or {},
        scales=tuple(tta_scales),
        flip=tta_flip)
    model = init_segmentor(cfg, device=device, init_weights=False)
    if not isinstance(model, CAMSegmentor):
        raise TypeError(f'{config}: expected a CAMSegmentor (stage-1) '
                        f'model, got {type(model).__name__}')
    return model
