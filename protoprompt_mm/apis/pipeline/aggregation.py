"""``results.json``: the per-seed scores of every variant as means and
sample standard deviations over the seeds."""
import statistics
from typing import Dict, List, Optional, Sequence, Tuple

from .presets import Variant
from .scores import (SCORES, STAGE1_CLASS_SCORES, STAGE1_SCORES,
                     STAIN_CONDITION_SCORES, STAIN_SCORES, TEST_CLASS_SCORES,
                     TEST_SCORES)


def mean_std(
    values: Sequence[Optional[float]]
) -> Tuple[Optional[float], Optional[float]]:
    """Mean and sample standard deviation (0 for one value) of the values
    that are not None; (None, None) when there are none."""
    values = [v for v in values if v is not None]
    if not values:
        return None, None
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return round(statistics.fmean(values), 4), round(std, 4)


def aggregate(per_seed: Dict[int, Dict[str, dict]],
              variants: Dict[str, Variant], classes: List[str]) -> dict:
    """``results.json``: every score as mean and ``*_std`` over the seeds.

    The top-level stage-1 scores (``stage1_cam_miou`` ..., without the
    per-class ones) and ``pseudo_mask_*`` are those of the primary variant
    (``full`` when run, else the first); the test scores (``test_miou``,
    ``test_iou`` ..., both protocols) map every variant to its means,
    ``*_std`` to its stds, and ``variants`` holds each variant's configs,
    scores and per-seed values.

    Args:
        per_seed: Seed -> variant -> its scores (names of
            :mod:`~protoprompt_mm.apis.pipeline.scores`).
        variants: Variant name -> its configs, in report order.
        classes: Class names of the per-class scores.

    Returns:
        dict: The content of ``results.json``.
    """
    seeds = sorted(per_seed)
    summary = {}
    for name, variant in variants.items():
        runs = [per_seed[seed][name] for seed in seeds]
        entry = dict(stage1_config=variant.stage1,
                     stage2_config=variant.stage2)
        for key in SCORES:
            entry[key], entry[f'{key}_std'] = mean_std(
                [run.get(key) for run in runs])
        for key in STAIN_CONDITION_SCORES:
            conditions = dict.fromkeys(
                name for run in runs for name in run.get(key, {}))
            stats = {
                name: mean_std([run.get(key, {}).get(name) for run in runs])
                for name in conditions
            }
            entry[key] = {name: stat[0] for name, stat in stats.items()}
            entry[f'{key}_std'] = {
                name: stat[1]
                for name, stat in stats.items()
            }
        for key in STAGE1_CLASS_SCORES + TEST_CLASS_SCORES:
            stats = {
                cls: mean_std([run[key][cls] for run in runs])
                for cls in classes
            }
            entry[key] = {cls: stat[0] for cls, stat in stats.items()}
            entry[f'{key}_std'] = {cls: stat[1] for cls, stat in stats.items()}
        entry['per_seed'] = {str(seed): per_seed[seed][name] for seed in seeds}
        summary[name] = entry
    primary = summary['full'] if 'full' in summary else next(
        iter(summary.values()))
    results = dict(seeds=seeds)
    for key in STAGE1_SCORES:
        results[key] = primary[key]
        results[f'{key}_std'] = primary[f'{key}_std']
    for key in (TEST_SCORES + TEST_CLASS_SCORES + STAIN_SCORES +
                STAIN_CONDITION_SCORES):
        for name in (key, f'{key}_std'):
            results[name] = {
                variant: entry[name]
                for variant, entry in summary.items()
            }
    results['variants'] = summary
    return results
