"""Convert third-party backbone checkpoints into our backbones' keys.

The configs load pretrained backbones from local files only (``pretrained``
-> ``model.backbone.init_cfg=dict(type='Pretrained', checkpoint=...)``),
and mmengine's ``Pretrained`` initialiser needs the keys of the backbone
module itself. :func:`convert_checkpoint` (``tools/convert_weights.py``)
rewrites the published layouts into those keys:

- ``torchvision-resnet``: torchvision's ``resnet*`` (``conv1``, ``bn1``,
  ``layer1.0.conv1``, ..., ``fc``) -> mmseg's ``ResNet`` / ``ResNetV1b`` and
  mmpretrain's ``ResNet`` (same names; the classifier ``fc`` is dropped).
  torchvision's single 7x7 stem has no counterpart in the deep stem of
  ``ResNetV1c`` (use an mmpretrain V1c checkpoint, or ``ResNetV1b``).
- ``mit``: the official SegFormer ``mit_b*.pth`` (NVlabs layout:
  ``patch_embed1.proj``, ``block1.0.attn.q`` / ``kv`` / ``sr``, ``norm1``,
  ...) -> mmseg's ``MixVisionTransformer`` (``layers.0.0.projection``,
  ``layers.0.1.0.attn.attn.in_proj_weight`` = [q; kv], 1x1-conv MLPs,
  ``layers.0.2``); the ImageNet ``head`` is dropped.
- ``timm-mit``: MiT in the ``segformer`` key layout of the model hubs
  (Hugging Face ``SegformerModel`` / ``SegformerForImageClassification``,
  e.g. ``nvidia/mit-b1``: ``segformer.encoder.block.0.0.attention.self.
  query``, ...; timm itself has no MiT) -> the same mmseg keys; the
  ``classifier`` / ``decode_head`` are dropped.
- ``mmpretrain``: an mmpretrain classifier checkpoint (``backbone.*``,
  ``neck.*``, ``head.*``) -> its backbone's keys for mmseg (the deep stem
  of ResNetV1c/V1d, ``stem.i.conv`` / ``stem.i.bn``, becomes mmseg's
  ``stem.3i`` / ``stem.3i+1``); the same keys serve an ``mmpretrain.*``
  backbone without a deep stem (``mmpretrain.ResNet``).

Every key of the source must be known to its layout (or be a classifier key
that is dropped): a file of another layout is an error naming the file and
the keys, not a silent partial load.
"""
import os
import os.path as osp
import re
from functools import partial
from collections import OrderedDict
from typing import Callable, Dict, Iterable, List, Optional

import torch
import torch.nn as nn
from torch import Tensor

StateDict = Dict[str, Tensor]

# mmseg MixVisionTransformer: the module of each MiT block part inside
# ``layers.<stage>.1.<block>`` (q / k / v / kv are fused into in_proj).
MMSEG_MIT_BLOCK_PARTS = {
    'norm1': 'norm1',
    'norm2': 'norm2',
    'out': 'attn.attn.out_proj',
    'sr': 'attn.sr',
    'sr_norm': 'attn.norm',
    'fc1': 'ffn.layers.0',
    'dwconv': 'ffn.layers.1',
    'fc2': 'ffn.layers.4',
}
# Parts that are nn.Linear in the sources and 1x1 convolutions in mmseg.
MIT_LINEAR_TO_CONV = ('fc1', 'fc2')
MIT_QKV_PARTS = ('q', 'k', 'v', 'kv')
MIT_EMBED_PARTS = {'proj': 'projection', 'norm': 'norm', 'layer_norm': 'norm'}


class MiTLayout:
    """How one MiT checkpoint layout names the parts of the encoder.

    Args:
        name: The layout's ``--from`` name.
        embed: Regex of a patch-embedding key (groups ``stage``, ``part``,
            ``param``).
        block: Regex of a block key (groups ``stage``, ``block``, ``part``,
            ``param``).
        norm: Regex of a stage's final norm (groups ``stage``, ``param``).
        block_parts: Source part name -> canonical part (a key of
            :data:`MMSEG_MIT_BLOCK_PARTS` or one of :data:`MIT_QKV_PARTS`).
        first_stage: Index of the first stage in the source's keys.
        prefixes: Leading key prefixes removed first, in order.
        dropped: Prefixes of keys that are not part of the encoder.
    """

    def __init__(self, name: str, embed: str, block: str, norm: str,
                 block_parts: Dict[str, str], first_stage: int,
                 prefixes: Iterable[str], dropped: Iterable[str]) -> None:
        self.name = name
        self.embed = re.compile(embed)
        self.block = re.compile(block)
        self.norm = re.compile(norm)
        self.block_parts = block_parts
        self.first_stage = first_stage
        self.prefixes = tuple(prefixes)
        self.dropped = tuple(dropped)


NVLABS_MIT = MiTLayout(
    name='mit',
    embed=r'patch_embed(?P<stage>\d+)\.(?P<part>proj|norm)\.'
    r'(?P<param>weight|bias)',
    block=r'block(?P<stage>\d+)\.(?P<block>\d+)\.(?P<part>.+)\.'
    r'(?P<param>weight|bias)',
    norm=r'norm(?P<stage>\d+)\.(?P<param>weight|bias)',
    block_parts={
        'norm1': 'norm1',
        'norm2': 'norm2',
        'attn.q': 'q',
        'attn.kv': 'kv',
        'attn.proj': 'out',
        'attn.sr': 'sr',
        'attn.norm': 'sr_norm',
        'mlp.fc1': 'fc1',
        'mlp.dwconv.dwconv': 'dwconv',
        'mlp.fc2': 'fc2',
    },
    first_stage=1,
    prefixes=(),
    dropped=('head.', ))

SEGFORMER_MIT = MiTLayout(
    name='timm-mit',
    embed=r'patch_embeddings\.(?P<stage>\d+)\.(?P<part>proj|layer_norm)\.'
    r'(?P<param>weight|bias)',
    block=r'block\.(?P<stage>\d+)\.(?P<block>\d+)\.(?P<part>.+)\.'
    r'(?P<param>weight|bias)',
    norm=r'layer_norm\.(?P<stage>\d+)\.(?P<param>weight|bias)',
    block_parts={
        'layer_norm_1': 'norm1',
        'layer_norm_2': 'norm2',
        'attention.self.query': 'q',
        'attention.self.key': 'k',
        'attention.self.value': 'v',
        'attention.output.dense': 'out',
        'attention.self.sr': 'sr',
        'attention.self.layer_norm': 'sr_norm',
        'mlp.dense1': 'fc1',
        'mlp.dwconv.dwconv': 'dwconv',
        'mlp.dense2': 'fc2',
    },
    first_stage=0,
    prefixes=('segformer.', 'encoder.'),
    dropped=('classifier.', 'decode_head.'))

TORCHVISION_RESNET_KEY = re.compile(
    r'(conv1\.weight|bn1\.\w+|layer[1-4]\.\d+\.'
    r'(conv[1-3]\.weight|bn[1-3]\.\w+|downsample\.[01]\.\w+))')
MMPRETRAIN_DEEP_STEM = re.compile(r'stem\.(?P<index>\d+)\.(?P<part>conv|bn)'
                                  r'\.(?P<param>\w+)')


def unknown_keys_error(source: str, layout: str,
                       keys: List[str]) -> ValueError:
    """The error for keys that the ``layout`` does not know."""
    shown = ', '.join(keys[:5]) + (', ...' if len(keys) > 5 else '')
    return ValueError(
        f'{source}: {len(keys)} key(s) are not in the {layout!r} layout '
        f'({shown}); is --from right?')


def convert_mit(state_dict: StateDict, source: str,
                layout: MiTLayout) -> StateDict:
    """Rewrite an MiT encoder of ``layout`` into mmseg's keys.

    Args:
        state_dict: The source tensors.
        source: The file, for errors.
        layout: The source layout (:data:`NVLABS_MIT`,
            :data:`SEGFORMER_MIT`).

    Returns:
        StateDict: mmseg ``MixVisionTransformer`` keys.

    Raises:
        ValueError: On keys outside the layout, or a block whose query /
            key / value parts are incomplete.
    """
    out: StateDict = OrderedDict()
    qkv: Dict[str, Dict[str, Tensor]] = {}
    unknown = []
    for key, value in state_dict.items():
        if key.startswith(layout.dropped):
            continue
        name = key
        for prefix in layout.prefixes:
            name = name[len(prefix):] if name.startswith(prefix) else name
        embed = layout.embed.fullmatch(name)
        block = layout.block.fullmatch(name)
        norm = layout.norm.fullmatch(name)
        if embed:
            stage = int(embed['stage']) - layout.first_stage
            out[f'layers.{stage}.0.{MIT_EMBED_PARTS[embed["part"]]}.'
                f'{embed["param"]}'] = value
        elif block and block['part'] in layout.block_parts:
            stage = int(block['stage']) - layout.first_stage
            prefix = f'layers.{stage}.1.{block["block"]}'
            part, param = layout.block_parts[block['part']], block['param']
            if part in MIT_QKV_PARTS:
                qkv.setdefault(f'{prefix}.attn.attn.in_proj_{param}',
                               {})[part] = value
                continue
            if part in MIT_LINEAR_TO_CONV and param == 'weight':
                value = value.reshape(*value.shape, 1, 1)
            out[f'{prefix}.{MMSEG_MIT_BLOCK_PARTS[part]}.{param}'] = value
        elif norm:
            stage = int(norm['stage']) - layout.first_stage
            out[f'layers.{stage}.2.{norm["param"]}'] = value
        else:
            unknown.append(key)
    if unknown:
        raise unknown_keys_error(source, layout.name, unknown)
    for key, parts in qkv.items():
        order = ('q', 'kv') if 'kv' in parts else ('q', 'k', 'v')
        if set(parts) != set(order):
            raise ValueError(
                f'{source}: attention {key} has the parts {sorted(parts)}, '
                f'expected {list(order)}')
        out[key] = torch.cat([parts[part] for part in order])
    return out


def convert_torchvision_resnet(state_dict: StateDict,
                               source: str) -> StateDict:
    """torchvision ResNet -> mmseg ``ResNet`` keys (the same; ``fc`` out).

    Args:
        state_dict: The source tensors.
        source: The file, for errors.

    Returns:
        StateDict: The backbone's tensors.

    Raises:
        ValueError: On keys outside torchvision's ResNet.
    """
    kept = OrderedDict((key, value) for key, value in state_dict.items()
                       if not key.startswith('fc.'))
    unknown = [
        key for key in kept if not TORCHVISION_RESNET_KEY.fullmatch(key)
    ]
    if unknown:
        raise unknown_keys_error(source, 'torchvision-resnet', unknown)
    return kept


def convert_mmpretrain(state_dict: StateDict, source: str) -> StateDict:
    """mmpretrain classifier -> its backbone's keys for mmseg.

    Args:
        state_dict: The source tensors.
        source: The file, for errors.

    Returns:
        StateDict: The ``backbone.*`` tensors without the prefix, with a
        deep stem's ``stem.i.conv`` / ``stem.i.bn`` as mmseg's
        ``stem.3i`` / ``stem.3i+1``.

    Raises:
        ValueError: If the file has no ``backbone.*`` key, or keys outside
            ``backbone`` / ``neck`` / ``head`` / ``data_preprocessor``.
    """
    out: StateDict = OrderedDict()
    unknown = []
    for key, value in state_dict.items():
        if key.startswith(('neck.', 'head.', 'data_preprocessor.')):
            continue
        if not key.startswith('backbone.'):
            unknown.append(key)
            continue
        name = key[len('backbone.'):]
        stem = MMPRETRAIN_DEEP_STEM.fullmatch(name)
        if stem:
            index = 3 * int(stem['index']) + (stem['part'] == 'bn')
            name = f'stem.{index}.{stem["param"]}'
        out[name] = value
    if unknown or not out:
        raise unknown_keys_error(source, 'mmpretrain',
                                 unknown or ['(no backbone.* key)'])
    return out


CONVERTERS: Dict[str, Callable[[StateDict, str], StateDict]] = {
    'torchvision-resnet': convert_torchvision_resnet,
    'mit': partial(convert_mit, layout=NVLABS_MIT),
    'timm-mit': partial(convert_mit, layout=SEGFORMER_MIT),
    'mmpretrain': convert_mmpretrain,
}
SOURCE_LAYOUTS = tuple(CONVERTERS)


def read_state_dict(path: str) -> StateDict:
    """The tensors of a checkpoint file, unwrapped.

    ``state_dict`` / ``model`` wrappers (mmengine, the SegFormer repo) and a
    DataParallel ``module.`` prefix are removed. The file is unpickled:
    convert only files you trust.

    Args:
        path: The checkpoint.

    Returns:
        StateDict: Name -> tensor.

    Raises:
        FileNotFoundError: If ``path`` is not a file.
        ValueError: If the file holds no dict of tensors.
    """
    if not osp.isfile(path):
        raise FileNotFoundError(f'{path}: checkpoint not found')
    ckpt = torch.load(path, map_location='cpu', weights_only=False)
    for wrapper in ('state_dict', 'model'):
        if isinstance(ckpt, dict) and isinstance(ckpt.get(wrapper), dict):
            ckpt = ckpt[wrapper]
            break
    if not isinstance(ckpt, dict) or not ckpt or not all(
            isinstance(value, Tensor) for value in ckpt.values()):
        raise ValueError(
            f'{path}: expected a state dict (name -> tensor), optionally '
            f'under "state_dict" or "model", got {type(ckpt).__name__}')
    return OrderedDict(
        (key[len('module.'):] if key.startswith('module.') else key, value)
        for key, value in ckpt.items())


def convert_state_dict(state_dict: StateDict, layout: str,
                       source: str = 'checkpoint') -> StateDict:
    """Convert ``state_dict`` from ``layout`` (one of :data:`SOURCE_LAYOUTS`).

    Args:
        state_dict: The source tensors.
        layout: The source layout.
        source: The file, for errors.

    Returns:
        StateDict: The keys our backbones expect.

    Raises:
        ValueError: On an unknown layout or keys outside it.
    """
    if layout not in CONVERTERS:
        raise ValueError(f'unknown source layout {layout!r}; expected one '
                         f'of {list(SOURCE_LAYOUTS)}')
    return CONVERTERS[layout](state_dict, source)


def check_backbone_keys(state_dict: StateDict, backbone: nn.Module,
                        source: str = 'checkpoint') -> None:
    """Check that ``state_dict`` fills ``backbone`` exactly.

    Args:
        state_dict: Converted tensors.
        backbone: The backbone they are for.
        source: The file, for errors.

    Raises:
        ValueError: Listing missing keys, unexpected keys and shape
            mismatches.
    """
    expected = backbone.state_dict()
    problems = []
    missing = [key for key in expected if key not in state_dict]
    unexpected = [key for key in state_dict if key not in expected]
    shapes = [
        f'{key} {tuple(state_dict[key].shape)} vs {tuple(value.shape)}'
        for key, value in expected.items()
        if key in state_dict and state_dict[key].shape != value.shape
    ]
    for what, keys in (('missing', missing), ('unexpected', unexpected),
                       ('shape mismatch (checkpoint vs backbone)', shapes)):
        if keys:
            shown = ', '.join(keys[:5]) + (', ...' if len(keys) > 5 else '')
            problems.append(f'{len(keys)} {what}: {shown}')
    if problems:
        raise ValueError(
            f'{source} does not fit the backbone {type(backbone).__name__}: '
            + '; '.join(problems))


def convert_checkpoint(src: str,
                       dst: str,
                       layout: str,
                       backbone: Optional[nn.Module] = None) -> StateDict:
    """Convert the checkpoint ``src`` and save it to ``dst``.

    ``dst`` holds ``dict(state_dict=..., meta=dict(converted_from=layout,
    source=src))``, ready for ``pretrained = dst`` in a config.

    Args:
        src: The source checkpoint.
        dst: The converted file (its folder is created).
        layout: The source layout (:data:`SOURCE_LAYOUTS`).
        backbone: When given, the converted keys must fill it exactly
            (:func:`check_backbone_keys`); nothing is written otherwise.

    Returns:
        StateDict: The converted tensors.
    """
    state_dict = convert_state_dict(read_state_dict(src), layout, src)
    if backbone is not None:
        check_backbone_keys(state_dict, backbone, src)
    os.makedirs(osp.dirname(osp.abspath(dst)), exist_ok=True)
    torch.save(
        dict(state_dict=state_dict,
             meta=dict(converted_from=layout, source=src)), dst)
    return state_dict


def config_backbone(config: str) -> nn.Module:
    """Build the backbone of a config (for :func:`convert_checkpoint`).

    Args:
        config: A config file.

    Returns:
        nn.Module: ``model.backbone``, randomly initialised.
    """
    from mmengine.registry import init_default_scope
    from mmseg.registry import MODELS

    import protoprompt_mm  # noqa: F401  (registers our components)
    from .config import load_config
    cfg = load_config(config)
    init_default_scope(cfg.get('default_scope', 'mmseg'))
    return MODELS.build(cfg.model.backbone)
