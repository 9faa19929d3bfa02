"""Peak memory of one training or inference step of a compared model.

* CUDA: ``torch.cuda.max_memory_allocated`` over one step minus the memory
  allocated before it (:func:`cuda_peak_memory`).
* CPU: a fresh interpreter (``python -m protoprompt_mm.benchmarks.
  memory_probe``, :func:`cpu_peak_memory`) builds the model and the batch,
  resets its peak resident set size (``/proc/self/clear_refs``, Linux),
  reads its RSS, runs :data:`MEMORY_STEPS` steps and reads the peak RSS
  (``VmHWM``): the difference is the steps' peak memory (activations,
  gradients, optimizer state, allocator caches) on top of the model and the
  batch. ``tracemalloc`` does not see torch's allocations and ``ru_maxrss``
  cannot be reset, hence this method; a fresh process keeps one model's
  freed memory from serving the other.
"""
import ast
import json
import subprocess
import sys
from typing import Callable, Dict, Optional, Tuple

import torch
from mmengine.optim import OptimWrapper
from torch import nn

from protoprompt_mm.benchmarks.model_building import (SegmentorSource,
                                                      build_segmentor)
from protoprompt_mm.benchmarks.synthetic_batch import synthetic_batch
from protoprompt_mm.benchmarks.timing import PHASES, ratio, step_fn

MEMORY_STEPS = 2
# The child of cpu_peak_memory: python -m PROBE_MODULE PROBE_LITERAL.
PROBE_MODULE = 'protoprompt_mm.benchmarks.memory_probe'
PROC_STATUS = '/proc/self/status'
PROC_CLEAR_REFS = '/proc/self/clear_refs'


def proc_status_mib(field: str) -> float:
    """A ``kB`` field of ``/proc/self/status`` (``VmRSS``, ``VmHWM``) in MiB.

    Raises:
        KeyError: If the field is missing.
    """
    with open(PROC_STATUS) as f:
        for line in f:
            if line.startswith(field + ':'):
                return int(line.split()[1]) / 1024
    raise KeyError(f'{PROC_STATUS} has no {field} field')


def reset_peak_rss() -> None:
    """Reset this process's peak RSS (``VmHWM``) to its current RSS.

    Raises:
        OSError: If ``/proc/self/clear_refs`` cannot be written (not Linux
            >= 4.0); use ``--no-memory`` there.
    """
    try:
        with open(PROC_CLEAR_REFS, 'w') as f:
            f.write('5')
    except OSError as e:
        raise OSError(f'cannot reset the peak RSS through {PROC_CLEAR_REFS} '
                      f'({e}); CPU memory figures need Linux >= 4.0, pass '
                      '--no-memory elsewhere') from e


def memory_probe(source: SegmentorSource, phase: str, batch: int,
                 size: int) -> dict:
    """Peak RSS growth of :data:`MEMORY_STEPS` steps of one model, on the
    CPU, in this process (run it in a fresh one: :func:`cpu_peak_memory`).

    Args:
        source: The model.
        phase: ``'train'`` or ``'test'``.
        batch: Images of the synthetic batch.
        size: Their side.

    Returns:
        dict: ``before_mib`` (RSS before the steps), ``peak_mib`` (peak RSS
        during them) and ``step_peak_mib`` (their difference).
    """
    model, wrapper, num_classes = build_segmentor(source, 'cpu')
    data = synthetic_batch(batch, size, num_classes)
    step = step_fn(phase, model, wrapper, data)
    reset_peak_rss()
    before = proc_status_mib('VmRSS')
    for _ in range(MEMORY_STEPS):
        step()
    peak = proc_status_mib('VmHWM')
    return dict(before_mib=before, peak_mib=peak, step_peak_mib=peak - before)


def cpu_peak_memory(source: SegmentorSource, phase: str, batch: int,
                    size: int, threads: Optional[int] = None) -> dict:
    """:func:`memory_probe` in a fresh interpreter.

    Args:
        source: The model.
        phase: ``'train'`` or ``'test'``.
        batch: Images of the synthetic batch.
        size: Their side.
        threads: Torch CPU threads of the child; None: torch's choice.

    Returns:
        dict: As :func:`memory_probe`.

    Raises:
        RuntimeError: If the child fails (its stderr's tail attached).
    """
    # A Python literal, not JSON: the tuples of cfg_options stay tuples.
    probe = repr(dict(source=tuple(source), phase=phase, batch=batch,
                      size=size, threads=threads))
    proc = subprocess.run(
        [sys.executable, '-m', PROBE_MODULE, probe], capture_output=True,
        text=True)
    if proc.returncode:
        raise RuntimeError(f'memory probe {source.config}:{phase} failed '
                           f'(exit {proc.returncode}):\n{proc.stderr[-3000:]}')
    return json.loads(proc.stdout.strip().splitlines()[-1])


def cuda_peak_memory(step: Callable[[], object]) -> dict:
    """Peak CUDA memory of one step above what was allocated before.

    Returns:
        dict: ``before_mib``, ``peak_mib`` and ``step_peak_mib`` (their
        difference), as :func:`memory_probe`.
    """
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    before = torch.cuda.memory_allocated()
    step()
    torch.cuda.synchronize()
    peak = torch.cuda.max_memory_allocated()
    mib = 1024**2
    return dict(before_mib=before / mib, peak_mib=peak / mib,
                step_peak_mib=(peak - before) / mib)


def compare_peak_memory(
        models: Dict[str, Tuple[nn.Module, OptimWrapper, dict]],
        sources: Dict[str, SegmentorSource], batch: int, size: int,
        device: str, threads: Optional[int] = None) -> dict:
    """Step peak memory of every model and phase, and their ratio.

    Args:
        models: Role -> (model, optimizer wrapper, batch), on ``device``
            (measured in place on CUDA).
        sources: Role -> what its model is built from (rebuilt in a fresh
            process per phase on the CPU).
        batch: Images of the synthetic batch.
        size: Their side.
        device: ``'cpu'`` or ``'cuda'``.
        threads: Torch CPU threads of the CPU probes; None: torch's choice.

    Returns:
        dict: ``method`` (in words) and, per phase, role -> the figures of
        :func:`cuda_peak_memory` / :func:`cpu_peak_memory` and ``ratio``
        (:func:`~.timing.ratio` of ``step_peak_mib``, ProtoPrompt first).
    """
    memory = dict(method=(
        'torch.cuda.max_memory_allocated over one step, minus memory '
        'allocated before it' if device == 'cuda' else
        f'peak RSS (VmHWM, reset first) over {MEMORY_STEPS} steps minus '
        'the RSS before them, in a fresh process per model and phase'))
    for phase in PHASES:
        mem = {}
        for role, (model, wrapper, data) in models.items():
            if device == 'cuda':
                mem[role] = cuda_peak_memory(
                    step_fn(phase, model, wrapper, data))
            else:
                mem[role] = cpu_peak_memory(sources[role], phase, batch, size,
                                            threads)
        mem['ratio'] = ratio(mem['protoprompt']['step_peak_mib'],
                             mem['baseline']['step_peak_mib'])
        memory[phase] = mem
    return memory


def main(probe: str) -> None:
    """Child of :func:`cpu_peak_memory`: print :func:`memory_probe`'s
    figures as the last line of JSON.

    Args:
        probe: The Python literal of a dict with ``source`` (the fields of
            a :class:`SegmentorSource`), ``phase``, ``batch``, ``size`` and
            ``threads``.
    """
    settings = ast.literal_eval(probe)
    if settings['threads'] is not None:
        torch.set_num_threads(settings['threads'])
    print(json.dumps(memory_probe(SegmentorSource(*settings['source']),
                                  settings['phase'], settings['batch'],
                                  settings['size'])))


if __name__ == '__main__':
    main(sys.argv[1])
