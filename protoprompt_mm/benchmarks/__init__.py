"""Benchmarks as library code: one job per file, each importable and
testable on tiny inputs; the scripts in ``tools/`` are thin command lines
over them.

* :mod:`.slide_throughput`: whole-slide inference against the model's own
  batched forward pass, and peak RSS against slide size
  (``tools/benchmark_slide.py``).
* :mod:`.model_comparison`: speed and peak memory of a ProtoPrompt config
  against a baseline config (``tools/benchmark.py``), from
  :mod:`.model_building` (the compared models, random weights),
  :mod:`.synthetic_batch`, :mod:`.timing` (interleaved timing),
  :mod:`.memory_probe` (step peak memory), :mod:`.step_breakdown` (the
  components of a training step), :mod:`.pseudo_mask_tta` (the stage-1 TTA
  cost) and :mod:`.comparison_report` (the printed report).
"""
