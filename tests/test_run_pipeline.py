"""tools/run_pipeline.py end to end on a tiny synthetic dataset."""
import json
import os
import os.path as osp
import subprocess
import sys

import pytest

REPO_ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
LOADERS = ('train_dataloader', 'val_dataloader', 'test_dataloader')
TINY = [
    'train_cfg.max_iters=2', 'train_cfg.val_interval=2',
    'default_hooks.checkpoint.interval=2', 'train_dataloader.batch_size=4',
    'param_scheduler.0.end=1', 'param_scheduler.1.begin=1',
    *(f'{loader}.num_workers=0' for loader in LOADERS),
    *(f'{loader}.persistent_workers=False' for loader in LOADERS),
]


def run_pipeline(data_root, work_dir, *extra):
    cmd = [
        sys.executable, osp.join(REPO_ROOT, 'tools', 'run_pipeline.py'),
        '--data-root', str(data_root), '--work-dir', str(work_dir),
        '--synthetic', 'num_train=12', 'num_val=3', 'num_test=3', 'size=64',
        '--num-visualize', '2', '--stage1-options', *TINY,
        '--stage2-options', *TINY, *extra
    ]
    return subprocess.run(cmd, cwd=REPO_ROOT, capture_output=True, text=True)


@pytest.fixture(scope='module')
def pipeline_run(tmp_path_factory):
    root = tmp_path_factory.mktemp('pipeline')
    data_root, work_dir = root / 'data', root / 'work'
    proc = run_pipeline(data_root, work_dir, '--variants', 'full',
                        'no_prototypes')
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return data_root, work_dir, proc


def test_results_json_schema(pipeline_run):
    _, work_dir, _ = pipeline_run
    with open(work_dir / 'results.json') as f:
        results = json.load(f)
    assert set(results) == {'stage1_cam_miou', 'pseudo_mask_miou',
                            'test_miou', 'test_iou'}
    assert 0.0 <= results['stage1_cam_miou'] <= 1.0
    assert 0.0 <= results['pseudo_mask_miou'] <= 1.0
    assert set(results['test_miou']) == {'full', 'no_prototypes'}
    for variant, per_class in results['test_iou'].items():
        assert set(per_class) == {'TUM', 'STR', 'LYM', 'NEC'}
        # None: the class is in neither prediction nor ground truth.
        assert all(v is None or 0.0 <= v <= 1.0 for v in per_class.values())
        assert 0.0 <= results['test_miou'][variant] <= 1.0
    assert 'stage 2: full' in (work_dir / 'results.md').read_text()


def test_every_step_left_its_output(pipeline_run):
    data_root, work_dir, proc = pipeline_run
    assert (data_root / 'training').is_dir()
    pseudo = os.listdir(work_dir / 'pseudo_masks')
    assert sum(name.endswith('.png') for name in pseudo) == 12
    panels = os.listdir(work_dir / 'full' / 'vis')
    assert sum(name.endswith('_panel.png') for name in panels) == 2
    assert sum(name.endswith('_prototypes.png') for name in panels) == 2
    assert 'stage 2: no_prototypes' in proc.stdout


def test_rerun_reuses_finished_steps(pipeline_run):
    data_root, work_dir, _ = pipeline_run
    proc = run_pipeline(data_root, work_dir, '--variants', 'full',
                        'no_prototypes')
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count('reusing') == 9  # every step but `data`
    assert 'train.py' not in proc.stdout.replace('reusing', '')


def test_failed_step_is_named(pipeline_run, tmp_path):
    data_root, _, _ = pipeline_run
    proc = run_pipeline(data_root, tmp_path / 'work', '--variants', 'full',
                        '--stage1-options',
                        'model.decode_head.type=NoSuchHead')
    assert proc.returncode == 1
    assert 'step "stage1_train" failed' in proc.stderr


def test_missing_real_dataset_is_an_error(tmp_path):
    proc = subprocess.run([
        sys.executable, osp.join(REPO_ROOT, 'tools', 'run_pipeline.py'),
        '--data-root', str(tmp_path / 'nope'), '--work-dir',
        str(tmp_path / 'w'), '--preset', 'bcss-wsss'
    ], cwd=REPO_ROOT, capture_output=True, text=True)
    assert proc.returncode == 1
    assert 'does not exist' in proc.stderr and 'nope' in proc.stderr


def test_pseudo_mask_args_reach_the_generator(pipeline_run, tmp_path):
    data_root, _, _ = pipeline_run
    work_dir = tmp_path / 'work'
    proc = run_pipeline(data_root, work_dir, '--variants', 'full',
                        '--num-visualize', '0', '--pseudo-mask-args',
                        '--scales 1.0 --no-flip --bg-thresh 0.05')
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    with open(work_dir / '.steps' / 'pseudo_masks.json') as f:
        cmd = json.load(f)['cmd']
    assert cmd[cmd.index('--scales'):cmd.index('--cfg-options')] == [
        '--scales', '1.0', '--no-flip', '--bg-thresh', '0.05'
    ]
    with open(work_dir / 'pseudo_masks' / 'pseudo_mask_metrics.json') as f:
        metrics = json.load(f)
    assert metrics['scales'] == [1.0] and metrics['flip'] is False
    assert metrics['bg_thresh'] == 0.05

    # New pseudo-masks: stage 1 is reused, stage 2 must not be.
    proc = run_pipeline(data_root, work_dir, '--variants', 'full',
                        '--num-visualize', '0', '--pseudo-mask-args',
                        '--scales 1.0 --no-flip --bg-thresh 0.06')
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    reused = {
        line.split(':')[0].split()[-1]
        for line in proc.stdout.splitlines() if 'reusing' in line
    }
    assert reused == {'stage1_train', 'stage1_test'}
