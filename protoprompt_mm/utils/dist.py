"""Distributed start-up on machines without a GPU."""
import atexit
import logging

import torch
import torch.distributed as torch_dist
from mmengine.logging import print_log


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
