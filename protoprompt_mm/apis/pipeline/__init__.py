"""The whole two-stage WSSS pipeline (``tools/run_pipeline.py``):
stage-1 CAM training -> pseudo-masks -> stage-2 training -> tests, each a
subprocess of a script in ``tools/``, resumable, reported in
``results.json`` / ``results.md``.

- :mod:`.presets`: variants (stage-1 + stage-2 pairs) and presets;
- :mod:`.step_runner`: a step's subprocess and its done-marker;
- :mod:`.runner`: :class:`Pipeline`, the steps in order;
- :mod:`.scores`: the reported numbers, read from the test steps;
- :mod:`.aggregation`: means and stds over the seeds (``results.json``);
- :mod:`.results_report`: the markdown tables (``results.md``).
"""
from .aggregation import aggregate, mean_std
from .presets import PRESETS, Preset, Variant, config_name
from .results_report import (format_results_table, format_stain_table,
                             write_results)
from .runner import Pipeline, run_pipeline
from .scores import (SCORES, STAGE1_CLASS_SCORES, STAGE1_SCORES,
                     STAIN_CONDITION_SCORES, STAIN_SCORES, TEST_CLASS_SCORES,
                     TEST_SCORES, fraction, run_score_keys)
from .step_runner import REPO_ROOT, PipelineError, StepRunner, tool_command

__all__ = [
    'PRESETS', 'Pipeline', 'PipelineError', 'Preset', 'REPO_ROOT', 'SCORES',
    'STAGE1_CLASS_SCORES', 'STAGE1_SCORES', 'STAIN_CONDITION_SCORES',
    'STAIN_SCORES', 'StepRunner', 'TEST_CLASS_SCORES', 'TEST_SCORES',
    'Variant', 'aggregate', 'config_name', 'format_results_table',
    'format_stain_table', 'fraction', 'mean_std', 'run_pipeline',
    'run_score_keys', 'tool_command', 'write_results'
]
