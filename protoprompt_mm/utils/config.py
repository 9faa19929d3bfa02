"""Config loading that works with both the official and the onedl stacks."""
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
