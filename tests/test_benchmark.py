"""tools/benchmark.py runs and reports; no timing is asserted."""
import json
import os.path as osp

import pytest
import torch
from mmengine.logging import MMLogger

from protoprompt_mm.engine import amp
from tool_loading import load_tool

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
CONFIG = 'configs/protoprompt/protoprompt_r18_synthetic.py'
BASELINE = 'configs/protoprompt/ablations/no-prototypes_r18_synthetic.py'
STAGE1 = 'configs/protoprompt/stage1_cam_r18_synthetic.py'
# PBIP's stage 1: FiniteLossAmpOptimWrapper, fp16 (schedule_pbip_stage1.py).
STAGE1_AMP = 'configs/protoprompt/stage1_protocam_mit-b1_bcss-wsss.py'


@pytest.fixture(scope='module')
def bench():
    return load_tool('benchmark')


def test_synthetic_batch_has_blocky_labels_with_ignore(bench):
    data = bench.synthetic_batch(batch=3, size=70, num_classes=4)
    assert len(data['inputs']) == 3
    assert data['inputs'][0].shape == (3, 70, 70)
    assert data['inputs'][0].dtype == torch.uint8
    labels = torch.stack([s.gt_sem_seg.data for s in data['data_samples']])
    assert labels.shape == (3, 1, 70, 70)
    assert set(labels.unique().tolist()) <= {0, 1, 2, 3, 255}
    # Constant inside each 32 x 32 cell.
    cell = labels[:, :, :32, :32]
    assert (cell == cell[:, :, :1, :1]).all()


def test_override_key_reaches_nested_configs(bench):
    cfg = dict(a=dict(num_classes=4, b=[dict(num_classes=4), 3]), c=1)
    assert bench.override_key(cfg, 'num_classes', 8) == 2
    assert cfg['a']['num_classes'] == 8
    assert cfg['a']['b'][0]['num_classes'] == 8
    with pytest.raises(KeyError, match='num_prototypes'):
        bench.load_model_cfg(osp.join(REPO, BASELINE),
                             dict(num_prototypes=2))


def test_interleaving_alternates_the_order(bench):
    calls = []
    times = bench.interleaved_times(
        dict(a=lambda: calls.append('a'), b=lambda: calls.append('b')),
        iters=3, warmup=1, device='cpu')
    assert calls == ['a', 'b', 'b', 'a', 'a', 'b', 'b', 'a']
    assert [len(v) for v in times.values()] == [3, 3]
    stats = bench.summary([1.0, 2.0, 4.0], images=2)
    assert stats['median_s'] == 2.0 and stats['images_per_s'] == 1.0
    assert bench.ratio(1.1, 1.0)['overhead_pct'] == pytest.approx(10.0)


def test_benchmark_runs_end_to_end(bench, tmp_path, capsys):
    out = tmp_path / 'bench.json'
    bench.main([
        osp.join(REPO, CONFIG), '--baseline', osp.join(REPO, BASELINE),
        '--size', '32', '--batch', '2', '--iters', '1', '--warmup', '0',
        '--num-prototypes', '2', '--num-classes', '5',
        '--breakdown', '--no-memory', '--pseudo-mask-config',
        osp.join(REPO, STAGE1), '--tta-scales', '1.0', '0.5', '--json',
        str(out)
    ])
    printed = capsys.readouterr().out
    assert 'time ratio protoprompt/baseline' in printed
    assert 'ratio TTA / views' in printed
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


def test_cpu_memory_probe_reports_a_peak(bench, capsys):
    args = bench.parse_args([
        osp.join(REPO, CONFIG), '--baseline', osp.join(REPO, BASELINE),
        '--size', '32', '--batch', '1', '--memory-probe', 'baseline:test'
    ])
    bench.memory_probe(args)
    probe = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert probe['peak_mib'] >= probe['before_mib'] > 0
    assert probe['step_peak_mib'] == pytest.approx(
        probe['peak_mib'] - probe['before_mib'])


def test_cfg_options_reach_either_model(bench):
    args = bench.parse_args([
        osp.join(REPO, CONFIG), '--baseline', osp.join(REPO, CONFIG),
        '--baseline-cfg-options',
        'model.decode_head.use_cross_attention=False',
        'model.decode_head.use_similarity_reweight=False'
    ])
    full, _, _ = bench.build_segmentor('protoprompt', args)
    plain, _, _ = bench.build_segmentor('baseline', args)
    assert full.decode_head.use_cross_attention
    assert not plain.decode_head.use_cross_attention
    assert not hasattr(plain.decode_head, 'sim_gate')


def test_amp_config_trains_in_fp32_on_the_cpu(bench, tmp_path, monkeypatch):
    """As tools/train.py: configure_amp swaps the AMP wrapper of a stage-1
    config for its fp32 counterpart, with a warning; the synthetic batch
    carries the image labels stage 1 trains on."""
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: False)
    warnings = []
    monkeypatch.setattr(amp, 'print_log',
                        lambda msg, **kwargs: warnings.append(msg))
    out = tmp_path / 'bench.json'
    bench.main([
        osp.join(REPO, STAGE1_AMP), '--baseline', osp.join(REPO, STAGE1),
        '--size', '32', '--batch', '1', '--iters', '1', '--warmup', '0',
        '--no-memory', '--json', str(out)
    ])
    assert any('FiniteLossAmpOptimWrapper needs a CUDA device' in msg
               for msg in warnings), warnings
    results = json.loads(out.read_text())
    assert results['setup']['optim_wrapper'] == dict(
        protoprompt='FiniteLossOptimWrapper',
        baseline='FiniteLossOptimWrapper')
    assert results['train']['protoprompt']['images_per_s'] > 0
    labels = bench.synthetic_batch(batch=2, size=70, num_classes=4)
    for sample in labels['data_samples']:
        present = set(sample.gt_sem_seg.data.unique().tolist()) - {255}
        assert set(sample.img_labels.nonzero()[0].tolist()) == present


def test_device_cpu_benchmarks_fp32_on_a_gpu_machine(bench, monkeypatch):
    MMLogger.get_current_instance()  # it cannot start under the fake GPU
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: True)
    warnings = []
    monkeypatch.setattr(amp, 'print_log',
                        lambda msg, **kwargs: warnings.append(msg))
    args = bench.parse_args([
        osp.join(REPO, STAGE1_AMP), '--baseline', osp.join(REPO, STAGE1),
        '--device', 'cpu'
    ])
    _, wrapper, _ = bench.build_segmentor('protoprompt', args)
    assert type(wrapper).__name__ == 'FiniteLossOptimWrapper'
    assert len(warnings) == 1 and 'fp32' in warnings[0]
