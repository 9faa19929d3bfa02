"""``results.md`` and ``results.json``: the pipeline's numbers as markdown
tables (percentages) and as JSON (fractions)."""
import json
import os.path as osp
import time
from typing import List, Optional, Sequence

from .scores import RUN_METRICS, STAIN_CONDITION_SCORES

# Titles of the results tables, one per protocol (suffix of PROTOCOLS).
PROTOCOL_TITLES = {
    '': 'GT background ignored (WSSS-Tissue / MLPS protocol)',
    '_background_as_error': 'tissue predicted on GT background counts as '
    'error (TPRO / PBIP protocol)',
}
# Rows of the stain-shift table: score-name prefix -> row-name suffix.
STAIN_ROWS = {'stain_shift': '', 'stain_norm': ' + Macenko'}


def pct(value: Optional[float], std: Optional[float]) -> str:
    """A fraction and its std as ``'12.34 ± 0.56'`` (%; ``'-'`` if None)."""
    if value is None:
        return '-'
    return f'{100 * value:.2f}' if not std else \
        f'{100 * value:.2f} ± {100 * std:.2f}'


def format_results_table(results: dict, classes: List[str]) -> str:
    """Markdown tables of the pipeline's numbers, one per protocol (mean ±
    std, in %), then the stain-shift table; the pseudo-mask scores
    (training split) are in the first.

    Args:
        results: From :func:`~protoprompt_mm.apis.pipeline.aggregate`.
        classes: Class names, one column each.
    """
    tables = []
    for suffix, title in PROTOCOL_TITLES.items():
        columns = [(f'stage-1 CAM {key} (test)', f'stage1_cam_{name}{suffix}')
                   for name, key in RUN_METRICS.items()]
        if not suffix:
            columns += [('pseudo-mask mIoU (train)', 'pseudo_mask_miou'),
                        ('pseudo-mask precision mIoU',
                         'pseudo_mask_precision_miou'),
                        ('coverage', 'pseudo_mask_coverage')]
        columns += [(f'final {key} (test)', f'test_{name}{suffix}')
                    for name, key in RUN_METRICS.items()]
        lines = [
            f'{title}:', '',
            '| variant | ' + ' | '.join(head for head, _ in columns) +
            ' | ' + ' | '.join(classes) + ' |',
            '|---|' + '---|' * (len(columns) + len(classes))
        ]
        for name, entry in results['variants'].items():
            cells = [pct(entry[key], entry[f'{key}_std']) for _, key in columns]
            cells += [
                pct(entry[f'test_iou{suffix}'][cls],
                    entry[f'test_iou{suffix}_std'][cls]) for cls in classes
            ]
            lines.append(f'| {name} | ' + ' | '.join(cells) + ' |')
        tables.append('\n'.join(lines))
    tables.append(format_stain_table(results))
    return '\n\n'.join(tables)


def format_stain_table(results: dict) -> str:
    """Markdown table of the final models' mIoU on the re-stained test
    split: one row per variant (and per variant + Macenko normalisation,
    when run), one column per condition, then the worst change.

    Args:
        results: From :func:`~protoprompt_mm.apis.pipeline.aggregate`.
    """
    conditions = list(dict.fromkeys(
        name for entry in results['variants'].values()
        for key in STAIN_CONDITION_SCORES for name in entry.get(key, {})))
    lines = [
        'Stain shift: final mIoU (test, GT background ignored) on the test '
        'images re-stained in HED space (tools/test.py --stain-shift); '
        '+ Macenko: then normalised towards the stain target of the '
        "checkpoint's training images (--stain-norm):", '',
        '| variant | ' + ' | '.join(conditions) + ' | worst change |',
        '|---|' + '---|' * (len(conditions) + 1)
    ]
    for name, entry in results['variants'].items():
        for prefix, suffix in STAIN_ROWS.items():
            miou, std = (entry.get(f'{prefix}_miou{end}', {})
                         for end in ('', '_std'))
            if not miou:
                continue
            change = entry[f'{prefix}_worst_change']
            change_std = entry[f'{prefix}_worst_change_std']
            cells = [pct(miou.get(c), std.get(c)) for c in conditions]
            worst = '-' if change is None else \
                f'{"+" if change >= 0 else ""}{pct(change, change_std)}'

            lines.append(f'| {name}{suffix} | ' + ' | '.join(cells) +
                         f' | {worst} |')
    return '\n'.join(lines)


def write_results(work_dir: str, results: dict, classes: List[str],
                  preset: str, data_root: str, seeds: Sequence[int]) -> None:
    """Write ``<work_dir>/results.json`` and ``results.md``; print the
    tables.

    Args:
        work_dir: The pipeline's work dir.
        results: From :func:`~protoprompt_mm.apis.pipeline.aggregate`.
        classes: Class names, in label order.
        preset: Name of the preset run (in the header).
        data_root: The data root (in the header).
        seeds: The training seeds as given (in the header).
    """
    with open(osp.join(work_dir, 'results.json'), 'w') as f:
        json.dump(results, f, indent=2)
    table = format_results_table(results, classes)
    header = (
        f'# Results: preset {preset}, data {data_root}\n'
        f'\nAll numbers measured on this run '
        f'({time.strftime("%Y-%m-%d")}), seeds {seeds}: '
        'mean ± sample std over the seeds, IoU in %. Stage-1 CAMs and '
        'final masks on the test split (CAMs gated by predicted labels), '
        'means over the tissue classes (FwIoU: weighted by their share '
        'of the GT tissue pixels) under both protocols of the '
        'literature; pseudo-masks on the training split against its '
        'hidden masks: mIoU over all ground-truth tissue pixels '
        '(unlabelled = miss), precision mIoU over the labelled pixels, '
        'coverage = labelled fraction of the tissue.\n\n')
    with open(osp.join(work_dir, 'results.md'), 'w') as f:
        f.write(header + table + '\n')
    print(table, flush=True)
