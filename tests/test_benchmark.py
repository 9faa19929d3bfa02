"""The ProtoPrompt-vs-baseline benchmark (protoprompt_mm/benchmarks/,
tools/benchmark.py) runs and reports; no timing is asserted."""
import json
import os.path as osp
import subprocess
import sys

import pytest
import torch
from mmengine.logging import MMLogger

from protoprompt_mm.benchmarks.memory_probe import cpu_peak_memory
from protoprompt_mm.benchmarks.model_building import (build_segmentor,
                                                      load_model_cfg,
                                                      override_key,
                                                      segmentor_sources)
from protoprompt_mm.benchmarks.model_comparison import run_benchmark
from protoprompt_mm.benchmarks.synthetic_batch import synthetic_batch
from protoprompt_mm.benchmarks.timing import (interleaved_times, ratio,
                                              summary)
from protoprompt_mm.engine import amp

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
CONFIG = osp.join(REPO, 'configs/protoprompt/protoprompt_r18_synthetic.py')
BASELINE = osp.join(
    REPO, 'configs/protoprompt/ablations/no-prototypes_r18_synthetic.py')
STAGE1 = osp.join(REPO, 'configs/protoprompt/stage1_cam_r18_synthetic.py')
# PBIP's stage 1: FiniteLossAmpOptimWrapper, fp16 (schedule_pbip_stage1.py).
STAGE1_AMP = osp.join(
    REPO, 'configs/protoprompt/stage1_protocam_mit-b1_bcss-wsss.py')


def test_synthetic_batch_has_blocky_labels_with_ignore():
    data = synthetic_batch(batch=3, size=70, num_classes=4)
    assert len(data['inputs']) == 3
    assert data['inputs'][0].shape == (3, 70, 70)
    assert data['inputs'][0].dtype == torch.uint8
    labels = torch.stack([s.gt_sem_seg.data for s in data['data_samples']])
    assert labels.shape == (3, 1, 70, 70)
    assert set(labels.unique().tolist()) <= {0, 1, 2, 3, 255}
    # Constant inside each 32 x 32 cell.
    cell = labels[:, :, :32, :32]
    assert (cell == cell[:, :, :1, :1]).all()


def test_override_key_reaches_nested_configs():
    cfg = dict(a=dict(num_classes=4, b=[dict(num_classes=4), 3]), c=1)
    assert override_key(cfg, 'num_classes', 8) == 2
    assert cfg['a']['num_classes'] == 8
    assert cfg['a']['b'][0]['num_classes'] == 8
    with pytest.raises(KeyError, match='num_prototypes'):
        load_model_cfg(BASELINE, dict(num_prototypes=2))


def test_interleaving_alternates_the_order():
    calls = []
    times = interleaved_times(
        dict(a=lambda: calls.append('a'), b=lambda: calls.append('b')),
        iters=3, warmup=1, device='cpu')
    assert calls == ['a', 'b', 'b', 'a', 'a', 'b', 'b', 'a']
    assert [len(v) for v in times.values()] == [3, 3]
    stats = summary([1.0, 2.0, 4.0], images=2)
    assert stats['median_s'] == 2.0 and stats['images_per_s'] == 1.0
    assert ratio(1.1, 1.0)['overhead_pct'] == pytest.approx(10.0)


def test_benchmark_command_line_runs_end_to_end(tmp_path):
    """The one run of tools/benchmark.py: every option reaches the
    benchmark, the report is printed and the JSON written."""
    out = tmp_path / 'bench.json'
    proc = subprocess.run([
        sys.executable,
        osp.join(REPO, 'tools/benchmark.py'), CONFIG, '--baseline', BASELINE,
        '--size', '32', '--batch', '2', '--iters', '1', '--warmup', '0',
        '--threads', '1', '--num-prototypes', '2', '--num-classes', '5',
        '--breakdown', '--no-memory', '--pseudo-mask-config', STAGE1,
        '--tta-scales', '1.0', '0.5', '--json',
        str(out)
    ], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    printed = proc.stdout
    assert 'time ratio protoprompt/baseline' in printed
    assert 'ratio TTA / views' in printed
    assert '-- peak memory' not in printed
    results = json.loads(out.read_text())
    for phase in ('train', 'test'):
        assert results[phase]['protoprompt']['images_per_s'] > 0
        assert results[phase]['ratio']['ratio'] > 0
    parts = results['breakdown']['protoprompt']
    for name in ('backbone', 'neck PrototypeBank', 'head PromptFusionHead',
                 'loss loss_proto_contrast', 'loss loss_region',
                 'momentum_update', 'optimizer step'):
        assert name in parts, name
    assert 'momentum_update' not in results['breakdown']['baseline']
    assert results['pseudo_masks']['num_views'] == 4
    assert results['setup']['num_classes'] == 5
    assert results['setup']['threads'] == 1


def test_cpu_memory_probe_reports_a_peak():
    """The probe runs in a fresh interpreter (python -m
    protoprompt_mm.benchmarks.memory_probe)."""
    source = segmentor_sources(CONFIG, BASELINE)['baseline']
    probe = cpu_peak_memory(source, 'test', batch=1, size=32, threads=1)
    assert probe['peak_mib'] >= probe['before_mib'] > 0
    assert probe['step_peak_mib'] == pytest.approx(
        probe['peak_mib'] - probe['before_mib'])


def test_cfg_options_reach_either_model():
    sources = segmentor_sources(
        CONFIG, CONFIG, baseline_cfg_options={
            'model.decode_head.use_cross_attention': False,
            'model.decode_head.use_similarity_reweight': False
        })
    full, _, _ = build_segmentor(sources['protoprompt'], 'cpu')
    plain, _, _ = build_segmentor(sources['baseline'], 'cpu')
    assert full.decode_head.use_cross_attention
    assert not plain.decode_head.use_cross_attention
    assert not hasattr(plain.decode_head, 'sim_gate')


def test_amp_config_trains_in_fp32_on_the_cpu(monkeypatch):
    """As tools/train.py: configure_amp swaps the AMP wrapper of a stage-1
    config for its fp32 counterpart, with a warning; the synthetic batch
    carries the image labels stage 1 trains on."""
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: False)
    warnings = []
    monkeypatch.setattr(amp, 'print_log',
                        lambda msg, **kwargs: warnings.append(msg))
    results = run_benchmark(STAGE1_AMP, STAGE1, size=32, batch=1, iters=1,
                            warmup=0, memory=False)
    assert any('FiniteLossAmpOptimWrapper needs a CUDA device' in msg
               for msg in warnings), warnings
    results = json.loads(json.dumps(results))
    assert results['setup']['optim_wrapper'] == dict(
        protoprompt='FiniteLossOptimWrapper',
        baseline='FiniteLossOptimWrapper')
    assert results['train']['protoprompt']['images_per_s'] > 0
    labels = synthetic_batch(batch=2, size=70, num_classes=4)
    for sample in labels['data_samples']:
        present = set(sample.gt_sem_seg.data.unique().tolist()) - {255}
        assert set(sample.img_labels.nonzero()[0].tolist()) == present


def test_device_cpu_benchmarks_fp32_on_a_gpu_machine(monkeypatch):
    MMLogger.get_current_instance()  # it cannot start under the fake GPU
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: True)
    warnings = []
    monkeypatch.setattr(amp, 'print_log',
                        lambda msg, **kwargs: warnings.append(msg))
    source = segmentor_sources(STAGE1_AMP, STAGE1)['protoprompt']
    _, wrapper, _ = build_segmentor(source, 'cpu')
    assert type(wrapper).__name__ == 'FiniteLossOptimWrapper'
    assert len(warnings) == 1 and 'fp32' in warnings[0]
