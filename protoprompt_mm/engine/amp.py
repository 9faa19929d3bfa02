"""Mixed precision of a training config (``tools/train.py --amp``)."""
import argparse
import logging
from typing import Optional

import torch
from mmengine.config import Config
from mmengine.logging import print_log

# --amp values: plain --amp is fp16, or the config's own AMP setting.
AMP_CHOICES = ('fp16', 'bf16')
AMP_DEFAULT = 'default'
AMP_DTYPES = {'fp16': 'float16', 'bf16': 'bfloat16'}
# Each fp32 optim wrapper type and its mixed-precision counterpart.
AMP_WRAPPERS = {
    'OptimWrapper': 'AmpOptimWrapper',
    'FiniteLossOptimWrapper': 'FiniteLossAmpOptimWrapper',
}
FP32_WRAPPERS = {amp: fp32 for fp32, amp in AMP_WRAPPERS.items()}
AMP_ONLY_KEYS = ('loss_scale', 'dtype', 'use_fsdp')


def add_amp_argument(parser: argparse.ArgumentParser) -> None:
    """Add ``--amp [{fp16,bf16}]`` to a command line.

    The parsed ``amp`` is None without the flag, :data:`AMP_DEFAULT` for a
    plain ``--amp``, else the precision named, as :func:`configure_amp`
    takes it; argparse refuses any other value.

    Args:
        parser: The command line's parser.
    """
    parser.add_argument(
        '--amp',
        nargs='?',
        const=AMP_DEFAULT,
        choices=(*AMP_CHOICES, AMP_DEFAULT),
        metavar='{' + ','.join(AMP_CHOICES) + '}',
        help='mixed-precision training on a GPU: --amp fp16 (GradScaler), '
        '--amp bf16 (no loss scaling); plain --amp is fp16, or the '
        "config's AMP settings if it has them. fp32 on a CPU-only machine")


def configure_amp(cfg: Config,
                  amp: Optional[str] = None,
                  device: Optional[str] = None) -> None:
    """Set the precision of ``cfg.optim_wrapper`` in place.

    - ``amp=None`` keeps the config's precision.
    - ``'fp16'``: the AMP counterpart of the wrapper (``AmpOptimWrapper``,
      ``FiniteLossAmpOptimWrapper``) with ``dtype='float16'`` and a dynamic
      GradScaler (unless the config sets a loss scale of its own).
    - ``'bf16'``: the same with ``dtype='bfloat16'`` and no loss scaling
      (``loss_scale=dict(enabled=False)``): bf16 has the exponent range of
      fp32, so gradients do not underflow. Needs a GPU with bf16.
    - ``'default'`` (plain ``--amp``): as mmseg, fp16 unless the config
      already trains with AMP, whose settings are kept.

    Without a CUDA device (or with ``device='cpu'``) an AMP wrapper, asked
    for or in the config, is replaced by its fp32 counterpart with a
    warning: mmengine's ``AmpOptimWrapper`` refuses to run on the CPU.

    Args:
        cfg: The full training config.
        amp: None, ``'default'``, ``'fp16'`` or ``'bf16'``.
        device: Where the model trains, ``'cpu'`` or ``'cuda'``. Defaults to
            None, CUDA when available.

    Raises:
        ValueError: On another ``amp`` value, an optim wrapper type without
            an AMP counterpart, or bf16 on a GPU without bf16.
    """
    if amp not in (None, AMP_DEFAULT, *AMP_CHOICES):
        raise ValueError(f'--amp must be one of {AMP_CHOICES} (or given '
                         f'alone), got {amp!r}')
    wrapper = cfg.optim_wrapper
    kind = wrapper.get('type', 'OptimWrapper')
    if kind not in AMP_WRAPPERS and kind not in FP32_WRAPPERS:
        if amp is not None:
            raise ValueError(
                f'--amp needs optim_wrapper.type in '
                f'{sorted(AMP_WRAPPERS) + sorted(FP32_WRAPPERS)}, got {kind}')
        return
    if device == 'cpu' or not torch.cuda.is_available():
        if amp is not None:
            print_log('--amp needs a CUDA device; training in fp32 on the '
                      'CPU.', logger='current', level=logging.WARNING)
        if kind in FP32_WRAPPERS:
            print_log(
                f'optim_wrapper.type={kind} needs a CUDA device; training '
                f'in fp32 with {FP32_WRAPPERS[kind]} on the CPU.',
                logger='current', level=logging.WARNING)
            wrapper.type = FP32_WRAPPERS[kind]
            for key in AMP_ONLY_KEYS:
                wrapper.pop(key, None)
        return
    if amp is None:
        return
    if amp == AMP_DEFAULT:
        if kind in FP32_WRAPPERS:
            print_log('AMP is already enabled in the config.',
                      logger='current', level=logging.WARNING)
            return
        amp = 'fp16'
    if amp == 'bf16' and not torch.cuda.is_bf16_supported():
        raise ValueError('--amp bf16 needs a GPU with bfloat16 support '
                         '(Ampere or newer); use --amp fp16')
    wrapper.type = AMP_WRAPPERS.get(kind, kind)
    wrapper.dtype = AMP_DTYPES[amp]
    if amp == 'bf16':
        wrapper.loss_scale = dict(enabled=False)
    elif wrapper.get('loss_scale') in (None, dict(enabled=False)):
        wrapper.loss_scale = 'dynamic'
