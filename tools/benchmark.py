"""Speed and peak memory of a ProtoPrompt config against a baseline config.

    python tools/benchmark.py CONFIG --baseline BASELINE_CONFIG \
        [--size 224] [--batch 8] [--iters 10] [--warmup 2] \
        [--device cpu|cuda] [--threads T] [--num-prototypes K] \
        [--num-classes N] \
        [--pseudo-mask-config STAGE1_CONFIG] [--tta-scales 1.0 0.75 1.25] \
        [--no-tta-flip] [--breakdown] [--no-memory] [--json FILE] \
        [--cfg-options ...] [--baseline-cfg-options ...]

Both models are built from their configs with random weights; the data are
synthetic: ``--batch`` uint8 images of ``--size`` x ``--size`` and blocky
random pseudo-labels (32 x 32 pixel cells, about 10% of the cells 255),
with the image labels of the classes they hold (what a stage-1 CAM config,
e.g. PBIP's ``stage1_protocam_mit-b1_bcss-wsss.py``, trains on). No data set
is read.

Figures (medians of per-iteration wall times, after ``--warmup`` untimed
iterations; p25-p75 in brackets to show the noise):

* training step: ``model.train_step`` with the config's optimizer wrapper
  (data preprocessing, forward, every loss, the momentum update of a
  ``PrototypeBank``, backward and optimizer step), in images/s; its
  precision is set as by ``tools/train.py``
  (:func:`protoprompt_mm.engine.amp.configure_amp`): an AMP config (e.g.
  ``schedule_pbip_stage1.py``) runs in fp32, with a warning, on the CPU;
  ``setup.optim_wrapper`` of ``--json`` names the wrapper each model ran;
* inference: ``model.test_step`` in eval mode under ``torch.no_grad``, with
  ``test_cfg`` forced to ``mode='whole'``, in images/s;
* peak memory (unless ``--no-memory``): on CUDA,
  ``torch.cuda.max_memory_allocated`` over one step minus the memory
  allocated before it; on the CPU, for each model and phase a fresh
  subprocess builds the model and the batch, resets its peak resident set
  size (``/proc/self/clear_refs``, Linux), reads its RSS, runs two steps
  and reads the peak RSS (``VmHWM``): the difference is the steps' peak
  memory (activations, gradients, optimizer state, allocator caches) on top
  of the model and the batch. ``tracemalloc`` does not see torch's
  allocations and ``ru_maxrss`` cannot be reset, hence this method; a fresh
  process keeps one model's freed memory from serving the other.

The two models are timed INTERLEAVED: every iteration runs both, in the
order A, B then B, A on the next iteration, so machine noise and cache
effects hit both alike. The ratio ProtoPrompt / baseline of the median times
and the overhead in percent are printed.

``--num-prototypes`` / ``--num-classes`` override every ``num_prototypes`` /
``num_classes`` key of the models (the scaling study); the baseline gets the
same number of classes. ``--cfg-options`` / ``--baseline-cfg-options``
change either config, e.g. to compare ProtoPrompt with itself minus its
prompts (``model.decode_head.use_cross_attention=False``).

``--pseudo-mask-config`` also times stage-1 pseudo-mask generation:
``CAMSegmentor.inference`` with the test-time views ``--tta-scales`` x
(no flip, flip) against the sum of one plain forward
(``model(view, mode='tensor')``) of each of these views, prepared
beforehand, interleaved; their ratio is the cost of the TTA plumbing
(resizing, flipping, fusing). ``views x one plain forward at scale 1`` is
printed for reference.

``--breakdown`` times the components of one training step separately
(forward + backward of each, fed with detached copies of the real
intermediate tensors): backbone, neck, decode head, upsampling of the logits
to the label size, every loss of ``loss_decode``, the momentum update of a
``PrototypeBank`` and the optimizer step.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from mmengine.config import Config, DictAction
from mmengine.optim import OptimWrapper, build_optim_wrapper
from mmengine.registry import init_default_scope
from mmengine.structures import PixelData
from mmseg.models.utils import resize
from mmseg.registry import MODELS
from mmseg.structures import SegDataSample
from torch import Tensor, nn

from protoprompt_mm.engine.amp import configure_amp
from protoprompt_mm.models.necks import PrototypeBank, PromptedFeatures
from protoprompt_mm.models.segmentors import CAMSegmentor
from protoprompt_mm.utils import load_config

ROLES = ('protoprompt', 'baseline')
PHASES = ('train', 'test')
MEMORY_STEPS = 2
LABEL_CELL = 32
IGNORE_FRACTION = 0.1
IGNORE_INDEX = 255
PROC_STATUS = '/proc/self/status'
PROC_CLEAR_REFS = '/proc/self/clear_refs'


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    """Parse the command line."""
    parser = argparse.ArgumentParser(
        description='Time and memory of ProtoPrompt vs a baseline config')
    parser.add_argument(
        'config', help='ProtoPrompt (stage-2) config, or a stage-1 config')
    parser.add_argument(
        '--baseline', required=True,
        help='baseline config (e.g. no-prototypes)')
    parser.add_argument('--size', type=int, default=224, help='image side')
    parser.add_argument('--batch', type=int, default=8, help='batch size')
    parser.add_argument('--iters', type=int, default=10, help='timed iters')
    parser.add_argument(
        '--warmup', type=int, default=2, help='untimed iterations first')
    parser.add_argument('--device', choices=['cpu', 'cuda'], default='cpu')
    parser.add_argument(
        '--threads',
        type=int,
        help='torch CPU threads (default: torch\'s choice); on a shared '
        'machine use fewer threads than free cores: oversubscribed OpenMP '
        'threads slow every step down by an order of magnitude')
    parser.add_argument(
        '--num-prototypes', type=int, help='override num_prototypes (K)')
    parser.add_argument(
        '--num-classes', type=int, help='override num_classes (N)')
    parser.add_argument(
        '--pseudo-mask-config',
        help='stage-1 (CAMSegmentor) config: also time pseudo-mask TTA')
    parser.add_argument(
        '--tta-scales',
        type=float,
        nargs='+',
        default=[1.0, 0.75, 1.25],
        help='pseudo-mask test-time scales (tools/generate_pseudo_masks.py '
        'defaults)')
    parser.add_argument(
        '--no-tta-flip', action='store_true', help='no flipped TTA views')
    parser.add_argument(
        '--breakdown',
        action='store_true',
        help='also time each component of a training step')
    parser.add_argument(
        '--no-memory', action='store_true', help='skip the memory figures')
    parser.add_argument(
        '--cfg-options', nargs='+', action=DictAction,
        help='overrides of CONFIG, e.g. model.neck.embed_dim=64')
    parser.add_argument(
        '--baseline-cfg-options', nargs='+', action=DictAction,
        help='overrides of the baseline config')
    parser.add_argument('--json', help='also write the figures to this file')
    parser.add_argument(
        '--memory-probe',
        choices=[f'{role}:{phase}' for role in ROLES for phase in PHASES],
        help=argparse.SUPPRESS)  # internal: one CPU memory measurement
    args = parser.parse_args(argv)
    for name in ('size', 'batch', 'iters', 'threads'):
        if getattr(args, name) is not None and getattr(args, name) < 1:
            parser.error(f'--{name} must be >= 1, got {getattr(args, name)}')
    if args.warmup < 0:
        parser.error(f'--warmup must be >= 0, got {args.warmup}')
    if args.device == 'cuda' and not torch.cuda.is_available():
        parser.error('--device cuda, but CUDA is not available')
    if min(args.tta_scales) <= 0:
        parser.error(f'--tta-scales must be positive, got {args.tta_scales}')
    return args


def override_key(node: object, key: str, value: int) -> int:
    """Set ``key`` to ``value`` wherever it occurs in a nested config.

    Args:
        node: A config dict / list (or a leaf, left alone).
        key: The key to override.
        value: Its new value.

    Returns:
        int: How many occurrences were set.
    """
    found = 0
    if isinstance(node, dict):
        for name, child in node.items():
            if name == key:
                node[name] = value
                found += 1
            else:
                found += override_key(child, key, value)
    elif isinstance(node, (list, tuple)):
        found = sum(override_key(child, key, value) for child in node)
    return found


def load_model_cfg(path: str,
                   overrides: Dict[str, Optional[int]],
                   cfg_options: Optional[dict] = None) -> Config:
    """The config with ``cfg_options`` and the scaling overrides applied.

    Args:
        path: Config file.
        overrides: Key -> value for every ``key`` in the model config; None
            values are skipped.
        cfg_options: ``--cfg-options`` style overrides.

    Raises:
        KeyError: If an override is asked for but the model has no such key.
    """
    cfg = load_config(path, cfg_options)
    for key, value in overrides.items():
        if value is not None and not override_key(cfg.model, key, value):
            raise KeyError(f'{path}: --{key.replace("_", "-")} given, but '
                           f'the model config has no {key!r} key')
    return cfg


def build_model(cfg: Config, device: str) -> nn.Module:
    """Model with the random weights of its constructors, on ``device``, in
    train mode (``init_weights`` is skipped: it only changes the values)."""
    init_default_scope(cfg.get('default_scope', 'mmseg'))
    return MODELS.build(cfg.model).to(device).train()


def build_segmentor(role: str, args: argparse.Namespace
                    ) -> Tuple[nn.Module, OptimWrapper, int]:
    """Model (whole-image inference), its optimizer wrapper (precision by
    ``configure_amp`` for ``args.device``), N classes.

    Args:
        role: ``'protoprompt'`` (``args.config``, both overrides) or
            ``'baseline'`` (``args.baseline``, ``--num-classes`` only).
        args: The command line.
    """
    overrides = dict(num_classes=args.num_classes)
    if role == 'protoprompt':
        path, options = args.config, args.cfg_options
        overrides['num_prototypes'] = args.num_prototypes
    else:
        path, options = args.baseline, args.baseline_cfg_options
    cfg = load_model_cfg(path, overrides, options)
    cfg.model.test_cfg = dict(mode='whole')
    model = build_model(cfg, args.device)
    if not hasattr(model, 'decode_head'):
        raise TypeError(f'{path}: expected a segmentor with a decode_head, '
                        f'got {type(model).__name__}')
    if 'optim_wrapper' not in cfg:
        raise KeyError(f'{path}: the config has no optim_wrapper')
    configure_amp(cfg, device=args.device)
    return (model, build_optim_wrapper(model, cfg.optim_wrapper),
            model.decode_head.num_classes)


def synthetic_batch(batch: int, size: int, num_classes: int,
                    seed: int = 0) -> dict:
    """Random uint8 images and blocky pseudo-labels with ignored cells.

    Args:
        batch: Number of images.
        size: Image side.
        num_classes: Labels are drawn from [0, num_classes).
        seed: Seed of the generator.

    Returns:
        dict: ``inputs`` (list of (3, size, size) uint8) and
        ``data_samples`` (``SegDataSample`` with ``gt_sem_seg`` and
        ``img_labels`` in the metainfo, the int64 (N,) multi-hot of the
        classes in the labels, which stage-1 CAM models train on).
    """
    gen = torch.Generator().manual_seed(seed)
    cells = -(-size // LABEL_CELL)
    coarse = torch.randint(0, num_classes, (batch, 1, cells, cells),
                           generator=gen)
    ignored = torch.rand(coarse.shape, generator=gen) < IGNORE_FRACTION
    coarse[ignored] = IGNORE_INDEX
    labels = coarse.repeat_interleave(LABEL_CELL, 2).repeat_interleave(
        LABEL_CELL, 3)[..., :size, :size]
    inputs, samples = [], []
    for label in labels:
        inputs.append(
            torch.randint(0, 256, (3, size, size), dtype=torch.uint8,
                          generator=gen))
        present = label[label != IGNORE_INDEX].unique()
        img_labels = torch.zeros(num_classes, dtype=torch.int64)
        img_labels[present] = 1
        sample = SegDataSample(
            metainfo=dict(
                img_shape=(size, size),
                ori_shape=(size, size),
                img_labels=img_labels.numpy()))
        sample.gt_sem_seg = PixelData(data=label)
        samples.append(sample)
    return dict(inputs=inputs, data_samples=samples)


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
    """Median / p25 / p75 seconds per iteration and images/s."""
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
    """ProtoPrompt / baseline and the overhead in percent."""
    value = protoprompt / baseline
    return dict(ratio=value, overhead_pct=100 * (value - 1))


def train_fn(model: nn.Module, wrapper: OptimWrapper,
             data: dict) -> Callable[[], object]:
    """One full training step."""
    return lambda: model.train_step(data, wrapper)


def test_fn(model: nn.Module, data: dict) -> Callable[[], object]:
    """One eval-mode prediction without gradients."""

    def run() -> object:
        model.eval()
        with torch.no_grad():
            out = model.test_step(data)
        model.train()
        return out

    return run


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


def memory_probe(args: argparse.Namespace) -> None:
    """Child process: print the peak RSS growth of one model's steps."""
    role, phase = args.memory_probe.split(':')
    model, wrapper, num_classes = build_segmentor(role, args)
    data = synthetic_batch(args.batch, args.size, num_classes)
    step = train_fn(model, wrapper, data) if phase == 'train' \
        else test_fn(model, data)
    reset_peak_rss()
    before = proc_status_mib('VmRSS')
    for _ in range(MEMORY_STEPS):
        step()
    peak = proc_status_mib('VmHWM')
    print(json.dumps(dict(before_mib=before, peak_mib=peak,
                          step_peak_mib=peak - before)))


def cpu_peak_memory(role: str, phase: str, argv: List[str]) -> dict:
    """Run :func:`memory_probe` in a fresh interpreter.

    Raises:
        RuntimeError: If the child fails.
    """
    cmd = [sys.executable, os.path.abspath(__file__), *argv,
           '--memory-probe', f'{role}:{phase}']
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode:
        raise RuntimeError(f'memory probe {role}:{phase} failed '
                           f'(exit {proc.returncode}):\n{proc.stderr[-3000:]}')
    return json.loads(proc.stdout.strip().splitlines()[-1])


def cuda_peak_memory(step: Callable[[], object]) -> dict:
    """Peak CUDA memory of one step above what was allocated before."""
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    before = torch.cuda.memory_allocated()
    step()
    torch.cuda.synchronize()
    peak = torch.cuda.max_memory_allocated()
    mib = 1024**2
    return dict(before_mib=before / mib, peak_mib=peak / mib,
                step_peak_mib=(peak - before) / mib)


def leaf(tensor: Tensor) -> Tensor:
    """Detached copy that records gradients when it is floating point."""
    out = tensor.detach().clone()
    return out.requires_grad_(out.is_floating_point())


def leaves(feats: object) -> object:
    """Detached leaves of a feature tuple (``PromptedFeatures`` kept)."""
    if isinstance(feats, PromptedFeatures):
        return PromptedFeatures([leaf(t) for t in feats.feats],
                                leaf(feats.embedding), leaf(feats.similarity),
                                leaf(feats.prototypes))
    return type(feats)(leaf(t) for t in feats)


def backward_sum(out: object) -> None:
    """Backpropagate the sum of every output tensor that has a graph."""
    tensors = [out] if isinstance(out, Tensor) else list(out)
    total = sum(t.float().sum() for t in tensors if t.requires_grad)
    if isinstance(total, Tensor):
        total.backward()


def component_fns(model: nn.Module, wrapper: OptimWrapper,
                  data: dict) -> Dict[str, Callable[[], object]]:
    """Forward + backward of each training-step component in isolation.

    Every component receives detached leaf copies of the real intermediate
    tensors of one forward pass (as the segmentor would hand them over).

    Returns:
        dict: Component name -> function running it once.
    """
    batch = model.data_preprocessor(data, True)
    inputs, samples = batch['inputs'], batch['data_samples']
    head = model.decode_head
    with torch.no_grad():
        feats = model.backbone(inputs)
        neck_out = model.neck(feats) if model.with_neck else feats
        logits = head(neck_out)
    label = torch.stack([sample.gt_sem_seg.data for sample in samples])
    flat_label = label.squeeze(1)

    def forward_backward(fn: Callable[..., object],
                         *args: object) -> Callable[[], None]:
        """Run ``fn`` on fresh leaves of ``args`` and backpropagate."""

        def run() -> None:
            backward_sum(fn(*[leaves(a) if isinstance(a, tuple) else leaf(a)
                              for a in args]))

        return run

    # The image needs no gradient, as in a real step.
    fns = {'backbone': forward_backward(lambda: model.backbone(inputs))}
    if model.with_neck:
        fns[f'neck {type(model.neck).__name__}'] = forward_backward(
            model.neck, feats)
    fns[f'head {type(head).__name__}'] = forward_backward(head, neck_out)
    fns['logits upsampling'] = forward_backward(
        lambda x: resize(x, size=label.shape[2:], mode='bilinear',
                         align_corners=head.align_corners), logits)
    upsampled = resize(logits, size=label.shape[2:], mode='bilinear',
                       align_corners=head.align_corners)
    modules = head.loss_decode if isinstance(head.loss_decode,
                                             nn.ModuleList) \
        else [head.loss_decode]
    for loss in modules:
        if getattr(loss, 'requires_prototypes', False):
            fns[f'loss {loss.loss_name}'] = forward_backward(
                lambda e, p, loss=loss: loss(
                    e, flat_label, prototypes=p,
                    ignore_index=head.ignore_index), neck_out.embedding,
                neck_out.prototypes)
        else:
            fns[f'loss {loss.loss_name}'] = forward_backward(
                lambda x, loss=loss: loss(
                    x, flat_label, ignore_index=head.ignore_index), upsampled)
    neck = model.neck if model.with_neck else None
    if isinstance(neck, PrototypeBank) and neck.update_mode == 'momentum':
        fns['momentum_update'] = lambda: neck.momentum_update(
            neck_out.embedding, label, ignore_index=head.ignore_index)
    fns['optimizer step'] = wrapper.step
    return fns


def time_breakdown(models: Dict[str, Tuple[nn.Module, OptimWrapper, dict]],
                   args: argparse.Namespace) -> Dict[str, Dict[str, dict]]:
    """Median time of every component of both models (interleaved)."""
    fns = {}
    for role, (model, wrapper, data) in models.items():
        # One real step first so that the optimizer state and the
        # gradients the optimizer step uses exist.
        wrapper.zero_grad()
        model.train_step(data, wrapper)
        for name, fn in component_fns(model, wrapper, data).items():
            fns[(role, name)] = fn
    times = interleaved_times(fns, args.iters, args.warmup, args.device)
    out: Dict[str, Dict[str, dict]] = {role: {} for role in models}
    for (role, name), values in times.items():
        out[role][name] = summary(values, args.batch)
    return out


def build_cam_model(args: argparse.Namespace) -> CAMSegmentor:
    """The stage-1 model with the TTA views of the command line, eval mode.

    Raises:
        TypeError: If the config's model is not a ``CAMSegmentor``.
    """
    cfg = load_model_cfg(args.pseudo_mask_config,
                         dict(num_classes=args.num_classes))
    cfg.model.test_cfg = dict(
        cfg.model.get('test_cfg') or {},
        scales=tuple(args.tta_scales),
        flip=not args.no_tta_flip)
    model = build_model(cfg, args.device).eval()
    if not isinstance(model, CAMSegmentor):
        raise TypeError(f'{args.pseudo_mask_config}: expected a '
                        f'CAMSegmentor (stage-1) model, got '
                        f'{type(model).__name__}')
    return model


@torch.no_grad()
def time_pseudo_masks(args: argparse.Namespace) -> dict:
    """TTA inference vs the plain forwards of its views (interleaved)."""
    model = build_cam_model(args)
    data = synthetic_batch(args.batch, args.size, model.num_classes)
    inputs = model.data_preprocessor(dict(inputs=data['inputs']),
                                     False)['inputs']
    views = []
    for scale in args.tta_scales:
        scaled = inputs if scale == 1 else F.interpolate(
            inputs, scale_factor=scale, mode='bilinear',
            align_corners=model.align_corners)
        views.append(scaled)
        if not args.no_tta_flip:
            views.append(scaled.flip(3))

    def plain_views() -> None:
        for view in views:
            model(view, mode='tensor')

    times = interleaved_times(
        dict(tta=lambda: model.inference(inputs), views=plain_views,
             single=lambda: model(inputs, mode='tensor')), args.iters,
        args.warmup, args.device)
    stats = {name: summary(values, args.batch)
             for name, values in times.items()}
    single_times = stats['single']['median_s'] * len(views)
    return dict(
        num_views=len(views),
        scales=list(args.tta_scales),
        flip=not args.no_tta_flip,
        tta=stats['tta'],
        views_plain=stats['views'],
        single_plain=stats['single'],
        ratio_vs_views=stats['tta']['median_s'] / stats['views']['median_s'],
        ratio_vs_views_x_single=stats['tta']['median_s'] / single_times)


def fmt(stats: dict) -> str:
    """``12.3 img/s (median 0.650 s, p25-p75 0.640-0.700 s)``."""
    return (f'{stats["images_per_s"]:8.2f} img/s (median '
            f'{stats["median_s"]:.3f} s, p25-p75 {stats["p25_s"]:.3f}-'
            f'{stats["p75_s"]:.3f} s)')


def report(results: dict) -> None:
    """Print the figures."""
    setup = results['setup']
    wrappers = ', '.join(f'{role} {name}'
                         for role, name in setup['optim_wrapper'].items())
    print(f'\n== {setup["size"]}x{setup["size"]}, batch {setup["batch"]}, '
          f'{setup["iters"]} timed iters (+{setup["warmup"]} warm-up), '
          f'device {setup["device"]}, {setup["threads"]} torch threads; '
          f'optim wrappers: {wrappers}')
    for phase in PHASES:
        print(f'-- {phase} step')
        for role in ROLES:
            print(f'  {role:<12}{fmt(results[phase][role])}')
        cmp = results[phase]['ratio']
        print(f'  time ratio protoprompt/baseline {cmp["ratio"]:.3f} '
              f'(overhead {cmp["overhead_pct"]:+.1f}%)')
    if 'memory' in results:
        print(f'-- peak memory ({results["memory"]["method"]})')
        for phase in PHASES:
            mem = results['memory'][phase]
            print(f'  {phase}: protoprompt '
                  f'{mem["protoprompt"]["step_peak_mib"]:.0f} MiB, baseline '
                  f'{mem["baseline"]["step_peak_mib"]:.0f} MiB, ratio '
                  f'{mem["ratio"]["ratio"]:.3f} '
                  f'({mem["ratio"]["overhead_pct"]:+.1f}%); peak RSS '
                  f'{mem["protoprompt"]["peak_mib"]:.0f} / '
                  f'{mem["baseline"]["peak_mib"]:.0f} MiB')
    if 'breakdown' in results:
        print('-- training-step components, median ms (forward + backward)')
        for role, parts in results['breakdown'].items():
            for name, stats in parts.items():
                print(f'  {role:<12}{name:<34}{1000 * stats["median_s"]:9.1f}')
    if 'pseudo_masks' in results:
        pm = results['pseudo_masks']
        print(f'-- pseudo-mask TTA, {pm["num_views"]} views '
              f'(scales {pm["scales"]}, flip {pm["flip"]})')
        print(f'  CAMSegmentor.inference  {fmt(pm["tta"])}')
        print(f'  plain forwards of views {fmt(pm["views_plain"])}')
        print(f'  ratio TTA / views {pm["ratio_vs_views"]:.3f}; TTA / '
              f'(views x plain forward at scale 1) '
              f'{pm["ratio_vs_views_x_single"]:.3f}')


def main(argv: Optional[List[str]] = None) -> None:
    """Run the benchmark and print (and optionally save) the figures."""
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    if args.memory_probe:
        memory_probe(args)
        return
    torch.manual_seed(0)
    models = {}
    for role in ROLES:
        model, wrapper, num_classes = build_segmentor(role, args)
        models[role] = (model, wrapper,
                        synthetic_batch(args.batch, args.size, num_classes))
    results = dict(setup=dict(
        config=args.config, baseline=args.baseline, size=args.size,
        batch=args.batch, iters=args.iters, warmup=args.warmup,
        device=args.device, threads=torch.get_num_threads(),
        num_prototypes=args.num_prototypes, num_classes=args.num_classes,
        cfg_options=args.cfg_options,
        baseline_cfg_options=args.baseline_cfg_options,
        optim_wrapper={role: type(wrapper).__name__
                       for role, (_, wrapper, _) in models.items()}))
    for phase in PHASES:
        fns = {role: (train_fn(model, wrapper, data) if phase == 'train'
                      else test_fn(model, data))
               for role, (model, wrapper, data) in models.items()}
        times = interleaved_times(fns, args.iters, args.warmup, args.device)
        stats = {role: summary(times[role], args.batch) for role in ROLES}
        stats['ratio'] = ratio(stats['protoprompt']['median_s'],
                               stats['baseline']['median_s'])
        results[phase] = stats
    if not args.no_memory:
        memory = dict(method=(
            'torch.cuda.max_memory_allocated over one step, minus memory '
            'allocated before it' if args.device == 'cuda' else
            f'peak RSS (VmHWM, reset first) over {MEMORY_STEPS} steps minus '
            'the RSS before them, in a fresh process per model and phase'))
        for phase in PHASES:
            mem = {}
            for role, (model, wrapper, data) in models.items():
                if args.device == 'cuda':
                    mem[role] = cuda_peak_memory(
                        train_fn(model, wrapper, data) if phase == 'train'
                        else test_fn(model, data))
                else:
                    mem[role] = cpu_peak_memory(role, phase, argv)
            mem['ratio'] = ratio(mem['protoprompt']['step_peak_mib'],
                                 mem['baseline']['step_peak_mib'])
            memory[phase] = mem
        results['memory'] = memory
    if args.breakdown:
        results['breakdown'] = time_breakdown(models, args)
    if args.pseudo_mask_config:
        results['pseudo_masks'] = time_pseudo_masks(args)
    report(results)
    if args.json:
        with open(args.json, 'w') as f:
            json.dump(results, f, indent=2)
        print(f'\nwrote {args.json}')


if __name__ == '__main__':
    main()
