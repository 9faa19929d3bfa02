"""Optim wrappers whose ranks agree on a non-finite training loss."""
import logging
from typing import Dict, List, Optional

import torch
from mmengine.dist import all_gather_object
from mmengine.logging import print_log
from mmengine.optim import AmpOptimWrapper, OptimWrapper
from mmseg.registry import OPTIM_WRAPPERS
from torch import Tensor

from ...utils import rank_flags, take_loss_terms

ON_NONFINITE = ('raise', 'skip')


class NonFiniteLossError(FloatingPointError):
    """A non-finite training loss, raised on every rank of the job."""


class FiniteLossCheckMixin:
    """Mixin for mmengine optim wrappers: all ranks act on a NaN/Inf loss.

    ``update_params(loss)`` flags a non-finite ``loss`` and all-reduces the
    flags of every rank (:func:`~protoprompt_mm.utils.rank_flags`) before
    the backward pass, and reads them after it: one host read of a
    (world_size,) vector per step, once the backward pass is queued. Every
    rank runs that backward pass, so DDP's gradient all-reduce completes
    even where the loss was NaN. When any rank's loss was not finite:

    - ``on_nonfinite='raise'``: every rank raises :class:`NonFiniteLossError`
      naming the iteration, the rank(s) and their non-finite loss terms
      (recorded by the segmentors' ``FiniteLossMixin``; "the total loss"
      for other models), before the optimizer step;
    - ``on_nonfinite='skip'``: the same is logged as a warning and every
      rank drops its gradients without stepping the optimizer (nor, under
      AMP, the loss scaler): parameters, optimizer state and loss scale stay
      as they were. With gradient accumulation the gradients accumulated so
      far in the window are dropped as well. Buffers changed by the forward
      pass (BatchNorm statistics, a momentum PrototypeBank) are not undone.

    The loss is checked before loss scaling. Under fp16
    ``AmpOptimWrapper`` a finite loss whose scaled gradients overflow stays
    GradScaler's business (it skips the step and lowers the scale, as
    usual). A loss that is itself NaN/Inf comes from the forward pass (an
    fp16 activation overflow, bad input, a diverged model), which no loss
    scale cures: GradScaler alone would skip such steps silently and keep
    shrinking the scale.

    Args:
        on_nonfinite: ``'raise'`` or ``'skip'``. Defaults to ``'raise'``.
        **kwargs: Arguments of the wrapped optim wrapper class.
    """

    def __init__(self, *args, on_nonfinite: str = 'raise', **kwargs) -> None:
        if on_nonfinite not in ON_NONFINITE:
            raise ValueError(f'on_nonfinite must be one of {ON_NONFINITE}, '
                             f'got {on_nonfinite!r}')
        super().__init__(*args, **kwargs)
        self.on_nonfinite = on_nonfinite

    def update_params(self,
                      loss: Tensor,
                      step_kwargs: Optional[Dict] = None,
                      zero_kwargs: Optional[Dict] = None) -> None:
        """Backward, then step unless a rank's loss was NaN/Inf.

        Args:
            loss: The total loss of this rank (scalar).
            step_kwargs: Arguments of ``optimizer.step``.
            zero_kwargs: Arguments of ``optimizer.zero_grad``.

        Raises:
            NonFiniteLossError: On every rank, with ``on_nonfinite='raise'``,
                when the loss of any rank is not finite.
        """
        flags = rank_flags(~torch.isfinite(loss.detach()).all())
        terms = take_loss_terms()
        self.backward(self.scale_loss(loss))
        failed = flags.nonzero().flatten().tolist()
        if failed:
            self._nonfinite_step(failed, terms, zero_kwargs or {})
        elif self.should_update():
            self.step(**(step_kwargs or {}))
            self.zero_grad(**(zero_kwargs or {}))

    def _nonfinite_step(self, failed: List[int], terms: Dict[str, Tensor],
                        zero_kwargs: dict) -> None:
        """Raise, or log and drop the gradients, identically on every rank.

        Args:
            failed: The ranks whose loss was not finite (the same list on
                every rank).
            terms: This rank's recorded loss terms.
            zero_kwargs: Arguments of ``optimizer.zero_grad``.
        """
        local = [
            f'{name}={float(value):g}' for name, value in terms.items()
            if not torch.isfinite(value).all()
        ]
        per_rank = all_gather_object(local)
        where = '; '.join(
            f'rank {rank}: {", ".join(per_rank[rank]) or "the total loss"}'
            for rank in failed)
        # backward() has counted this step: the 1-based iteration of the log.
        message = (f'{type(self).__name__}: non-finite training loss at '
                   f'iteration {self._inner_count} ({where})')
        if self.on_nonfinite == 'raise':
            raise NonFiniteLossError(
                f'{message}; every rank stops before the optimizer step. '
                'Check the learning rate, the inputs and the pseudo-labels '
                "of this batch, or set optim_wrapper.on_nonfinite='skip' to "
                'skip such steps.')
        print_log(f'{message}; the step is skipped on every rank',
                  logger='current', level=logging.WARNING)
        self.zero_grad(**zero_kwargs)


@OPTIM_WRAPPERS.register_module()
class FiniteLossOptimWrapper(FiniteLossCheckMixin, OptimWrapper):
    """``OptimWrapper`` whose ranks raise or skip together on a NaN/Inf loss.

    See :class:`FiniteLossCheckMixin`. Example::

        optim_wrapper = dict(
            type='FiniteLossOptimWrapper', on_nonfinite='raise',
            optimizer=dict(type='AdamW', lr=1e-3))

    Args:
        on_nonfinite: ``'raise'`` or ``'skip'``. Defaults to ``'raise'``.
        **kwargs: ``OptimWrapper`` arguments (``optimizer``,
            ``accumulative_counts``, ``clip_grad``).
    """


@OPTIM_WRAPPERS.register_module()
class FiniteLossAmpOptimWrapper(FiniteLossCheckMixin, AmpOptimWrapper):
    """``AmpOptimWrapper`` whose ranks raise or skip together on a NaN/Inf
    loss; gradient overflows under fp16 remain GradScaler's skips.

    See :class:`FiniteLossCheckMixin`; ``tools/train.py --amp`` selects it
    for ``FiniteLossOptimWrapper`` configs.

    Args:
        on_nonfinite: ``'raise'`` or ``'skip'``. Defaults to ``'raise'``.
        **kwargs: ``AmpOptimWrapper`` arguments (``loss_scale``, ``dtype``,
            ``optimizer``, ...).
    """
