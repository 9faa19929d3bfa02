"""Speed and peak memory of a ProtoPrompt config against a baseline config.

Both models are built from their configs with random weights
(:mod:`.model_building`); the data are synthetic (:mod:`.synthetic_batch`):
``batch`` uint8 images of ``size`` x ``size`` and blocky random
pseudo-labels, with the image labels of the classes they hold (what a
stage-1 CAM config, e.g. PBIP's ``stage1_protocam_mit-b1_bcss-wsss.py``,
trains on). No data set is read.

Figures (medians of per-iteration wall times, after ``warmup`` untimed
iterations; p25-p75 to show the noise, :mod:`.timing`):

* training step: ``model.train_step`` with the config's optimizer wrapper
  (data preprocessing, forward, every loss, the momentum update of a
  ``PrototypeBank``, backward and optimizer step), in images/s; its
  precision is set as by ``tools/train.py``
  (:func:`protoprompt_mm.engine.amp.configure_amp`): an AMP config (e.g.
  ``schedule_pbip_stage1.py``) runs in fp32, with a warning, on the CPU;
  ``setup.optim_wrapper`` names the wrapper each model ran;
* inference: ``model.test_step`` in eval mode under ``torch.no_grad``, with
  ``test_cfg`` forced to ``mode='whole'``, in images/s;
* peak memory (unless ``memory=False``, :mod:`.memory_probe`): on CUDA the
  allocator's peak over one step, on the CPU the peak RSS growth over two
  steps in a fresh process per model and phase;
* ``breakdown``: each component of a training step (:mod:`.step_breakdown`);
* ``pseudo_mask_config``: the pseudo-mask TTA cost (:mod:`.pseudo_mask_tta`).

The two models are timed INTERLEAVED: every iteration runs both, in the
order A, B then B, A on the next iteration, so machine noise and cache
effects hit both alike. The ratio ProtoPrompt / baseline of the median times
and the overhead in percent are reported.

``num_prototypes`` / ``num_classes`` override every ``num_prototypes`` /
``num_classes`` key of the models (the scaling study); the baseline gets the
same number of classes. ``cfg_options`` / ``baseline_cfg_options`` change
either config, e.g. to compare ProtoPrompt with itself minus its prompts
(``model.decode_head.use_cross_attention=False``).
"""
from typing import Optional, Sequence

import torch

from protoprompt_mm.benchmarks.memory_probe import compare_peak_memory
from protoprompt_mm.benchmarks.model_building import (ROLES, build_segmentor,
                                                      segmentor_sources)
from protoprompt_mm.benchmarks.pseudo_mask_tta import time_pseudo_masks
from protoprompt_mm.benchmarks.step_breakdown import time_breakdown
from protoprompt_mm.benchmarks.synthetic_batch import synthetic_batch
from protoprompt_mm.benchmarks.timing import (PHASES, interleaved_times,
                                              ratio, step_fn, summary)


def run_benchmark(config: str,
                  baseline: str,
                  size: int = 224,
                  batch: int = 8,
                  iters: int = 10,
                  warmup: int = 2,
                  device: str = 'cpu',
                  threads: Optional[int] = None,
                  num_prototypes: Optional[int] = None,
                  num_classes: Optional[int] = None,
                  cfg_options: Optional[dict] = None,
                  baseline_cfg_options: Optional[dict] = None,
                  memory: bool = True,
                  breakdown: bool = False,
                  pseudo_mask_config: Optional[str] = None,
                  tta_scales: Sequence[float] = (1.0, 0.75, 1.25),
                  tta_flip: bool = True) -> dict:
    """Time (and measure the memory of) both models; see the module doc.

    Seeds torch with 0 before building the models.

    Args:
        config: ProtoPrompt (stage-2) config, or a stage-1 config.
        baseline: Baseline config (e.g. no-prototypes).
        size: Image side.
        batch: Batch size.
        iters: Timed iterations.
        warmup: Untimed iterations first.
        device: ``'cpu'`` or ``'cuda'``.
        threads: Torch CPU threads, set for this process (and the memory
            probes); None: torch's choice.
        num_prototypes: Override of ``config``'s ``num_prototypes`` keys.
        num_classes: Override of both models' ``num_classes`` keys.
        cfg_options: Overrides of ``config``.
        baseline_cfg_options: Overrides of ``baseline``.
        memory: Measure the peak memory.
        breakdown: Time each component of a training step.
        pseudo_mask_config: Stage-1 (``CAMSegmentor``) config whose
            pseudo-mask TTA to time, or None.
        tta_scales: Its test-time scales.
        tta_flip: Also its flipped views.

    Returns:
        dict: JSON-able: ``setup`` (the settings, the torch threads and the
        ``optim_wrapper`` class of each model), ``train`` and ``test``
        (role -> :func:`~.timing.summary`, and ``ratio``), and ``memory``,
        ``breakdown``, ``pseudo_masks`` when asked for.
    """
    if threads is not None:
        torch.set_num_threads(threads)
    torch.manual_seed(0)
    sources = segmentor_sources(config, baseline, num_prototypes, num_classes,
                                cfg_options, baseline_cfg_options)
    models = {}
    for role in ROLES:
        model, wrapper, head_classes = build_segmentor(sources[role], device)
        models[role] = (model, wrapper,
                        synthetic_batch(batch, size, head_classes))
    results = dict(setup=dict(
        config=config, baseline=baseline, size=size, batch=batch,
        iters=iters, warmup=warmup, device=device,
        threads=torch.get_num_threads(), num_prototypes=num_prototypes,
        num_classes=num_classes, cfg_options=cfg_options,
        baseline_cfg_options=baseline_cfg_options,
        optim_wrapper={role: type(wrapper).__name__
                       for role, (_, wrapper, _) in models.items()}))
    for phase in PHASES:
        fns = {role: step_fn(phase, model, wrapper, data)
               for role, (model, wrapper, data) in models.items()}
        times = interleaved_times(fns, iters, warmup, device)
        stats = {role: summary(times[role], batch) for role in ROLES}
        stats['ratio'] = ratio(stats['protoprompt']['median_s'],
                               stats['baseline']['median_s'])
        results[phase] = stats
    if memory:
        results['memory'] = compare_peak_memory(models, sources, batch, size,
                                                device, threads)
    if breakdown:
        results['breakdown'] = time_breakdown(models, iters, warmup, device,
                                              batch)
    if pseudo_mask_config:
        results['pseudo_masks'] = time_pseudo_masks(
            pseudo_mask_config, num_classes, batch, size, tta_scales,
            tta_flip, iters, warmup, device)
    return results
