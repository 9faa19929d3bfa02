"""Config loading that works with both the official and the onedl stacks."""
import os.path as osp
from typing import Optional

from mmengine.config import Config
from mmengine.config import utils as config_utils
from mmengine.logging import print_log
from mmengine.runner import find_latest_checkpoint
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
    apply_pretrained(cfg)
    return cfg


def apply_pretrained(cfg: Config) -> None:
    """Make the config's ``pretrained`` the backbone's ``init_cfg``.

    A config's ``model`` dict is evaluated in the file that writes it, so a
    child config's ``pretrained = '...'`` or ``--cfg-options pretrained=...``
    would not reach an expression of a base; the top-level variable is
    therefore read here, after every file and option is merged. A path sets
    ``model.backbone.init_cfg=dict(type='Pretrained', checkpoint=path)``
    (mmengine loads it in ``init_weights()``, a missing file stops the run
    before the first iteration); None leaves the backbone as configured
    (random initialisation in our configs).

    Args:
        cfg: The merged config; changed in place.

    Raises:
        ValueError: If ``pretrained`` is not a local path (URLs such as
            ``open-mmlab://`` would be downloaded), or the config has no
            ``model.backbone``.
    """
    pretrained = cfg.get('pretrained')
    if pretrained is None:
        return
    if not isinstance(pretrained, str) or not pretrained.strip() \
            or '://' in pretrained:
        raise ValueError(
            f'pretrained={pretrained!r}: expected the path of a local '
            'checkpoint (tools/convert_weights.py writes one); nothing is '
            'downloaded')
    if 'backbone' not in cfg.get('model', {}):
        raise ValueError(f'pretrained={pretrained}: the config has no '
                         'model.backbone to load it into')
    cfg.model.backbone.init_cfg = dict(
        type='Pretrained', checkpoint=osp.expanduser(pretrained))


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


def set_training_start(cfg: Config, resume: bool) -> None:
    """Set ``cfg.resume`` / ``cfg.load_from`` for ``tools/train.py``.

    mmengine's Runner resumes *from* ``load_from`` when both ``resume`` and
    ``load_from`` are set, so a stage-2 run that starts from the stage-1
    weights could not be resumed (the stage-1 optimizer state does not fit).
    Here ``--resume`` means "continue this work dir": when its
    ``last_checkpoint`` names a checkpoint the run resumes from that file
    and ``load_from`` is not used; otherwise it is a new run, started from
    ``load_from`` when one is set. ``load_from`` is then checked, so that a
    missing stage-1 checkpoint stops the run before anything is built.

    Args:
        cfg: The config from :func:`load_runner_config` (``work_dir`` set);
            changed in place.
        resume: The ``--resume`` flag.

    Raises:
        FileNotFoundError: If ``load_from`` names a local file that does not
            exist.
        ValueError: If ``load_from`` is an empty string.
    """
    load_from = cfg.get('load_from')
    latest = find_latest_checkpoint(cfg.work_dir) if resume else None
    if latest:
        unused = '' if load_from in (None, latest) else \
            f' (load_from={load_from} is not used)'
        print_log(f'--resume: resuming from {latest}, the last checkpoint '
                  f'of the work dir {cfg.work_dir}{unused}', logger='current')
        cfg.load_from, cfg.resume = latest, True
        check_load_from(
            latest, f'{osp.join(cfg.work_dir, "last_checkpoint")} names it: '
            'restore that file, or delete last_checkpoint to start anew')
        return
    if resume:
        start = 'from scratch' if load_from is None else \
            f'from load_from={load_from}'
        print_log(f'--resume: no checkpoint in the work dir {cfg.work_dir} '
                  f'yet; starting a new run {start}', logger='current')
    cfg.resume = False
    check_load_from(
        load_from, 'for a stage-2 config it is the stage-1 checkpoint: '
        'train stage 1 first (the file named in its work dir\'s '
        'last_checkpoint), or set --cfg-options load_from=None to train '
        'from scratch')


def check_load_from(load_from: Optional[str], hint: str) -> None:
    """Fail early, naming the file, when ``load_from`` cannot be loaded.

    URLs and other ``scheme://`` paths are left to mmengine.

    Args:
        load_from: The checkpoint, or None (nothing is loaded).
        hint: What the file is and what to do, appended to the error.

    Raises:
        FileNotFoundError: If ``load_from`` is a local path that is not a
            file.
        ValueError: If ``load_from`` is empty or not a string.
    """
    if load_from is None:
        return
    if not isinstance(load_from, str) or not load_from.strip():
        raise ValueError(
            f'load_from={load_from!r} is not a checkpoint path (did the '
            f'shell substitution that should give it fail?); {hint}')
    if '://' in load_from:
        return
    if not osp.isfile(osp.expanduser(load_from)):
        raise FileNotFoundError(
            f'load_from={load_from} does not exist; {hint}')


def set_test_options(cfg: Config,
                     checkpoint: str,
                     show: bool = False,
                     show_dir: Optional[str] = None,
                     wait_time: float = 2,
                     tta: bool = False,
                     out: Optional[str] = None) -> Config:
    """Set what ``tools/test.py``'s flags ask for, as mmseg's does.

    Args:
        cfg: A config from :func:`load_runner_config` (modified).
        checkpoint: The tested checkpoint (``load_from``).
        show: Show the prediction overlays (``--show``).
        show_dir: Save the overlays there (``--show-dir``).
        wait_time: Seconds each shown overlay stays (``--wait-time``).
        tta: Test-time augmentation: the config's ``tta_model`` around its
            model, its ``tta_pipeline`` for the test set (``--tta``).
        out: Save the predicted masks there as PNGs (``--out``).

    Returns:
        Config: ``cfg``.

    Raises:
        KeyError: If ``show`` / ``show_dir`` is set without
            ``default_hooks.visualization``, or ``tta`` without
            ``tta_model`` and ``tta_pipeline``.
    """
    cfg.load_from = checkpoint
    if show or show_dir:
        hook = cfg.default_hooks.get('visualization')
        if hook is None:
            raise KeyError(
                '--show/--show-dir need default_hooks.visualization='
                f"dict(type='SegVisualizationHook') in {cfg.filename}")
        hook['draw'] = True
        if show:
            hook['show'] = True
            hook['wait_time'] = wait_time
        if show_dir:
            cfg.visualizer['save_dir'] = show_dir
    if tta:
        if 'tta_model' not in cfg or 'tta_pipeline' not in cfg:
            raise KeyError('--tta needs tta_model and tta_pipeline in the '
                           f'config {cfg.filename}')
        cfg.test_dataloader.dataset.pipeline = cfg.tta_pipeline
        cfg.tta_model.module = cfg.model
        cfg.model = cfg.tta_model
    if out is not None:
        cfg.test_evaluator['output_dir'] = out
        cfg.test_evaluator['keep_results'] = True
    return cfg
