"""Whole-slide inference (apis/slide_inference.py, apis/slide_segmentation.py,
tools/infer_slide.py) on pyramidal TIFFs the tests write: the four outputs,
the mask reopened through
OpenSlide and equal to whole-image inference, GeoJSON validity, skipped
glass, resampling, stain normalisation, resumable folders and rank shares,
and peak memory flat as the slide grows."""
import json
import os
import os.path as osp
import subprocess
import sys

import numpy as np
import openslide
import pytest
from mmengine.registry import init_default_scope
from PIL import Image
from shapely.geometry import shape

from protoprompt_mm.apis import (infer_region, infer_slide, init_segmentor,
                                 is_finished, output_paths, segment_slides,
                                 tile_grid, torchrun_placement)
from protoprompt_mm.datasets.synthetic_histo import render_patch
from protoprompt_mm.datasets.synthetic_slide import (synthetic_slide,
                                                     write_pyramidal_tiff)
from test_infer_region import (  # noqa: F401  (the fixture tiny_model_files)
    PerPixelModel, tiny_model_files)

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
TESTS = osp.dirname(osp.abspath(__file__))
TILE = ['--tile', '64', '--overlap', '16', '--batch-size', '4']
TILING = dict(tile=64, overlap=16, batch_size=4)  # TILE, as arguments
# The module fixtures build models before the autouse scope fixture runs.
init_default_scope('mmseg')


@pytest.fixture(scope='module')
def slides(tmp_path_factory):
    """Two 0.25-µm/px pyramids with glass around tissue, one all tissue."""
    root = tmp_path_factory.mktemp('slides')
    folder = root / 'folder'
    folder.mkdir()
    rgb, tissue = synthetic_slide(300, 420, seed=0,
                                  tissue_boxes=[(20, 30, 200, 150),
                                                (250, 160, 150, 120)])
    glassy = write_pyramidal_tiff(str(folder / 'glassy.tif'), rgb, 0.25)
    texture, _ = render_patch(np.random.default_rng(1), 128)
    full_rgb = np.tile(texture, (2, 3, 1))[:200, :260]  # tissue everywhere
    full = write_pyramidal_tiff(str(folder / 'full.tif'), full_rgb, 0.25,
                                levels=(1, 2))
    return dict(root=root, folder=str(folder), glassy=glassy,
                glassy_rgb=rgb, glassy_tissue=tissue, full=full,
                full_rgb=full_rgb)


def run_infer_slide(*args):
    """tools/infer_slide.py as a user runs it (one rank, no torchrun)."""
    env = {key: value for key, value in os.environ.items()
           if key not in ('RANK', 'WORLD_SIZE', 'LOCAL_RANK')}
    proc = subprocess.run([sys.executable, 'tools/infer_slide.py', *args],
                          cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


@pytest.fixture(scope='module')
def glassy_run(slides, tiny_model_files):
    """The command line on one pyramidal TIFF."""
    config, checkpoint, _, meta = tiny_model_files
    out = str(slides['root'] / 'out')
    printed = run_infer_slide(config, checkpoint, slides['glassy'], '--out',
                              out, *TILE)
    assert 'rank 0/1: 1 slide(s)' in printed
    return out, meta


def test_a_slide_gets_its_four_outputs(slides, glassy_run):
    out, meta = glassy_run
    paths = output_paths(out, slides['glassy'])
    assert sorted(os.listdir(out)) == sorted(
        osp.basename(p) for p in paths.values())
    with open(paths['.json']) as f:
        stats = json.load(f)
    assert stats['level0_dimensions'] == [420, 300]
    assert stats['mpp'] == 0.25 and stats['slide_mpp'] == 0.25
    assert stats['mask_downsample'] == 1.0
    assert stats['tiles_segmented'] > 0 and stats['tiles_skipped'] > 0
    rows, cols = tile_grid(300, 420, 64, 16)
    assert stats['tiles_segmented'] + stats['tiles_skipped'] == \
        len(rows) * len(cols)
    mask = np.asarray(Image.open(paths['.tif']))
    tissue_mm2 = (mask != 255).sum() * 0.25 ** 2 / 1e6
    assert stats['tissue_area_mm2'] == pytest.approx(tissue_mm2, rel=1e-5)
    assert sum(stats['class_area_mm2'].values()) == pytest.approx(
        stats['tissue_area_mm2'])
    assert set(stats['class_area_mm2']) == set(meta['classes'])
    overlay = Image.open(paths['_overlay.png'])
    assert overlay.mode == 'RGB' and overlay.size == (420, 300)


def test_mask_reopens_through_openslide_and_glass_has_no_class(
        slides, glassy_run):
    out, _ = glassy_run
    path = output_paths(out, slides['glassy'])['.tif']
    with openslide.OpenSlide(path) as mask_slide:
        assert mask_slide.dimensions == (420, 300)
        assert float(mask_slide.properties['openslide.mpp-x']) == 0.25
        mask = np.asarray(mask_slide.read_region((0, 0), 0,
                                                 (420, 300)))[..., 0]
    labels = set(np.unique(mask))
    assert labels <= {0, 1, 2, 3, 255} and 255 in labels and len(labels) > 1
    glass = ~slides['glassy_tissue']
    # Detected on the thumbnail: a blob's outline may differ by a pixel.
    assert (mask[glass] == 255).mean() > 0.97
    assert (mask[slides['glassy_tissue']] != 255).mean() > 0.9


def test_slide_equals_whole_image_inference(slides, tiny_model_files,
                                            tmp_path):
    """All tissue, nothing skipped: the streamed slide is infer_region's
    argmax on the level-0 image wherever the tissue mask keeps a class."""
    config, checkpoint, _, _ = tiny_model_files
    model = init_segmentor(config, checkpoint)
    stats = infer_slide(model, slides['full'], str(tmp_path), model_mpp=0.25,
                        tile=64, overlap=16, batch_size=3, progress=False)
    assert stats['tiles_skipped'] == 0
    mask = np.asarray(Image.open(output_paths(str(tmp_path),
                                              slides['full'])['.tif']))
    bgr = np.ascontiguousarray(slides['full_rgb'][..., ::-1])
    expected = infer_region(model, bgr, tile=64, overlap=16).argmax(0)
    kept = mask != 255
    assert kept.mean() > 0.5
    assert np.array_equal(mask[kept], expected.numpy()[kept])


def test_geojson_is_valid_qupath_annotations(slides, glassy_run):
    out, meta = glassy_run
    with open(output_paths(out, slides['glassy'])['.geojson']) as f:
        collection = json.load(f)
    assert collection['type'] == 'FeatureCollection'
    mask = np.asarray(Image.open(output_paths(out, slides['glassy'])['.tif']))
    present = {meta['classes'][i] for i in np.unique(mask) if i != 255}
    names = [f['properties']['classification']['name']
             for f in collection['features']]
    assert set(names) == present and len(names) == len(present)
    for feature in collection['features']:
        properties = feature['properties']
        assert properties['objectType'] == 'annotation'
        index = meta['classes'].index(properties['classification']['name'])
        assert properties['classification']['color'] == meta['palette'][index]
        geometry = shape(feature['geometry'])
        assert geometry.is_valid and not geometry.is_empty
        minx, miny, maxx, maxy = geometry.bounds
        assert minx >= 0 and miny >= 0 and maxx <= 420 and maxy <= 300
        polygons = feature['geometry']['coordinates']
        if feature['geometry']['type'] == 'Polygon':
            polygons = [polygons]
        for polygon in polygons:
            for ring in polygon:
                assert ring[0] == ring[-1] and len(ring) >= 4
        # Simplified by a pixel: the area stays close to the pixel count.
        pixels = (mask == index).sum()
        assert abs(geometry.area - pixels) <= 0.1 * pixels + 50


def test_slide_is_read_at_the_models_resolution(slides, tiny_model_files,
                                                tmp_path):
    config, checkpoint, _, _ = tiny_model_files
    model = init_segmentor(config, checkpoint)
    stats = infer_slide(model, slides['glassy'], str(tmp_path),
                        model_mpp=0.5, tile=64, overlap=16, progress=False)
    assert stats['level_read'] == 1 and stats['mask_downsample'] == 2.0
    assert stats['mask_dimensions'] == [210, 150]
    mask = np.asarray(Image.open(output_paths(str(tmp_path),
                                              slides['glassy'])['.tif']))
    assert mask.shape == (150, 210)
    with open(output_paths(str(tmp_path), slides['glassy'])['.geojson']) as f:
        features = json.load(f)['features']
    # Polygons stay in level-0 pixels.
    assert max(shape(f['geometry']).bounds[2] for f in features) > 210


def test_slide_without_mpp_needs_mpp(slides, tiny_model_files, tmp_path):
    config, checkpoint, _, _ = tiny_model_files
    png = str(tmp_path / 'region.png')
    Image.fromarray(slides['glassy_rgb']).save(png)
    out = str(tmp_path / 'out')
    with pytest.raises(RuntimeError, match=r'region.png.*pass --mpp'):
        segment_slides(config, checkpoint, [png], out, **TILING)
    segment_slides(config, checkpoint, [png], out, slide_mpp=0.25, **TILING)
    assert is_finished(out, png)


def test_mpp_out_of_range_is_refused_before_the_model_loads(tmp_path):
    # No config or checkpoint exists: the check must come first.
    for mpp in dict(model_mpp=0.0), dict(slide_mpp=-0.25):
        with pytest.raises(ValueError, match='must be > 0'):
            segment_slides('none.py', 'none.pth', [str(tmp_path)],
                           str(tmp_path / 'out'), **mpp)


def test_stain_normalisation_is_fitted_once_per_slide(slides,
                                                      tiny_model_files,
                                                      tmp_path):
    config, checkpoint, _, _ = tiny_model_files
    reference = str(tmp_path / 'reference.png')
    Image.fromarray(slides['full_rgb'][:128, :128]).save(reference)
    out = str(tmp_path / 'out')
    segment_slides(config, checkpoint, [slides['glassy']], out,
                   stain_norm=reference, **TILING)
    with open(output_paths(out, slides['glassy'])['.json']) as f:
        assert json.load(f)['stain_normalized'] is True


def test_torchrun_placement_reads_the_rank_and_its_gpu(monkeypatch):
    for name in ('RANK', 'WORLD_SIZE', 'LOCAL_RANK'):
        monkeypatch.delenv(name, raising=False)
    assert torchrun_placement('cuda') == (0, 1, 'cuda:0')
    monkeypatch.setenv('RANK', '3')
    monkeypatch.setenv('WORLD_SIZE', '4')
    monkeypatch.setenv('LOCAL_RANK', '1')
    assert torchrun_placement('cuda') == (3, 4, 'cuda:1')
    assert torchrun_placement('cuda:0') == (3, 4, 'cuda:0')
    assert torchrun_placement('cpu') == (3, 4, 'cpu')


def test_folder_runs_resume_and_share_slides_by_rank(slides,
                                                     tiny_model_files,
                                                     tmp_path, monkeypatch):
    config, checkpoint, _, _ = tiny_model_files
    out = str(tmp_path / 'out')
    monkeypatch.setenv('RANK', '1')
    monkeypatch.setenv('WORLD_SIZE', '2')
    rank, world_size, device = torchrun_placement('cpu')
    # Sorted: full.tif (rank 0), glassy.tif (rank 1).
    assert segment_slides(config, checkpoint, [slides['folder']], out,
                          device=device, rank=rank, world_size=world_size,
                          **TILING).keys() == {slides['glassy']}
    assert not is_finished(out, slides['full'])
    assert is_finished(out, slides['glassy'])
    stamp = os.stat(output_paths(out, slides['glassy'])['.tif']).st_mtime_ns
    # The command line on the folder, one rank: glassy.tif is skipped.
    printed = run_infer_slide(config, checkpoint, slides['folder'], '--out',
                              out, *TILE)
    assert is_finished(out, slides['full'])
    assert os.stat(output_paths(out, slides['glassy'])['.tif']
                   ).st_mtime_ns == stamp  # finished before: skipped
    assert 'rank 0/1: 2 slide(s)' in printed
    segment_slides(config, checkpoint, [slides['folder']], out, force=True,
                   **TILING)
    assert os.stat(output_paths(out, slides['glassy'])['.tif']
                   ).st_mtime_ns != stamp
    assert not [name for name in os.listdir(out) if name.endswith('.part')]
    with pytest.raises(FileNotFoundError, match='nothing-here'):
        segment_slides(config, checkpoint, [str(tmp_path / 'nothing-here')],
                       out)


# VmHWM: the peak RSS of this process's memory since its exec (ru_maxrss
# would carry over the RSS of the forking test process).
PEAK_RSS_SCRIPT = """
import sys, torch
sys.path.insert(0, {tests!r})
from protoprompt_mm.apis import infer_slide
from test_infer_region import PerPixelModel
torch.manual_seed(0)
model = PerPixelModel().eval()
model.dataset_meta = dict(classes=['A', 'B', 'C', 'D', 'E'],
                          palette=[[i, i, i] for i in range(5)])
infer_slide(model, {slide!r}, {out!r}, model_mpp=0.25, tile=128,
            overlap=16, batch_size=8, vector_side=256, progress=False)
print(open('/proc/self/status').read().split('VmHWM:')[1].split()[0])
"""


def peak_rss_kib(slide, out):
    script = PEAK_RSS_SCRIPT.format(tests=TESTS, slide=slide, out=out)
    proc = subprocess.run([sys.executable, '-c', script], cwd=REPO,
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return int(proc.stdout.split()[-1])


def test_peak_memory_stays_flat_as_the_slide_grows(tmp_path):
    """A 4x taller slide, all tissue, the polygon map capped alike (as it is
    for every slide larger than vector_side): a full-size float canvas
    would add (5 + 1) * 4 B * 6144 * 512 = 72 MiB, the uint8 mask 3 MiB;
    the stream adds (almost) nothing (measured: +6 MiB alone, +27 MiB
    beside another test worker: allocator noise, hence the 40 MiB bound)."""
    peaks = []
    for height in (2048, 8192):
        rgb, _ = synthetic_slide(height, 512, seed=2,
                                 tissue_boxes=[(0, 0, 512, height)])
        slide = write_pyramidal_tiff(str(tmp_path / f'h{height}.tif'), rgb,
                                     0.25, levels=(1, 4, 16))
        del rgb
        peaks.append(peak_rss_kib(slide, str(tmp_path / f'out{height}')))
    assert peaks[1] - peaks[0] < 40 * 1024, peaks
