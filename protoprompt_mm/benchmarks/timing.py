"""Interleaved wall-clock timing of training and inference steps.

Several functions are timed alternately (A B, then B A, ...) so that machine
noise and cache effects hit them alike; the figures are medians of the
per-iteration wall times with p25-p75 to show the noise.
"""
import statistics
import time
from typing import Callable, Dict, List, Sequence

import torch
from mmengine.optim import OptimWrapper
from torch import nn

# The two steps compared: ``model.train_step`` and ``model.test_step``.
PHASES = ('train', 'test')


def synchronize(device: str) -> None:
    """Wait for queued CUDA work (no-op on the CPU)."""
    if device == 'cuda':
        torch.cuda.synchronize()


def interleaved_times(fns: Dict[str, Callable[[], object]], iters: int,
                      warmup: int, device: str) -> Dict[str, List[float]]:
    """Time several functions alternately, A B / B A / A B ...

    Args:
        fns: Name -> function to time.
        iters: Timed iterations.
        warmup: Untimed iterations first.
        device: ``'cpu'`` or ``'cuda'`` (synchronised around each call).

    Returns:
        dict: Name -> per-iteration seconds (``iters`` values).
    """
    times = {name: [] for name in fns}
    names = list(fns)
    for it in range(warmup + iters):
        for name in (names if it % 2 == 0 else names[::-1]):
            synchronize(device)
            start = time.perf_counter()
            fns[name]()
            synchronize(device)
            if it >= warmup:
                times[name].append(time.perf_counter() - start)
    return times


def summary(times: Sequence[float], images: int) -> dict:
    """Median / p25 / p75 seconds per iteration and images/s.

    Args:
        times: Per-iteration seconds, at least one.
        images: Images per iteration.

    Returns:
        dict: ``median_s``, ``p25_s``, ``p75_s``, ``images_per_s`` (of the
        median) and ``n`` (the number of times).
    """
    ordered = sorted(times)
    if len(ordered) > 1:
        p25, _, p75 = statistics.quantiles(ordered, n=4, method='inclusive')
    else:
        p25 = p75 = ordered[0]
    median = statistics.median(ordered)
    return dict(
        median_s=median, p25_s=p25, p75_s=p75, images_per_s=images / median,
        n=len(ordered))


def ratio(protoprompt: float, baseline: float) -> dict:
    """ProtoPrompt / baseline (``ratio``) and the overhead in percent
    (``overhead_pct``)."""
    value = protoprompt / baseline
    return dict(ratio=value, overhead_pct=100 * (value - 1))


def train_fn(model: nn.Module, wrapper: OptimWrapper,
             data: dict) -> Callable[[], object]:
    """One full training step (``model.train_step`` with ``wrapper``)."""
    return lambda: model.train_step(data, wrapper)


def test_fn(model: nn.Module, data: dict) -> Callable[[], object]:
    """One eval-mode prediction without gradients (``model.test_step``);
    the model is back in train mode afterwards."""

    def run() -> object:
        model.eval()
        with torch.no_grad():
            out = model.test_step(data)
        model.train()
        return out

    return run


def step_fn(phase: str, model: nn.Module, wrapper: OptimWrapper,
            data: dict) -> Callable[[], object]:
    """:func:`train_fn` or :func:`test_fn` for a phase of :data:`PHASES`."""
    return train_fn(model, wrapper, data) if phase == 'train' \
        else test_fn(model, data)
