"""Whole-slide throughput and peak memory of a segmentor (issue 12, item 5).

For each slide side, a synthetic slide (:func:`~protoprompt_mm.datasets.
synthetic_slide.synthetic_slide`: four big tissue blobs, one per quadrant,
glass around them) is written as a pyramidal TIFF and measured:

* slide throughput: the tissue tiles :func:`~protoprompt_mm.apis.
  slide_inference.infer_slide` runs (``tiles_segmented``) per second of its
  wall time, which includes opening the slide, the thumbnail and tissue
  detection, reading and resampling the tiles, blending, and writing the
  TIFF, GeoJSON, overlay and JSON;
* forward throughput: the same tiles (the positions and resampling of
  ``infer_slide``, read into memory beforehand) through the model's
  batched forward pass and softmax alone, after one untimed warm-up batch;
  it runs before the slide, so the model is warm for both;
* ratio slide / forward: 1 when reading, tissue detection and writing are
  overlapped with the forward pass or negligible (the issue asks >= 0.8);
* peak RSS: ``VmHWM`` of a fresh process that builds the model and runs
  ``infer_slide`` on the slide: libraries and model included, so its growth
  with the slide's size is what the slide costs (``ru_maxrss`` would carry
  the parent's RSS over fork + exec).

The slide file is in the page cache when it is timed (read for the forward
tiles first): reading from a cold disk is not measured.
"""
import json
import os
import os.path as osp
import platform
import subprocess
import sys
import time
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from torch import nn

from protoprompt_mm.apis import (detect_tissue, infer_slide, init_segmentor,
                                 open_slide)
from protoprompt_mm.apis.region_inference import _tile_logits
from protoprompt_mm.apis.slide_inference import tissue_tile_positions
from protoprompt_mm.apis.slide_reader import ResampledSlide
from protoprompt_mm.datasets.synthetic_slide import (synthetic_slide,
                                                     write_pyramidal_tiff)

# Level-0 µm per pixel of the synthetic slides when the config has no
# train_mpp.
DEFAULT_MPP = 0.25
# Downsamples of the synthetic pyramids (as tools/make_synthetic_slide.py).
PYRAMID_LEVELS = (1, 4, 16)
PACKAGE_ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
# Run in a fresh interpreter: argv[1] is the JSON of peak_rss_mib's
# arguments; prints the peak RSS in kB after a marker.
_PEAK_RSS_SCRIPT = """
import json, sys
sys.path.insert(0, {package_root!r})
from protoprompt_mm.apis import infer_slide
from protoprompt_mm.benchmarks.slide_throughput import benchmark_model
args = json.loads(sys.argv[1])
model = benchmark_model(args.pop('config'), args.pop('checkpoint'),
                        args.pop('device'))
infer_slide(model, progress=False, **args)
status = open('/proc/self/status').read()
print('VmHWM_kB', status.split('VmHWM:')[1].split()[0])
"""


def benchmark_model(config: str,
                    checkpoint: Optional[str] = None,
                    device: str = 'cpu') -> nn.Module:
    """The segmentor to benchmark, in eval mode on ``device``.

    Built by :func:`~protoprompt_mm.apis.init_segmentor`, the one builder
    of every caller.

    Args:
        config: Config file.
        checkpoint: Its weights; None: the random weights of the model's
            constructors, seeded with 0 (``init_weights=False``: it could
            load pretrained files), and ``dataset_meta`` from the config's
            dataset.

    Returns:
        nn.Module: The model, with ``dataset_meta`` and ``cfg``.

    Raises:
        KeyError: If the config has no ``model``, or (random weights) no
            dataset with classes and a palette.
    """
    if checkpoint is not None:
        return init_segmentor(config, checkpoint, device)
    torch.manual_seed(0)
    model = init_segmentor(config, device=device, init_weights=False)
    if model.dataset_meta is None:
        raise KeyError(f'{config}: no test / val dataset with classes and '
                       'a palette, which the slide outputs need')
    return model


@torch.no_grad()
def forward_throughput(model: nn.Module, tiles: List[np.ndarray],
                       batch_size: int) -> float:
    """Tiles per second of the model alone on tiles in memory.

    The batched forward pass of the slide stream (data preprocessor,
    ``encode_decode``, float softmax, to the CPU) over all ``tiles`` in
    batches of ``batch_size``, timed after one untimed warm-up batch.

    Args:
        model: An mmseg segmentor in eval mode.
        tiles: Equally sized uint8 BGR (t, t, 3) tiles, at least one.
        batch_size: Tiles per forward pass, >= 1.

    Returns:
        float: Tiles per second.
    """
    if not tiles or batch_size < 1:
        raise ValueError(f'forward_throughput: need tiles and batch_size '
                         f'>= 1, got {len(tiles)} tiles, batch_size '
                         f'{batch_size}')
    inputs = [torch.from_numpy(np.ascontiguousarray(tile)).permute(2, 0, 1)
              for tile in tiles]
    batches = [inputs[k:k + batch_size]
               for k in range(0, len(inputs), batch_size)]

    def run(batch: List[torch.Tensor]) -> None:
        _tile_logits(model, batch).float().softmax(dim=1).cpu()

    run(batches[0])
    start = time.perf_counter()
    for batch in batches:
        run(batch)
    return len(inputs) / (time.perf_counter() - start)


def slide_tissue_tiles(slide_path: str,
                       model_mpp: float,
                       tile: int,
                       overlap: int,
                       slide_mpp: Optional[float] = None,
                       thumbnail_side: int = 2048) -> List[np.ndarray]:
    """The tiles :func:`infer_slide` runs on a slide, in memory.

    Same tissue detection, positions and resampling; 3 * tile² bytes per
    tile.

    Args:
        slide_path: The slide.
        model_mpp: µm per pixel the slide is read at.
        tile: Tile side, in pixels at ``model_mpp``.
        overlap: Pixels shared by neighbouring tiles.
        slide_mpp: Level-0 µm per pixel, overriding the slide's metadata.
        thumbnail_side: As :func:`infer_slide`'s (tissue detection).

    Returns:
        list[np.ndarray]: uint8 BGR (tile, tile, 3) tiles in scan order.
    """
    with open_slide(slide_path, slide_mpp) as reader:
        view = ResampledSlide(reader, model_mpp)
        tissue = detect_tissue(reader.thumbnail(thumbnail_side))
        positions, _ = tissue_tile_positions(tissue, *view.dimensions, tile,
                                             overlap)
        return [np.ascontiguousarray(view.read(x, y, tile, tile)[..., ::-1])
                for y, x in positions]


def slide_throughput(model: nn.Module,
                     slide_path: str,
                     out_dir: str,
                     model_mpp: float,
                     tile: int = 224,
                     overlap: int = 32,
                     batch_size: int = 8,
                     slide_mpp: Optional[float] = None) -> dict:
    """Throughput of :func:`infer_slide` on a slide against the forward
    pass alone on its tissue tiles (see the module docstring).

    Args:
        model: An mmseg segmentor in eval mode with ``dataset_meta``.
        slide_path: The slide.
        out_dir: Folder of ``infer_slide``'s outputs.
        model_mpp: µm per pixel the slide is read at.
        tile: Tile side, in pixels at ``model_mpp``.
        overlap: Pixels shared by neighbouring tiles.
        batch_size: Tiles per forward pass.
        slide_mpp: Level-0 µm per pixel, overriding the slide's metadata.

    Returns:
        dict: ``infer_slide``'s stats, plus ``slide_seconds`` (its wall
        time, unrounded), ``tiles_per_second`` (``tiles_segmented /
        slide_seconds``), ``forward_tiles``, ``forward_tiles_per_second``
        and ``ratio`` (slide / forward tiles per second).

    Raises:
        ValueError: If the slide has no tissue tiles.
    """
    tiles = slide_tissue_tiles(slide_path, model_mpp, tile, overlap,
                               slide_mpp)
    if not tiles:
        raise ValueError(f'{slide_path}: no tissue tiles to benchmark')
    forward_tiles = len(tiles)
    forward = forward_throughput(model, tiles, batch_size)
    del tiles
    start = time.perf_counter()
    stats = infer_slide(model, slide_path, out_dir, model_mpp, slide_mpp,
                        tile=tile, overlap=overlap, batch_size=batch_size,
                        progress=False)
    seconds = time.perf_counter() - start
    tiles_per_second = stats['tiles_segmented'] / seconds
    return dict(stats,
                slide_seconds=seconds,
                tiles_per_second=tiles_per_second,
                forward_tiles=forward_tiles,
                forward_tiles_per_second=forward,
                ratio=tiles_per_second / forward)


def peak_rss_mib(slide_path: str,
                 config: str,
                 checkpoint: Optional[str],
                 out_dir: str,
                 model_mpp: float,
                 tile: int = 224,
                 overlap: int = 32,
                 batch_size: int = 8,
                 device: str = 'cpu',
                 slide_mpp: Optional[float] = None) -> float:
    """Peak RSS of a fresh process that builds the model
    (:func:`benchmark_model`) and runs :func:`infer_slide` on a slide.

    Args:
        slide_path: The slide.
        config: Config file.
        checkpoint: Its weights, or None for random ones.
        out_dir: Folder of ``infer_slide``'s outputs.
        model_mpp: µm per pixel the slide is read at.
        tile: Tile side.
        overlap: Pixels shared by neighbouring tiles.
        batch_size: Tiles per forward pass.
        device: Device of the model.
        slide_mpp: Level-0 µm per pixel, overriding the slide's metadata.

    Returns:
        float: ``VmHWM`` of the process, in MiB (host memory only).

    Raises:
        RuntimeError: If the process fails (its stderr's tail attached).
    """
    args = dict(config=config, checkpoint=checkpoint, device=device,
                slide=slide_path, out_dir=out_dir, model_mpp=model_mpp,
                slide_mpp=slide_mpp, tile=tile, overlap=overlap,
                batch_size=batch_size)
    proc = subprocess.run(
        [sys.executable, '-c',
         _PEAK_RSS_SCRIPT.format(package_root=PACKAGE_ROOT),
         json.dumps(args)], capture_output=True, text=True)
    marked = [line.split()[1] for line in proc.stdout.splitlines()
              if line.startswith('VmHWM_kB ')]
    if proc.returncode != 0 or not marked:
        raise RuntimeError(f'{slide_path}: the peak-RSS process failed '
                           f'(exit {proc.returncode}):\n'
                           f'{proc.stderr[-3000:]}')
    return int(marked[-1]) / 1024


def write_benchmark_slide(path: str, width: int, height: int, mpp: float,
                          seed: int = 0) -> str:
    """A synthetic slide that is mostly tissue: one big blob per quadrant
    (an ellipse or a polygon filling most of it), glass around them,
    written as a pyramidal TIFF (levels :data:`PYRAMID_LEVELS`).

    Args:
        path: Output ``.tif``.
        width: Level-0 width in pixels, >= 2.
        height: Level-0 height in pixels, >= 2.
        mpp: Level-0 µm per pixel.
        seed: Random seed of the textures and blobs.

    Returns:
        str: ``path``.
    """
    half_width, half_height = width // 2, height // 2
    quadrants = [(x, y, half_width, half_height)
                 for y in (0, half_height) for x in (0, half_width)]
    rgb, _ = synthetic_slide(height, width, seed, tissue_boxes=quadrants)
    return write_pyramidal_tiff(path, rgb, mpp, levels=PYRAMID_LEVELS)


def machine_facts(device: str) -> dict:
    """What the figures depend on: CPU, threads, device, versions, load."""
    facts = dict(
        device=device,
        cpu_count=os.cpu_count(),
        cpus_usable=len(os.sched_getaffinity(0)),
        torch_threads=torch.get_num_threads(),
        processor=platform.processor() or platform.machine(),
        python=platform.python_version(),
        torch=torch.__version__,
        load_average_1min=os.getloadavg()[0],
    )
    if device.startswith('cuda'):
        facts['gpu'] = torch.cuda.get_device_name(torch.device(device))
    return facts


def run_slide_benchmark(
        config: str,
        checkpoint: Optional[str] = None,
        sides: Sequence[Tuple[int, int]] = ((2048, 2048), (4096, 4096)),
        tile: int = 224,
        overlap: int = 32,
        batch_size: int = 8,
        device: str = 'cpu',
        work_dir: str = 'work_dirs/benchmark_slide',
        model_mpp: Optional[float] = None) -> dict:
    """Throughput, ratio and peak RSS of whole-slide inference per size.

    A warm-up slide of 2 x 2 tiles runs first (not counted); then, per
    size, :func:`write_benchmark_slide`, :func:`slide_throughput` and
    :func:`peak_rss_mib`. The slides are written at ``model_mpp`` (read at
    their level 0, no resampling).

    Args:
        config: Config file.
        checkpoint: Its weights; None: random ones (:func:`benchmark_model`).
        sides: Level-0 ``(width, height)`` of the slides, in pixels.
        tile: Tile side.
        overlap: Pixels shared by neighbouring tiles.
        batch_size: Tiles per forward pass.
        device: Device of the model.
        work_dir: Folder of the slides (``slides/``) and of the outputs.
        model_mpp: µm per pixel of the model; default the config's
            ``train_mpp``, else :data:`DEFAULT_MPP`.

    Returns:
        dict: JSON-able: ``config``, ``checkpoint``, ``random_weights``,
        the settings, ``machine`` (:func:`machine_facts` at the start,
        ``load_average_1min_end`` added at the end) and ``slides``: per
        size, ``width``, ``height``, :func:`slide_throughput`'s dict and
        ``peak_rss_mib``.

    Raises:
        ValueError: If the tiling is impossible or a slide is smaller than
            a tile (before any work).
    """
    if not 0 <= overlap < tile or batch_size < 1:
        raise ValueError(f'run_slide_benchmark: need 0 <= overlap < tile and '
                         f'batch_size >= 1, got overlap {overlap}, tile '
                         f'{tile}, batch_size {batch_size}')
    for width, height in sides:
        if min(width, height) < tile:
            raise ValueError(f'run_slide_benchmark: slide sides must be at '
                             f'least the tile ({tile}), got {width}x{height}')
    machine = machine_facts(device)
    model = benchmark_model(config, checkpoint, device)
    if model_mpp is None:
        model_mpp = model.cfg.get('train_mpp') or DEFAULT_MPP
    slide_dir = osp.join(work_dir, 'slides')
    os.makedirs(slide_dir, exist_ok=True)
    settings = dict(tile=tile, overlap=overlap, batch_size=batch_size,
                    model_mpp=model_mpp)
    warm_up = write_benchmark_slide(osp.join(slide_dir, 'warm_up.tif'),
                                    2 * tile, 2 * tile, model_mpp)
    infer_slide(model, warm_up, osp.join(work_dir, 'out', 'warm_up'),
                progress=False, **settings)
    slides: List[Dict] = []
    for width, height in sides:
        name = f'slide_{width}x{height}'
        path = write_benchmark_slide(osp.join(slide_dir, name + '.tif'),
                                     width, height, model_mpp)
        out_dir = osp.join(work_dir, 'out', name)
        figures = slide_throughput(model, path, out_dir, **settings)
        figures['peak_rss_mib'] = peak_rss_mib(path, config, checkpoint,
                                               out_dir, device=device,
                                               **settings)
        slides.append(dict(width=width, height=height, **figures))
    machine['load_average_1min_end'] = os.getloadavg()[0]
    return dict(config=osp.abspath(config), checkpoint=checkpoint,
                random_weights=checkpoint is None, machine=machine,
                **settings, slides=slides)


def format_slide_benchmark(results: dict) -> str:
    """Markdown of :func:`run_slide_benchmark`'s results: a line of
    settings and machine facts, and a table with a row per slide."""
    machine = results['machine']
    weights = 'random weights' if results['random_weights'] else \
        results['checkpoint']
    lines = [
        f"Config `{osp.basename(results['config'])}` ({weights}), tile "
        f"{results['tile']}, overlap {results['overlap']}, batch "
        f"{results['batch_size']}, {results['model_mpp']} µm/px; "
        f"{machine['device']}, {machine['torch_threads']} torch threads, "
        f"{machine['cpus_usable']}/{machine['cpu_count']} CPUs usable, load "
        f"{machine['load_average_1min']:.2f} -> "
        f"{machine['load_average_1min_end']:.2f}.",
        '',
        '| slide (px) | tiles run / skipped | slide s | slide tiles/s | '
        'forward tiles/s | slide / forward | peak RSS (MiB) |',
        '| --- | --- | --- | --- | --- | --- | --- |',
    ]
    for slide in results['slides']:
        lines.append(
            f"| {slide['width']}x{slide['height']} | "
            f"{slide['tiles_segmented']} / {slide['tiles_skipped']} | "
            f"{slide['slide_seconds']:.2f} | "
            f"{slide['tiles_per_second']:.2f} | "
            f"{slide['forward_tiles_per_second']:.2f} | "
            f"{slide['ratio']:.2f} | {slide['peak_rss_mib']:.0f} |")
    return '\n'.join(lines)
