"""The numbers the pipeline reports per variant and seed, read from what
its test steps wrote, as fractions in [0, 1].

A test run is scored under both protocols of ``TissueIoUMetric``: GT
background ignored (the plain names, e.g. ``test_miou``) and counted as
error (``*_background_as_error``), each with mIoU, mDice, FwIoU and
per-class IoU (class -> number). The final models are also tested on the
test split re-stained in HED space (``tools/test.py --stain-shift``; with
``--stain-norm`` also Macenko-normalised towards the stain target their
checkpoint carries): mIoU per condition (condition -> number, ``clean``
first) and the worst change from clean (a number, <= 0 when every
condition loses).
"""
import glob
import json
import math
import os.path as osp
from typing import Dict, List, Optional

from ..stain_shift import CLEAN
from .step_runner import PipelineError

# Protocols of a test run: suffix of its names in results.json -> key prefix
# of TissueIoUMetric (the dataset bases' evaluator reports both).
PROTOCOLS = {'': '', '_background_as_error': 'background_as_error/'}
# Scores of a test run: name in results.json -> TissueIoUMetric key.
RUN_METRICS = {'miou': 'mIoU', 'mdice': 'mDice', 'fwiou': 'FwIoU'}
# Stain-shift runs of a final model: without and with Macenko normalisation.
STAIN_RUNS = ('stain_shift', 'stain_norm')


def run_score_keys(stage: str) -> Dict[str, str]:
    """results.json names of a test run's scores (e.g. ``test_miou``,
    ``test_miou_background_as_error``) -> their TissueIoUMetric keys."""
    return {
        f'{stage}_{name}{suffix}': prefix + key
        for suffix, prefix in PROTOCOLS.items()
        for name, key in RUN_METRICS.items()
    }


STAGE1_SCORES = (*run_score_keys('stage1_cam'), 'pseudo_mask_miou',
                 'pseudo_mask_precision_miou', 'pseudo_mask_coverage')
TEST_SCORES = tuple(run_score_keys('test'))
STAIN_CONDITION_SCORES = tuple(f'{run}_miou' for run in STAIN_RUNS)
STAIN_SCORES = tuple(f'{run}_worst_change' for run in STAIN_RUNS)
SCORES = STAGE1_SCORES + TEST_SCORES + STAIN_SCORES
STAGE1_CLASS_SCORES = tuple(f'stage1_cam_iou{suffix}' for suffix in PROTOCOLS)
TEST_CLASS_SCORES = tuple(f'test_iou{suffix}' for suffix in PROTOCOLS)


def fraction(percent: Optional[float]) -> Optional[float]:
    """A percentage from mmseg's metrics as a 0-1 fraction.

    IoU of a class absent from both prediction and ground truth is NaN in
    mmseg; it becomes None (JSON null), not a number.
    """
    if percent is None or math.isnan(percent):
        return None
    return round(percent / 100, 4)


def run_scores(step: str, stage: str, metrics: Dict[str, float],
               classes: List[str]) -> dict:
    """A test run's scores under both protocols, as fractions.

    Args:
        step: The step that tested (for the error message).
        stage: Name prefix, ``'stage1_cam'`` or ``'test'``.
        metrics: What ``tools/test.py`` logged.
        classes: Class names of the per-class IoU.

    Returns:
        dict: ``<stage>_miou`` / ``_mdice`` / ``_fwiou`` and
        ``<stage>_iou`` (class -> IoU), each also with the suffix
        ``_background_as_error``.

    Raises:
        PipelineError: If a metric is missing.
    """
    keys = run_score_keys(stage)
    class_keys = {
        f'{stage}_iou{suffix}': {cls: f'{prefix}IoU.{cls}'
                                 for cls in classes}
        for suffix, prefix in PROTOCOLS.items()
    }
    needed = [*keys.values()] + [
        key for per_class in class_keys.values()
        for key in per_class.values()
    ]
    missing = [key for key in needed if key not in metrics]
    if missing:
        raise PipelineError(
            f'step "{step}_test" logged no {missing}: its '
            f'test_evaluator must be TissueIoUMetric with iou_metrics '
            f"['mIoU', 'mDice', 'FwIoU'] and extra_protocols="
            f"['background_as_error'] (as in configs/_base_/datasets)")
    scores = {name: fraction(metrics[key]) for name, key in keys.items()}
    for name, per_class in class_keys.items():
        scores[name] = {
            cls: fraction(metrics[key])
            for cls, key in per_class.items()
        }
    return scores


def read_test_metrics(work_dir: str) -> Dict[str, float]:
    """The metrics a ``tools/test.py`` run logged (newest JSON in its dir).

    Raises:
        PipelineError: If no logged JSON under ``work_dir`` has ``mIoU``.
    """
    files = sorted(glob.glob(osp.join(work_dir, '*', '*.json')))
    for path in reversed(files):
        with open(path) as f:
            metrics = json.load(f)
        if 'mIoU' in metrics:
            return metrics
    raise PipelineError(f'no test metrics (mIoU) found under {work_dir}')


def read_stain_shift_metrics(work_dir: str) -> Dict[str, Dict[str, float]]:
    """The metrics per condition of a ``tools/test.py --stain-shift`` run.

    Args:
        work_dir: Its ``--work-dir``, holding ``stain_shift.json``.

    Returns:
        dict: Condition -> its metrics, ``clean`` first.
    """
    with open(osp.join(work_dir, 'stain_shift.json')) as f:
        return json.load(f)['metrics']


def stain_scores(run: str, conditions: Dict[str, Dict[str, float]]) -> dict:
    """A stain-shift run's mIoU per condition and worst change from clean.

    Args:
        run: Name prefix, a name of :data:`STAIN_RUNS`.
        conditions: From :func:`read_stain_shift_metrics`.

    Returns:
        dict: ``<run>_miou`` (condition -> fraction) and
        ``<run>_worst_change`` (fraction).
    """
    miou = {name: fraction(metrics['mIoU'])
            for name, metrics in conditions.items()}
    worst = min(value - miou[CLEAN]
                for name, value in miou.items() if name != CLEAN)
    return {f'{run}_miou': miou, f'{run}_worst_change': round(worst, 4)}
