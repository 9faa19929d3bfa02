"""The cost of the test-time augmentation of stage-1 pseudo-mask generation.

``CAMSegmentor.inference`` with the test-time views (scales x (no flip,
flip)) against the sum of one plain forward (``model(view,
mode='tensor')``) of each of these views, prepared beforehand, interleaved;
their ratio is the cost of the TTA plumbing (resizing, flipping, fusing).
``views x one plain forward at scale 1`` is measured for reference.
"""
from typing import Optional, Sequence

import torch
import torch.nn.functional as F

from protoprompt_mm.benchmarks.model_building import build_cam_model
from protoprompt_mm.benchmarks.synthetic_batch import synthetic_batch
from protoprompt_mm.benchmarks.timing import interleaved_times, summary


@torch.no_grad()
def time_pseudo_masks(config: str,
                      num_classes: Optional[int],
                      batch: int,
                      size: int,
                      tta_scales: Sequence[float],
                      tta_flip: bool,
                      iters: int,
                      warmup: int,
                      device: str) -> dict:
    """TTA inference vs the plain forwards of its views (interleaved).

    Args:
        config: Stage-1 (``CAMSegmentor``) config file (random weights,
            :func:`~.model_building.build_cam_model`).
        num_classes: Override of every ``num_classes`` key, or None.
        batch: Images of the synthetic batch.
        size: Their side.
        tta_scales: Test-time scales.
        tta_flip: Also the flipped view of every scale.
        iters: Timed iterations.
        warmup: Untimed iterations first.
        device: ``'cpu'`` or ``'cuda'``.

    Returns:
        dict: ``num_views``, ``scales``, ``flip``, the
        :func:`~.timing.summary` of ``tta``, ``views_plain`` and
        ``single_plain`` (one plain forward at scale 1), ``ratio_vs_views``
        and ``ratio_vs_views_x_single`` (TTA / (views x single)).
    """
    model = build_cam_model(config, device, num_classes, tta_scales, tta_flip)
    data = synthetic_batch(batch, size, model.num_classes)
    inputs = model.data_preprocessor(dict(inputs=data['inputs']),
                                     False)['inputs']
    views = []
    for scale in tta_scales:
        scaled = inputs if scale == 1 else F.interpolate(
            inputs, scale_factor=scale, mode='bilinear',
            align_corners=model.align_corners)
        views.append(scaled)
        if tta_flip:
            views.append(scaled.flip(3))

    def plain_views() -> None:
        for view in views:
            model(view, mode='tensor')

    times = interleaved_times(
        dict(tta=lambda: model.inference(inputs), views=plain_views,
             single=lambda: model(inputs, mode='tensor')), iters, warmup,
        device)
    stats = {name: summary(values, batch) for name, values in times.items()}
    single_times = stats['single']['median_s'] * len(views)
    return dict(
        num_views=len(views),
        scales=list(tta_scales),
        flip=tta_flip,
        tta=stats['tta'],
        views_plain=stats['views'],
        single_plain=stats['single'],
        ratio_vs_views=stats['tta']['median_s'] / stats['views']['median_s'],
        ratio_vs_views_x_single=stats['tta']['median_s'] / single_times)
