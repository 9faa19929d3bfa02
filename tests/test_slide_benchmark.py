"""The whole-slide benchmark (protoprompt_mm/benchmarks/slide_throughput.py,
tools/benchmark_slide.py) on tiny slides with a tiny random model: the
structure and sanity of its figures, never their values."""
import json
import math
import os
import os.path as osp
import subprocess
import sys

import numpy as np
import pytest
import torch
from mmengine.registry import init_default_scope

from protoprompt_mm.apis import infer_slide, tile_grid
from protoprompt_mm.benchmarks.slide_throughput import (
    format_slide_benchmark, forward_throughput, run_slide_benchmark,
    slide_throughput, slide_tissue_tiles)
from protoprompt_mm.datasets.synthetic_slide import (synthetic_slide,
                                                     write_pyramidal_tiff)
from test_infer_region import (  # noqa: F401  (the fixture tiny_model_files)
    PerPixelModel, tiny_model_files)

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
SIDES = ['160x160', '224x160']
# The module fixtures build models before the autouse scope fixture runs.
init_default_scope('mmseg')


@pytest.fixture(scope='module')
def benchmark(tiny_model_files, tmp_path_factory):
    """The one run of tools/benchmark_slide.py: two tiny slides, random
    weights, one thread (two would spin against the other jobs of a busy
    machine). Returns the results it wrote as JSON and what it printed."""
    config = tiny_model_files[0]
    root = tmp_path_factory.mktemp('benchmark')
    json_path = root / 'results.json'
    proc = subprocess.run(
        [sys.executable,
         osp.join(REPO, 'tools/benchmark_slide.py'), config, '--sides',
         *SIDES, '--tile', '64', '--overlap', '16', '--batch-size', '4',
         '--work-dir',
         str(root / 'work'), '--json',
         str(json_path)],
        capture_output=True, text=True,
        env=dict(os.environ, OMP_NUM_THREADS='1'))  # and its RSS processes
    assert proc.returncode == 0, proc.stderr[-3000:]
    with open(json_path) as f:
        return json.load(f), proc.stdout


def test_every_size_gets_sane_figures(benchmark):
    results, _ = benchmark
    assert [f"{s['width']}x{s['height']}" for s in results['slides']] == SIDES
    for slide in results['slides']:
        assert slide['tiles_segmented'] > 0
        rows, cols = tile_grid(slide['height'], slide['width'], 64, 16)
        assert slide['tiles_segmented'] + slide['tiles_skipped'] == \
            len(rows) * len(cols)
        # The forward pass ran on the very tiles the slide ran.
        assert slide['forward_tiles'] == slide['tiles_segmented']
        for key in ('tiles_per_second', 'forward_tiles_per_second', 'ratio',
                    'peak_rss_mib'):
            assert math.isfinite(slide[key]) and slide[key] > 0, key
        assert slide['tiles_per_second'] == pytest.approx(
            slide['tiles_segmented'] / slide['slide_seconds'])
        assert slide['ratio'] == pytest.approx(
            slide['tiles_per_second'] / slide['forward_tiles_per_second'])


def test_results_state_the_setup_and_are_json(benchmark):
    results, printed = benchmark
    assert results['random_weights'] is True and results['checkpoint'] is None
    assert (results['tile'], results['overlap'], results['batch_size']) == \
        (64, 16, 4)
    assert results['model_mpp'] == 0.25  # the config's train_mpp
    machine = results['machine']
    assert machine['device'] == 'cpu'
    assert machine['torch_threads'] == 1
    assert machine['cpu_count'] >= machine['cpus_usable'] >= 1
    # The tool prints the table of the very results it wrote.
    assert format_slide_benchmark(results) in printed


def test_markdown_has_a_row_per_size(benchmark):
    results, _ = benchmark
    table = format_slide_benchmark(results)
    rows = [line for line in table.splitlines() if line.startswith('| ')]
    assert len(rows) == 2 + len(SIDES)  # header and rule, then the slides
    for side, row in zip(SIDES, rows[2:]):
        cells = [cell.strip() for cell in row.strip('|').split('|')]
        assert cells[0] == side and len(cells) == 7
        assert float(cells[5]) > 0  # slide / forward


class RecordingModel(PerPixelModel):
    """PerPixelModel keeping every batch it is given (normalised)."""

    def __init__(self):
        super().__init__()
        self.batches = []

    def encode_decode(self, inputs, batch_img_metas):
        self.batches.append(inputs.clone())
        return super().encode_decode(inputs, batch_img_metas)


def test_forward_pass_gets_the_tiles_the_slide_runs(tmp_path):
    """Same tiles, same order, resampled alike (0.25 -> 0.4 µm/px)."""
    rgb, _ = synthetic_slide(200, 260, seed=3,
                             tissue_boxes=[(10, 20, 120, 100),
                                           (150, 90, 100, 100)])
    slide = write_pyramidal_tiff(str(tmp_path / 'slide.tif'), rgb, 0.25,
                                 levels=(1, 2))
    model = RecordingModel().eval()
    model.dataset_meta = dict(classes=list('ABCDE'),
                              palette=[[i, i, i] for i in range(5)])
    stats = infer_slide(model, slide, str(tmp_path / 'out'), 0.4, tile=48,
                        overlap=8, batch_size=3, progress=False)
    slide_inputs = torch.cat(model.batches)
    model.batches.clear()
    tiles = slide_tissue_tiles(slide, 0.4, 48, 8)
    forward_throughput(model, tiles, batch_size=3)
    forward_inputs = torch.cat(model.batches[1:])  # after the warm-up
    assert 0 < stats['tiles_segmented'] == len(tiles)
    assert stats['tiles_skipped'] > 0
    assert torch.equal(forward_inputs, slide_inputs)


def test_glass_no_tiles_or_tiny_slides_are_errors(tmp_path):
    model = PerPixelModel().eval()
    with pytest.raises(ValueError, match='0 tiles'):
        forward_throughput(model, [], batch_size=4)
    glass = np.full((128, 128, 3), 245, np.uint8)
    slide = write_pyramidal_tiff(str(tmp_path / 'glass.tif'), glass, 0.25,
                                 levels=(1, 2))
    with pytest.raises(ValueError, match=r'glass.tif: no tissue tiles'):
        slide_throughput(model, slide, str(tmp_path / 'out'), 0.25, tile=64,
                         overlap=16)
    with pytest.raises(ValueError, match='at least the tile'):
        run_slide_benchmark('any_config.py', sides=[(512, 100)], tile=128,
                            work_dir=str(tmp_path / 'work'))
    assert not (tmp_path / 'work').exists()
