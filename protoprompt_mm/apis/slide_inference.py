"""Whole-slide inference: OpenSlide in, QuPath-ready outputs, bounded memory.

One slide (:func:`infer_slide`):

1. the slide is opened through :func:`~.slide_reader.open_slide`
   (OpenSlide formats; ordinary images through the same interface) and
   seen at the model's training resolution (:class:`~.slide_reader.
   ResampledSlide`: the nearest finer pyramid level, resampled);
2. tissue is detected on a thumbnail (:func:`~.tissue_detection.
   detect_tissue`); only tiles that overlap tissue are run, and every pixel
   outside the tissue mask is 255 (not tissue), so glass never gets a
   class;
3. with a stain normaliser, one Macenko mapping is fitted per slide on a
   sample of its tissue tiles and applied to every tile;
4. the tiles stream through :func:`~.region_inference.stream_probabilities`
   (the code path of region inference: same tiling and cross-fade) and the
   labels go, strip by strip, into a tiled pyramidal TIFF
   (:func:`~.mask_tiff_writer.write_pyramidal_mask`); a label map of at
   most ``vector_side`` pixels a side is kept for the GeoJSON polygons and
   the overlay.

Outputs, in ``out_dir``: ``<name>.tif`` (uint8 class ids, 255 = not
tissue, at the inference resolution; ``<name>.json`` states its
downsample from level 0), ``<name>.geojson`` (QuPath annotations, level-0
pixel coordinates), ``<name>_overlay.png`` and ``<name>.json`` (areas in
mm², MPP, tiles run and skipped, seconds), written last: a slide whose
JSON exists is finished (:func:`infer_slides` skips it).

Memory: one batch of tiles, the stream's band (see
:mod:`~.region_inference`), one strip of labels and the writer's row of
TIFF tiles, the thumbnail and the ``vector_side`` label map; nothing
scales with the slide's height, and only those bands with its width.
"""
import json
import math
import os
import os.path as osp
import time
from typing import Dict, List, Optional, Sequence, Tuple

import cv2
import numpy as np
from mmengine.logging import print_log
from shapely.geometry import box as shapely_box
from torch import nn

from protoprompt_mm.datasets.stain import MacenkoNormalizer
from protoprompt_mm.utils.atomic_write import atomic_path
from .geojson_export import (NOT_TISSUE, label_polygons,
                             qupath_feature_collection, write_geojson)
from .mask_tiff_writer import write_pyramidal_mask
from .model_loading import require_dataset_meta
from .region_inference import stream_probabilities, tile_grid
from .slide_overlay import blend_overlay
from .slide_reader import ResampledSlide, SlideReader, open_slide
from .tissue_detection import (detect_tissue, tissue_fraction_of_boxes,
                               upsample_tissue)

# Files a finished slide has; the JSON is written last.
OUTPUT_SUFFIXES = ('.tif', '.geojson', '_overlay.png', '.json')
# What a folder run picks up: OpenSlide's formats and ordinary images.
SLIDE_EXTENSIONS = ('.svs', '.tif', '.tiff', '.ndpi', '.mrxs', '.scn',
                    '.vms', '.vmu', '.bif', '.svslide', '.png', '.jpg',
                    '.jpeg')
# Tissue tiles whose pixels are pooled for a slide's Macenko fit.
STAIN_FIT_TILES = 16


def output_paths(out_dir: str, slide_path: str) -> Dict[str, str]:
    """The output files of a slide: suffix -> path in ``out_dir``."""
    name = osp.splitext(osp.basename(slide_path))[0]
    return {suffix: osp.join(out_dir, name + suffix)
            for suffix in OUTPUT_SUFFIXES}


def is_finished(out_dir: str, slide_path: str) -> bool:
    """Whether the slide's outputs are complete (its JSON is written
    last, after the others)."""
    return all(osp.isfile(path)
               for path in output_paths(out_dir, slide_path).values())


def _stain_mapping(normalizer: MacenkoNormalizer, view: ResampledSlide,
                   tissue_tiles: Sequence[Tuple[int, int]], tile: int,
                   where: str) -> np.ndarray:
    """One Macenko mapping for the slide, fitted on the pooled pixels of up
    to :data:`STAIN_FIT_TILES` tissue tiles spread over it."""
    if not tissue_tiles:
        raise ValueError(f'{where}: no tissue tiles to fit the stain '
                         'normalisation on')
    picks = np.unique(np.linspace(0, len(tissue_tiles) - 1,
                                  STAIN_FIT_TILES).astype(int))
    pooled = np.concatenate([
        view.read(x, y, tile, tile).reshape(-1, 3)
        for y, x in (tissue_tiles[i] for i in picks)
    ])[:, None, :]
    return normalizer.fit(pooled, where=f'{where} (stain normalisation)')


def infer_slide(model: nn.Module,
                slide: str,
                out_dir: str,
                model_mpp: float,
                slide_mpp: Optional[float] = None,
                tile: int = 224,
                overlap: int = 32,
                batch_size: int = 8,
                stain_normalizer: Optional[MacenkoNormalizer] = None,
                thumbnail_side: int = 2048,
                vector_side: int = 2048,
                mask_tile: int = 512,
                progress: bool = True) -> dict:
    """Segment one slide and write its four outputs.

    Args:
        model: An mmseg segmentor in eval mode with ``dataset_meta``
            (classes, palette), e.g. from :func:`init_segmentor`.
        slide: Slide or image file.
        out_dir: Output folder (created).
        model_mpp: µm per pixel of the training images: the slide is read
            at this resolution.
        slide_mpp: Level-0 µm per pixel, overriding the slide's metadata
            (required when it has none).
        tile: Tile side, in pixels at ``model_mpp``.
        overlap: Pixels shared by neighbouring tiles.
        batch_size: Tiles per forward pass.
        stain_normalizer: Macenko normalisation towards its target; the
            slide's mapping is fitted once (see the module docstring).
        thumbnail_side: Longest side of the thumbnail for tissue detection
            and the overlay.
        vector_side: Longest side of the label map the polygons are traced
            on (their precision is ``max(W, H) / vector_side`` pixels).
        mask_tile: Tile side of the TIFF mask.
        progress: Show a progress bar over the tiles.

    Returns:
        dict: What ``<name>.json`` holds.
    """
    start = time.perf_counter()
    meta = require_dataset_meta(model, f'infer_slide({slide})')
    os.makedirs(out_dir, exist_ok=True)
    paths = output_paths(out_dir, slide)
    with open_slide(slide, slide_mpp) as reader:
        stats = _segment(model, reader, paths, meta, model_mpp, tile,
                         overlap, batch_size, stain_normalizer,
                         thumbnail_side, vector_side, mask_tile, progress)
    stats['seconds'] = round(time.perf_counter() - start, 2)
    with atomic_path(paths['.json']) as part:
        _dump_json(part, stats)
    return stats


def _write_png(path: str, rgb: np.ndarray) -> None:
    """An RGB image as PNG at ``path`` (any file name)."""
    ok, data = cv2.imencode('.png', np.ascontiguousarray(rgb[..., ::-1]))
    if not ok:
        raise OSError(f'{path}: could not encode the overlay as PNG')
    with open(path, 'wb') as f:
        f.write(data.tobytes())


def _dump_json(path: str, data: dict) -> None:
    with open(path, 'w') as f:
        json.dump(data, f, indent=2)


def tissue_tile_positions(tissue: np.ndarray, width: int, height: int,
                          tile: int, overlap: int
                          ) -> Tuple[List[Tuple[int, int]], int]:
    """The tiles of a slide's grid that :func:`infer_slide` runs.

    Args:
        tissue: Bool (h, w) tissue mask of the slide's thumbnail
            (:func:`~.tissue_detection.detect_tissue`).
        width: Slide width at the inference resolution, in pixels.
        height: Slide height at the inference resolution, in pixels.
        tile: Tile side, in pixels.
        overlap: Pixels shared by neighbouring tiles.

    Returns:
        tuple: ``(y, x)`` top-left corners of the tiles that overlap
        tissue, in scan order, and the number of tiles of the whole grid
        (:func:`~.region_inference.tile_grid`).
    """
    rows, cols = tile_grid(height, width, tile, overlap)
    boxes = np.array([(x, y, tile, tile) for y in rows for x in cols])
    runs = tissue_fraction_of_boxes(tissue, boxes, width / tissue.shape[1],
                                    height / tissue.shape[0]) > 0
    positions = [(int(y), int(x)) for (x, y, _, _), run in
                 zip(boxes, runs) if run]
    return positions, len(boxes)


def _segment(model: nn.Module, reader: SlideReader, paths: Dict[str, str],
             meta: dict, model_mpp: float, tile: int, overlap: int,
             batch_size: int, normalizer: Optional[MacenkoNormalizer],
             thumbnail_side: int, vector_side: int, mask_tile: int,
             progress: bool) -> dict:
    """The work of :func:`infer_slide` on an open slide; returns the stats
    (all but ``seconds``)."""
    view = ResampledSlide(reader, model_mpp)
    width, height = view.dimensions
    thumbnail = reader.thumbnail(thumbnail_side)
    tissue = detect_tissue(thumbnail)
    tissue_tiles, num_tiles = tissue_tile_positions(tissue, width, height,
                                                    tile, overlap)
    run_set = set(tissue_tiles)
    remix = None
    if normalizer is not None:
        remix = _stain_mapping(normalizer, view, tissue_tiles, tile,
                               reader.path)

    def read_tile(y: int, x: int) -> np.ndarray:
        rgb = view.read(x, y, tile, tile)
        if remix is not None:
            rgb = normalizer.apply(rgb, remix)
        return np.ascontiguousarray(rgb[..., ::-1])  # BGR, as trained

    classes = list(meta['classes'])
    num_classes = len(classes)
    counts = np.zeros(256, np.int64)
    step = max(1, math.ceil(max(width, height) / vector_side))
    low_rows: List[np.ndarray] = []

    def strips():
        blocks = stream_probabilities(
            model, read_tile, height, width, tile, overlap, batch_size,
            run_tile=lambda y, x: (y, x) in run_set, progress=progress)
        strip, strip_top = None, None
        for block in blocks:
            h, w = block.covered.shape
            if block.y != strip_top:
                strip = np.full((h, width), NOT_TISSUE, np.uint8)
                strip_top = block.y
            labels = block.probs.numpy().argmax(axis=0).astype(np.uint8)
            keep = block.covered.numpy() & upsample_tissue(
                tissue, (block.x, block.y, w, h), (height, width))
            strip[:, block.x:block.x + w] = np.where(keep, labels,
                                                     NOT_TISSUE)
            if block.x + w == width:
                counts[:] += np.bincount(strip.ravel(), minlength=256)
                first = (-strip_top) % step
                low_rows.append(strip[first::step, ::step].copy())
                yield strip

    written = write_pyramidal_mask(paths['.tif'], strips(), width, height,
                                   model_mpp, tile=mask_tile)
    low = np.concatenate(low_rows) if low_rows else np.full(
        (0, math.ceil(width / step)), NOT_TISSUE, np.uint8)
    level0_width, level0_height = reader.dimensions
    polygons = label_polygons(low, range(num_classes),
                              scale=step * view.scale,
                              simplify_tolerance=step * view.scale)
    inside = shapely_box(0, 0, level0_width, level0_height)
    polygons = {cls: geometry.intersection(inside)
                for cls, geometry in polygons.items()}
    write_geojson(paths['.geojson'], qupath_feature_collection(
        polygons, classes, meta['palette']))
    overlay = blend_overlay(thumbnail, low, meta['palette'][:num_classes])
    with atomic_path(paths['_overlay.png']) as part:
        _write_png(part, overlay)
    pixel_mm2 = (model_mpp / 1000) ** 2
    class_areas = {name: float(counts[i]) * pixel_mm2
                   for i, name in enumerate(classes)}
    return dict(
        slide=osp.abspath(reader.path),
        level0_dimensions=list(reader.dimensions),
        slide_mpp=reader.mpp,
        mpp=model_mpp,
        mask_dimensions=[width, height],
        mask_downsample=view.scale,
        mask_levels=[list(level) for level in written['levels']],
        level_read=view.level,
        tile=tile,
        overlap=overlap,
        tiles_segmented=len(tissue_tiles),
        tiles_skipped=num_tiles - len(tissue_tiles),
        tissue_area_mm2=sum(class_areas.values()),
        class_area_mm2=class_areas,
        stain_normalized=normalizer is not None,
        polygon_precision_px=step * view.scale,
    )


def slides_in(inputs: Sequence[str]) -> List[str]:
    """The slide files named by ``inputs`` (files, or folders searched one
    level deep for :data:`SLIDE_EXTENSIONS`), sorted, duplicates once.

    Raises:
        FileNotFoundError: If an input does not exist, or a folder holds no
            slide.
    """
    found = []
    for path in inputs:
        if osp.isdir(path):
            names = sorted(name for name in os.listdir(path)
                           if name.lower().endswith(SLIDE_EXTENSIONS))
            if not names:
                raise FileNotFoundError(
                    f'{path}: no slide files ({", ".join(SLIDE_EXTENSIONS)})')
            found += [osp.join(path, name) for name in names]
        elif osp.isfile(path):
            found.append(path)
        else:
            raise FileNotFoundError(f'{path}: no such slide file or folder')
    return sorted(dict.fromkeys(osp.abspath(path) for path in found))


def infer_slides(model: nn.Module,
                 slides: Sequence[str],
                 out_dir: str,
                 rank: int = 0,
                 world_size: int = 1,
                 force: bool = False,
                 **kwargs) -> Dict[str, dict]:
    """Segment many slides, one after the other, resumably.

    Slides are shared out by rank (``slides[rank::world_size]``, no
    communication, so one rank's failure never blocks another); a slide
    whose outputs are complete is skipped unless ``force``. A slide that
    fails is reported and the others still run.

    Args:
        model: See :func:`infer_slide`.
        slides: Slide files (see :func:`slides_in`).
        out_dir: Output folder.
        rank: This process's rank.
        world_size: Number of processes.
        force: Redo finished slides.
        **kwargs: The rest of :func:`infer_slide`'s arguments.

    Returns:
        dict: Slide path -> its stats, or ``{'skipped': True}``.

    Raises:
        RuntimeError: After the rest ran, naming every slide that failed.
    """
    results, failures = {}, []
    for slide in slides[rank::world_size]:
        if not force and is_finished(out_dir, slide):
            print_log(f'{slide}: finished before, skipped', logger='current')
            results[slide] = dict(skipped=True)
            continue
        try:
            results[slide] = infer_slide(model, slide, out_dir, **kwargs)
        except (OSError, ValueError, KeyError, RuntimeError) as error:
            failures.append(f'{slide}: {type(error).__name__}: {error}')
            print_log(failures[-1], logger='current', level=40)
    if failures:
        raise RuntimeError(f'{len(failures)} slide(s) failed:\n' +
                           '\n'.join(failures))
    return results
