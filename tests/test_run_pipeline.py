"""The pipeline (``protoprompt_mm.apis.pipeline``) end to end on a tiny
synthetic dataset, and ``tools/run_pipeline.py``'s exit on an error."""
import contextlib
import io
import json
import os
import os.path as osp
import subprocess
import sys

import pytest

from protoprompt_mm.apis import (PRESETS, PipelineError, aggregate,
                                 format_results_table, run_pipeline)
from protoprompt_mm.apis.pipeline import (STAGE1_SCORES, Variant,
                                          format_stain_table)

REPO_ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
LOADERS = ('train_dataloader', 'val_dataloader', 'test_dataloader')
TINY = [
    'train_cfg.max_iters=2', 'train_cfg.val_interval=2',
    'default_hooks.checkpoint.interval=2', 'train_dataloader.batch_size=4',
    'param_scheduler.0.end=1', 'param_scheduler.1.begin=1',
    *(f'{loader}.num_workers=0' for loader in LOADERS),
    *(f'{loader}.persistent_workers=False' for loader in LOADERS),
]


def run_tiny(data_root, work_dir, stage1_options=(), num_visualize=2,
             **settings):
    """run_pipeline on tiny data and runs; returns what it printed."""
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        run_pipeline(
            str(data_root), str(work_dir),
            synthetic=['num_train=12', 'num_val=3', 'num_test=3', 'size=64'],
            num_visualize=num_visualize,
            stage1_options=[*TINY, *stage1_options], stage2_options=TINY,
            **settings)
    return printed.getvalue()


S1_PROTO = 'seed0_stage1_protocam_r18_synthetic'
S1_CAM = 'seed0_stage1_cam_r18_synthetic'


def reused_steps(stdout):
    return {
        line.split(':')[0].split()[-1]
        for line in stdout.splitlines() if 'reusing' in line
    }


@pytest.fixture(scope='module')
def pipeline_run(tmp_path_factory):
    root = tmp_path_factory.mktemp('pipeline')
    data_root, work_dir = root / 'data', root / 'work'
    stdout = run_tiny(data_root, work_dir, variants=['full', 'cam'])
    return data_root, work_dir, stdout


PROTOCOL_SUFFIXES = ('', '_background_as_error')


def run_scores(stage):
    return [
        f'{stage}_{name}{suffix}' for suffix in PROTOCOL_SUFFIXES
        for name in ('miou', 'mdice', 'fwiou')
    ]


def test_results_json_schema(pipeline_run):
    _, work_dir, _ = pipeline_run
    with open(work_dir / 'results.json') as f:
        results = json.load(f)
    # Stage 1 (of the primary variant): CAM mIoU / mDice / FwIoU under both
    # protocols, pseudo-mask scores; stage 2: the same per variant, and the
    # per-class IoU under both protocols.
    scores = run_scores('stage1_cam') + [
        'pseudo_mask_miou', 'pseudo_mask_precision_miou',
        'pseudo_mask_coverage'
    ]
    tests = run_scores('test') + [
        'test_iou', 'test_iou_background_as_error', 'stain_shift_miou',
        'stain_shift_worst_change', 'stain_norm_miou',
        'stain_norm_worst_change'
    ]
    assert 'test_miou_background_as_error' in tests
    assert set(results) == {
        'seeds', *scores, *(f'{key}_std' for key in scores), *tests,
        *(f'{key}_std' for key in tests), 'variants'
    }
    assert results['seeds'] == [0]
    for key in scores:
        assert 0.0 <= results[key] <= 1.0
        assert results[f'{key}_std'] == 0.0  # one seed
    assert set(results['test_miou']) == {'full', 'cam'}
    full, cam = results['variants']['full'], results['variants']['cam']
    assert full['stage1_config'].endswith('stage1_protocam_r18_synthetic.py')
    assert cam['stage1_config'].endswith('stage1_cam_r18_synthetic.py')
    assert results['stage1_cam_miou'] == full['stage1_cam_miou']
    for variant in ('full', 'cam'):
        for key in run_scores('test'):
            assert 0.0 <= results[key][variant] <= 1.0
            assert results[f'{key}_std'][variant] == 0.0
        entry = results['variants'][variant]
        assert set(entry['per_seed']) == {'0'}
        for stage in ('stage1_cam', 'test'):
            ignored, as_error = (entry[f'{stage}_iou{suffix}']
                                 for suffix in PROTOCOL_SUFFIXES)
            assert set(ignored) == set(as_error) == {
                'TUM', 'STR', 'LYM', 'NEC'
            }
            for cls, iou in ignored.items():
                # None: the class is in neither prediction nor ground truth.
                assert iou is None or 0.0 <= iou <= 1.0
                # Tissue predicted on GT background only adds false
                # positives: no class gains.
                if iou is not None:
                    assert as_error[cls] <= iou
            assert entry[f'{stage}_miou_background_as_error'] <= \
                entry[f'{stage}_miou']
    # The final models on the re-stained test split (no --stain-norm here).
    conditions = ['clean', 'paler', 'darker', 'haematoxylin_heavy',
                  'eosin_heavy']
    for variant in ('full', 'cam'):
        entry = results['variants'][variant]
        shifted = entry['stain_shift_miou']
        assert list(shifted) == conditions
        assert shifted['clean'] == entry['test_miou']
        assert entry['stain_shift_worst_change'] == pytest.approx(
            min(shifted[c] - shifted['clean'] for c in conditions[1:]),
            abs=1e-4)
        assert entry['stain_norm_miou'] == {}
        assert entry['stain_norm_worst_change'] is None
    table = (work_dir / 'results.md').read_text()
    assert table.count('| full |') == 3 and table.count('| cam |') == 3
    assert 'GT background ignored' in table and 'TPRO / PBIP' in table
    assert ('| variant | ' + ' | '.join(conditions) + ' | worst change |'
            ) in table
    assert '+ Macenko' not in table.split('--stain-norm')[1]


def test_every_step_left_its_output(pipeline_run):
    data_root, work_dir, stdout = pipeline_run
    assert (data_root / 'training').is_dir()
    for stage1 in ('stage1_protocam_r18_synthetic', 'stage1_cam_r18_synthetic'):
        pseudo = os.listdir(work_dir / 'seed_0' / stage1 / 'pseudo_masks')
        assert sum(name.endswith('.png') for name in pseudo) == 12
    panels = os.listdir(work_dir / 'seed_0' / 'full' / 'vis')
    assert sum(name.endswith('_panel.png') for name in panels) == 2
    assert sum(name.endswith('_prototypes.png') for name in panels) == 2
    for variant in ('full', 'cam'):
        # One stain-shift run is the final test (its clean condition).
        test_dir = work_dir / 'seed_0' / variant / 'test'
        assert (test_dir / 'stain_shift.json').is_file()
    assert '| cam |' in stdout


def test_rerun_reuses_finished_steps(pipeline_run):
    data_root, work_dir, _ = pipeline_run
    stdout = run_tiny(data_root, work_dir, variants=['full', 'cam'])
    # Every step but `data`: per stage 1 train, test, pseudo-masks; per
    # variant train, test (with the stain shift), visualize.
    assert stdout.count('reusing') == 12
    assert 'train.py' not in stdout.replace('reusing', '')


def test_variants_share_their_stage1(pipeline_run):
    data_root, work_dir, _ = pipeline_run
    stdout = run_tiny(data_root, work_dir,
                      variants=['full', 'prototypes_contrastive'],
                      num_visualize=0)
    # Its stage 1 is full's: trained once, reused; only its stage 2 runs.
    assert reused_steps(stdout) == {
        f'{S1_PROTO}_train', f'{S1_PROTO}_test', f'{S1_PROTO}_pseudo_masks',
        'seed0_full_train', 'seed0_full_test'
    }
    with open(work_dir / 'results.json') as f:
        variants = json.load(f)['variants']
    assert variants['prototypes_contrastive']['pseudo_mask_miou'] == \
        variants['full']['pseudo_mask_miou']


def test_failed_step_is_named(pipeline_run, tmp_path):
    data_root, _, _ = pipeline_run
    with pytest.raises(PipelineError,
                       match=f'step "{S1_PROTO}_train" failed'):
        run_tiny(data_root, tmp_path / 'work', variants=['full'],
                 stage1_options=['model.decode_head.type=NoSuchHead'])


def test_missing_real_dataset_is_an_error(tmp_path):
    # The tool: a PipelineError is named on stderr, exit code 1.
    proc = subprocess.run([
        sys.executable, osp.join(REPO_ROOT, 'tools', 'run_pipeline.py'),
        '--data-root', str(tmp_path / 'nope'), '--work-dir',
        str(tmp_path / 'w'), '--preset', 'bcss-wsss'
    ], cwd=REPO_ROOT, capture_output=True, text=True)
    assert proc.returncode == 1
    assert 'does not exist' in proc.stderr and 'nope' in proc.stderr


def test_pseudo_mask_args_reach_the_generator(pipeline_run):
    # Runs in the shared work dir after the tests that expect its first
    # state (full's chain then holds these pseudo-masks), before the
    # ablation preset (which re-trains the prototype stage 1 anyway).
    data_root, work_dir, _ = pipeline_run
    stdout = run_tiny(data_root, work_dir, variants=['full'], num_visualize=0,
                      pseudo_mask_args='--scales 1.0 --no-flip --fg-thresh 0.3')
    with open(work_dir / '.steps' / f'{S1_PROTO}_pseudo_masks.json') as f:
        cmd = json.load(f)['cmd']
    assert cmd[cmd.index('--scales'):cmd.index('--cfg-options')] == [
        '--scales', '1.0', '--no-flip', '--fg-thresh', '0.3'
    ]
    masks = work_dir / 'seed_0' / 'stage1_protocam_r18_synthetic'
    with open(masks / 'pseudo_masks' / 'pseudo_mask_metrics.json') as f:
        metrics = json.load(f)
    assert metrics['scales'] == [1.0] and metrics['flip'] is False
    assert metrics['fg_thresh'] == 0.3
    # New pseudo-masks: stage 1 is reused, stage 2 must not be.
    assert reused_steps(stdout) == {f'{S1_PROTO}_train', f'{S1_PROTO}_test'}


def test_ablation_preset_embeds_prototypes_with_the_cam_stage1(
        pipeline_run):
    data_root, work_dir, _ = pipeline_run
    stdout = run_tiny(data_root, work_dir, preset='ablation',
                      variants=['cam', 'full'], num_visualize=0)
    with open(work_dir / '.steps' / f'{S1_PROTO}_train.json') as f:
        marker = json.load(f)
    with open(work_dir / 'seed_0' / 'stage1_cam_r18_synthetic' /
              'last_checkpoint') as f:
        cam_ckpt = f.read().strip()
    assert f'custom_hooks.0.encoder.checkpoint={cam_ckpt}' in marker['cmd']
    assert f'{S1_CAM}_train' in marker['upstream']
    # The plain-CAM stage 1 and its variant are reused; the prototype
    # stage 1 (new command) and what follows re-run.
    assert reused_steps(stdout) == {
        f'{S1_CAM}_train', f'{S1_CAM}_test', f'{S1_CAM}_pseudo_masks',
        'seed0_cam_train', 'seed0_cam_test'
    }


def test_aggregate_means_and_sample_stds_over_seeds():
    classes = ['A', 'B']

    def scores(miou, iou_b, pseudo=0.5):
        # Every score of both stages is miou, minus 0.1 under
        # background_as_error.
        values = {
            key: round(miou - 0.1, 4) if key.endswith('as_error') else miou
            for key in run_scores('stage1_cam') + run_scores('test')
        }
        per_class = dict(A=miou, B=None)
        return dict(values, stage1_cam_iou=per_class,
                    stage1_cam_iou_background_as_error=per_class,
                    pseudo_mask_miou=pseudo, pseudo_mask_precision_miou=0.9,
                    pseudo_mask_coverage=0.8, test_iou=dict(A=miou, B=iou_b),
                    test_iou_background_as_error=dict(A=0.1, B=iou_b))

    variants = dict(full=Variant('s1.py', 's2.py'),
                    gt=Variant('s1.py', 's2.py', pseudo_masks=False))
    # What run_seed reports for a variant that uses no stage-1 output.
    unused = dict(
        dict.fromkeys(STAGE1_SCORES),
        **dict.fromkeys(run_scores('test'), 0.9),
        stage1_cam_iou=dict(A=None, B=None),
        stage1_cam_iou_background_as_error=dict(A=None, B=None),
        test_iou=dict(A=0.9, B=0.9),
        test_iou_background_as_error=dict(A=0.9, B=0.9))
    results = aggregate(
        {0: dict(full=scores(0.6, None), gt=unused),
         1: dict(full=scores(0.8, 0.5), gt=unused),
         2: dict(full=scores(0.7, 0.7), gt=unused)}, variants, classes)
    gt = results['variants']['gt']
    assert gt['stage1_cam_miou'] is None and gt['test_miou'] == 0.9
    full = results['variants']['full']
    assert full['test_miou'] == pytest.approx(0.7)
    assert full['test_miou_std'] == pytest.approx(0.1)  # sample std
    assert full['test_iou']['B'] == pytest.approx(0.6)  # None left out
    assert full['test_iou_background_as_error']['A'] == pytest.approx(0.1)
    assert full['test_iou_background_as_error_std']['A'] == 0.0
    assert full['stage1_cam_iou']['B'] is None
    assert results['test_miou_std']['full'] == full['test_miou_std']
    assert results['test_fwiou_background_as_error']['full'] == \
        pytest.approx(0.6)
    assert results['test_fwiou_background_as_error_std']['full'] == \
        pytest.approx(0.1)
    assert results['stage1_cam_mdice_background_as_error'] == \
        pytest.approx(0.6)
    assert results['pseudo_mask_miou'] == 0.5
    assert results['pseudo_mask_miou_std'] == 0.0
    assert set(full['per_seed']) == {'0', '1', '2'}
    table = format_results_table(results, classes)
    ignored, as_error = table.split('\n\n', 1)[1].split('TPRO / PBIP')
    # Stage-1 mIoU, mDice, FwIoU, pseudo-mask mIoU, precision, coverage,
    # final mIoU, mDice, FwIoU, per-class final IoU (B: mean of 0.5, 0.7).
    assert ('| full | 70.00 ± 10.00 | 70.00 ± 10.00 | 70.00 ± 10.00 | '
            '50.00 | 90.00 | 80.00 | 70.00 ± 10.00 | 70.00 ± 10.00 | '
            '70.00 ± 10.00 | 70.00 ± 10.00 | 60.00 ± 14.14 |') in ignored
    assert '| gt | - | - | - | - | - | - | 90.00 | 90.00 | 90.00 |' in ignored
    # No pseudo-mask columns; every score 0.1 lower.
    assert ('| full | 60.00 ± 10.00 | 60.00 ± 10.00 | 60.00 ± 10.00 | '
            '60.00 ± 10.00 | 60.00 ± 10.00 | 60.00 ± 10.00 | 10.00 | '
            '60.00 ± 14.14 |') in as_error


def test_stain_table_gives_each_condition_and_the_worst_change():
    def run(clean, darker, norm_darker=None):
        scores = dict(stain_shift_miou=dict(clean=clean, darker=darker),
                      stain_shift_worst_change=round(darker - clean, 4))
        if norm_darker is not None:
            scores.update(
                stain_norm_miou=dict(clean=clean, darker=norm_darker),
                stain_norm_worst_change=round(norm_darker - clean, 4))
        return scores

    variants = dict(aug=Variant('s1.py', 's2.py'),
                    plain=Variant('s1.py', 's3.py'))
    results = aggregate(
        {0: dict(aug=run(0.8, 0.7, 0.79), plain=run(0.8, 0.5)),
         1: dict(aug=run(0.8, 0.75, 0.81), plain=run(0.8, 0.6))},
        variants, [])
    aug = results['variants']['aug']
    assert aug['stain_shift_miou']['darker'] == pytest.approx(0.725)
    assert aug['stain_shift_miou_std']['clean'] == 0.0
    assert aug['stain_norm_worst_change'] == pytest.approx(0.0)
    assert results['stain_shift_worst_change']['plain'] == pytest.approx(
        -0.25)
    table = format_stain_table(results)
    assert '| variant | clean | darker | worst change |' in table
    assert '| aug | 80.00 | 72.50 ± 3.54 | -7.50 ± 3.54 |' in table
    assert '| aug + Macenko | 80.00 | 80.00 ± 1.41 | +0.00 ± 1.41 |' in table
    assert '| plain | 80.00 | 55.00 ± 7.07 | -25.00 ± 7.07 |' in table
    assert 'plain + Macenko' not in table


def test_every_preset_names_existing_configs():
    assert {'bcss-wsss-pbip', 'luad-histoseg-pbip'} <= set(PRESETS)
    for name, preset in PRESETS.items():
        for variant in preset.variants.values():
            for config in (variant.stage1, variant.stage2):
                assert config is None or osp.isfile(config), (name, config)
    pbip = PRESETS['bcss-wsss-pbip'].variants['full']
    assert osp.basename(pbip.stage1) == 'stage1_protocam_mit-b1_bcss-wsss.py'
