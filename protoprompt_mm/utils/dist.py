"""Distributed helpers: CPU start-up, agreeing on a failure across ranks."""
import atexit
import logging
from contextlib import contextmanager
from typing import Dict, Iterator, Mapping

import torch
import torch.distributed as torch_dist
from mmengine.dist import all_gather_object, all_reduce, get_rank, \
    get_world_size
from mmengine.logging import MessageHub, print_log
from torch import Tensor

# MessageHub runtime-info key of the loss terms of the step in progress.
LOSS_TERMS_KEY = 'protoprompt_mm.loss_terms'


def init_cpu_process_group(launcher: str, backend: str = 'gloo') -> bool:
    """Join a ``torchrun`` launch with gloo when no CUDA device exists.

    mmengine's ``init_dist`` always selects a CUDA device, so on a CPU-only
    machine the default process group is created here instead (rank, world
    size and master address come from the launcher's environment). mmengine
    then finds the group initialised and uses it.

    Args:
        launcher: The ``--launcher`` value.
        backend: ``env_cfg.dist_cfg.backend`` of the config; anything but
            gloo is replaced by gloo, with a warning, as the others need GPUs.

    The group is destroyed when the process exits: a rank that exits with
    gloo's threads still running can abort ("terminate called without an
    active exception") after its work is done.

    Returns:
        bool: Whether a CPU process group was started here.
    """
    if launcher == 'none' or torch.cuda.is_available() \
            or torch_dist.is_initialized():
        return False
    if launcher != 'pytorch':
        raise ValueError(f'CPU-only distributed runs need --launcher pytorch '
                         f'(torchrun), got --launcher {launcher}')
    if backend != 'gloo':
        print_log(f'env_cfg.dist_cfg.backend={backend!r} needs GPUs; using '
                  'gloo on this CPU-only machine.', logger='current',
                  level=logging.WARNING)
    torch_dist.init_process_group(backend='gloo')
    atexit.register(_destroy_process_group)
    return True


def _destroy_process_group() -> None:
    """Shut the default group down, unless someone already did."""
    if torch_dist.is_initialized():
        torch_dist.destroy_process_group()


def rank_flags(flag: Tensor) -> Tensor:
    """Every rank's value of a bool flag, as one all-reduced vector.

    The reduction is only enqueued (on the flag's device for NCCL): nothing
    is read on the host, so a caller can issue it early and read it later.
    Every rank must call it, in the same order as its other collectives.

    Args:
        flag: A bool scalar tensor, this rank's flag.

    Returns:
        Tensor: float (world_size,) on ``flag.device``, 1 at the ranks whose
        flag is true, 0 elsewhere; (1,) without a process group.
    """
    flags = torch.zeros(get_world_size(), device=flag.device)
    flags[get_rank()] = flag.to(flags.dtype)
    all_reduce(flags)
    return flags


@contextmanager
def failure_on_any_rank_raises_on_all(task: str) -> Iterator[None]:
    """Let an exception inside the block reach every rank.

    Every rank enters the block; it may do rank-local work (e.g. rank 0
    reads a dataset alone) but must not start a collective, which would
    wait for a rank that failed before reaching it. On leaving, the ranks
    exchange their outcome (``all_gather_object``): a rank whose block
    raised re-raises its own exception, and the others raise a
    ``RuntimeError`` naming the failed rank(s) and their errors, so no rank
    is left waiting in the next collective. Without a process group it is
    a no-op.

    Args:
        task: What the block does, for the error message.

    Raises:
        RuntimeError: On a rank whose block succeeded while another's
            raised.
    """
    error = None
    try:
        yield
    except Exception as exc:  # re-raised below, after the exchange
        error = exc
    outcomes = all_gather_object(
        None if error is None else f'{type(error).__name__}: {error}')
    if error is not None:
        raise error
    failed = [f'rank {rank}: {outcome}'
              for rank, outcome in enumerate(outcomes) if outcome is not None]
    if failed:
        raise RuntimeError(f'{task} failed on another rank, so every rank '
                           'stops; ' + '; '.join(failed))


def record_loss_terms(log_vars: Mapping[str, Tensor]) -> None:
    """Keep the loss terms of this step for the optim wrapper's check.

    Called by the segmentors' ``parse_losses``; the finite-loss optim
    wrappers (:mod:`protoprompt_mm.engine.optim_wrappers`) take the record
    in the same step to name the terms of a non-finite loss. The values are
    detached; nothing is read on the host. The record is not checkpointed.

    Args:
        log_vars: ``parse_losses`` output; the keys containing ``loss``,
            other than the total ``loss``, are the terms.
    """
    MessageHub.get_current_instance().update_info(
        LOSS_TERMS_KEY, {
            name: value.detach()
            for name, value in log_vars.items()
            if 'loss' in name and name != 'loss'
        },
        resumed=False)


def take_loss_terms() -> Dict[str, Tensor]:
    """The terms :func:`record_loss_terms` kept for this step, removed.

    Returns:
        dict: Term name to detached scalar; empty when the model recorded
        none (a model without ``FiniteLossMixin``).
    """
    return MessageHub.get_current_instance().pop_info(LOSS_TERMS_KEY, {})
