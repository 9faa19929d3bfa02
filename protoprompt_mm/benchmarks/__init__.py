"""Benchmarks as library code: one job per file, each importable and
testable on tiny inputs; the scripts in ``tools/`` are thin command lines
over them.

* :mod:`.slide_throughput`: whole-slide inference against the model's own
  batched forward pass, and peak RSS against slide size.
"""
