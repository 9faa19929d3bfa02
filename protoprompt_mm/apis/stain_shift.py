"""Stain-shift evaluation: test metrics on re-stained copies of a test split.

Each condition of :data:`~protoprompt_mm.datasets.stain.STAIN_SHIFTS`
(H and E concentrations scaled in HED space: paler, darker,
haematoxylin-heavy, eosin-heavy) inserts ``FixedStainShift`` right after
``LoadImageFromFile`` of the test pipeline (also of a ``--tta`` pipeline)
and runs mmengine's ``Runner.test`` once; ``clean`` is the pipeline as
configured. The metrics go to ``stain_shift.json`` and a markdown table
``stain_shift.md`` in the work dir.
"""
import copy
import json
import os
import os.path as osp
import time
from typing import Dict, Optional, Sequence, Tuple

from mmengine.config import Config
from mmengine.runner import Runner

from protoprompt_mm.datasets.stain import (STAIN_SHIFTS,
                                           build_stain_normalizer)

CLEAN = 'clean'
REPORT_FILES = ('stain_shift.json', 'stain_shift.md')


def with_stain_shift(cfg: Config, condition: str) -> Config:
    """A copy of ``cfg`` whose test images are re-stained by ``condition``.

    Args:
        cfg: A runner config with ``test_dataloader.dataset.pipeline``.
        condition: ``'clean'`` (a plain copy) or a key of ``STAIN_SHIFTS``.

    Returns:
        Config: The copy.

    Raises:
        ValueError: If ``condition`` is unknown or the test pipeline has no
            ``LoadImageFromFile`` step.
    """
    if condition != CLEAN and condition not in STAIN_SHIFTS:
        raise ValueError(f'stain shift: condition must be {CLEAN!r} or one '
                         f'of {sorted(STAIN_SHIFTS)}, got {condition!r}')
    cfg = copy.deepcopy(cfg)
    if condition == CLEAN:
        return cfg
    insert_after_loading(cfg, dict(type='FixedStainShift',
                                   condition=condition), 'stain shift')
    return cfg


def insert_after_loading(cfg: Config, step: dict, what: str) -> None:
    """Insert ``step`` right after ``LoadImageFromFile`` of the test pipeline.

    Args:
        cfg: A runner config with ``test_dataloader.dataset.pipeline``
            (changed in place).
        step: The transform config.
        what: Name of the caller, for the error message.

    Raises:
        ValueError: If the test pipeline has no ``LoadImageFromFile`` step.
    """
    pipeline = cfg.test_dataloader.dataset.pipeline
    loads = [i for i, entry in enumerate(pipeline)
             if entry.get('type') == 'LoadImageFromFile']
    if not loads:
        raise ValueError(
            f'{what}: test_dataloader.dataset.pipeline has no '
            "dict(type='LoadImageFromFile') step to insert after; its "
            f'steps: {[entry.get("type") for entry in pipeline]}')
    pipeline.insert(loads[0] + 1, step)


def with_stain_normalization(cfg: Config, reference: str) -> Config:
    """A copy of ``cfg`` whose test images are Macenko-normalised first.

    ``MacenkoStainNormalize(reference=reference)`` goes right after
    ``LoadImageFromFile`` of the test pipeline; a stain shift added later
    by :func:`with_stain_shift` lands before it (the normalisation sees the
    re-stained image, as it would another lab's).

    Args:
        cfg: A runner config with ``test_dataloader.dataset.pipeline``.
        reference: Reference image, or a checkpoint carrying the stain
            target of its training images (``StainTargetHook``).

    Returns:
        Config: The copy.

    Raises:
        FileNotFoundError / KeyError / ValueError: From
            :func:`~protoprompt_mm.datasets.stain.build_stain_normalizer`
            when the reference cannot give a target (checked here, before
            any test runs).
    """
    build_stain_normalizer(reference)
    cfg = copy.deepcopy(cfg)
    insert_after_loading(
        cfg, dict(type='MacenkoStainNormalize', reference=reference),
        'stain normalisation')
    return cfg


def stain_shift_test(
        cfg: Config,
        conditions: Sequence[str] = tuple(STAIN_SHIFTS)
) -> Dict[str, Dict[str, float]]:
    """Test metrics of the clean and of each re-stained test split.

    One ``Runner.test`` per condition, each in ``<work_dir>/stain_shift/
    <condition>`` with its own experiment name; an evaluator
    ``output_dir`` (``tools/test.py --out``) gets a sub-folder per
    condition.

    Args:
        cfg: A runner config (``load_from`` the checkpoint, ``work_dir``).
        conditions: Keys of ``STAIN_SHIFTS``; ``clean`` always runs first.

    Returns:
        dict: ``{condition: metrics}``, clean first.
    """
    names = [CLEAN, *dict.fromkeys(c for c in conditions if c != CLEAN)]
    configs = [with_stain_shift(cfg, name) for name in names]  # check all
    stamp = time.strftime('%Y%m%d_%H%M%S', time.localtime())
    results = {}
    for name, shifted in zip(names, configs):
        shifted.work_dir = osp.join(cfg.work_dir, 'stain_shift', name)
        shifted.experiment_name = f'stain_shift_{name}_{stamp}'
        evaluator = shifted.test_evaluator
        if isinstance(evaluator, dict) and evaluator.get('output_dir'):
            evaluator['output_dir'] = osp.join(evaluator['output_dir'], name)
        metrics = Runner.from_cfg(shifted).test()
        results[name] = {key: float(value) for key, value in metrics.items()}
    return results


def stain_shift_table(results: Dict[str, Dict[str, float]],
                      metric: str = 'mIoU') -> str:
    """Markdown table of ``metric`` per condition and its change from clean.

    Args:
        results: From :func:`stain_shift_test`.
        metric: A metric key of every condition.

    Raises:
        KeyError: If a condition lacks ``metric``.
    """
    for name, metrics in results.items():
        if metric not in metrics:
            raise KeyError(f'stain shift: no {metric!r} in the metrics of '
                           f'{name!r}: {sorted(metrics)}')
    clean = results[CLEAN][metric]
    lines = [
        f'| condition | H x | E x | {metric} | change |',
        '|---|---|---|---|---|',
    ]
    for name, metrics in results.items():
        h, e = STAIN_SHIFTS.get(name, (1.0, 1.0))
        change = '' if name == CLEAN else f'{metrics[metric] - clean:+.2f}'
        lines.append(f'| {name} | {h:g} | {e:g} | {metrics[metric]:.2f} '
                     f'| {change} |')
    return '\n'.join(lines) + '\n'


def write_stain_shift_report(results: Dict[str, Dict[str, float]],
                             out_dir: str,
                             metric: str = 'mIoU',
                             checkpoint: Optional[str] = None,
                             stain_norm: Optional[str] = None
                             ) -> Tuple[str, str]:
    """Write ``stain_shift.json`` (all metrics) and ``stain_shift.md``.

    Args:
        results: From :func:`stain_shift_test`.
        out_dir: Folder of the two files (created).
        metric: The table's metric.
        checkpoint: Named in both files when given.
        stain_norm: The Macenko reference the test images were normalised
            towards (``tools/test.py --stain-norm``), named when given.

    Returns:
        tuple: The JSON and markdown paths.
    """
    os.makedirs(out_dir, exist_ok=True)
    json_path, md_path = (osp.join(out_dir, name) for name in REPORT_FILES)
    factors = {name: dict(zip(('H', 'E'), STAIN_SHIFTS[name]))
               for name in results if name != CLEAN}
    with open(json_path, 'w') as f:
        json.dump(dict(checkpoint=checkpoint, stain_norm=stain_norm,
                       factors=factors, metrics=results), f, indent=2)
    source = f' of {checkpoint}' if checkpoint else ''
    norm = (f'; then Macenko-normalised towards the stain of {stain_norm}'
            if stain_norm else '')
    with open(md_path, 'w') as f:
        f.write(f'Stain shift{source}: H and E concentrations scaled in HED '
                f'space (Ruifrok-Johnston){norm}\n\n' +
                stain_shift_table(results, metric))
    return json_path, md_path
