"""Config loading that works with both the official and the onedl stacks."""
import os.path as osp
from typing import Optional

from mmengine.config import Config
from mmengine.config import utils as config_utils
from mmengine.utils import get_installed_path


def enable_mmseg_scope_configs() -> None:
    """Let ``_base_ = 'mmseg::...'`` resolve whichever mmseg is installed.

    mmengine maps the ``mmseg::`` prefix to the distribution
    ``mmsegmentation``; the onedl fork installs ``mmseg`` under another
    distribution name, so the prefix is pointed at the import name when the
    official distribution is absent.
    """
    try:
        get_installed_path(config_utils.MODULE2PACKAGE['mmseg'])
    except Exception:
        config_utils.MODULE2PACKAGE['mmseg'] = 'mmseg'


def load_config(path: str, cfg_options: Optional[dict] = None) -> Config:
    """Read a config file, resolving ``mmseg::`` bases, and merge options.

    Args:
        path: The config file.
        cfg_options: ``--cfg-options`` style overrides (dotted keys).

    Returns:
        Config: The merged config.
    """
    enable_mmseg_scope_configs()
    cfg = Config.fromfile(path)
    if cfg_options:
        cfg.merge_from_dict(cfg_options)
    return cfg


def load_runner_config(path: str,
                       cfg_options: Optional[dict] = None,
                       launcher: str = 'none',
                       work_dir: Optional[str] = None) -> Config:
    """:func:`load_config` plus what ``tools/train.py``/``test.py`` set.

    The work dir comes from ``work_dir`` if given, else the config's own,
    else ``./work_dirs/<config name>`` (mmseg's rule).

    Args:
        path: The config file.
        cfg_options: ``--cfg-options`` overrides.
        launcher: The ``--launcher`` value.
        work_dir: The ``--work-dir`` value.

    Returns:
        Config: The config, ready for ``Runner.from_cfg``.
    """
    cfg = load_config(path, cfg_options)
    cfg.launcher = launcher
    if work_dir is not None:
        cfg.work_dir = work_dir
    elif cfg.get('work_dir') is None:
        cfg.work_dir = osp.join('./work_dirs',
                                osp.splitext(osp.basename(path))[0])
    return cfg
