"""Stain-shift evaluation: FixedStainShift inserted into the test pipeline,
the report table, and tools/test.py --stain-shift on a tiny trained
checkpoint of the manifest example config."""
import json
import os.path as osp

import numpy as np
import pytest
import torch
from mmengine.config import Config

from protoprompt_mm.apis import (stain_shift_table, with_stain_normalization,
                                 with_stain_shift)
from test_manifest_training import CONFIG, options, output, run_tool


def test_shift_goes_right_after_the_image_loading():
    cfg = Config.fromfile(CONFIG)
    shifted = with_stain_shift(cfg, 'eosin_heavy')
    pipeline = shifted.test_dataloader.dataset.pipeline
    assert pipeline[0]['type'] == 'LoadImageFromFile'
    assert pipeline[1] == dict(type='FixedStainShift', condition='eosin_heavy')
    assert len(pipeline) == len(cfg.test_dataloader.dataset.pipeline) + 1
    assert 'FixedStainShift' not in str(cfg.test_dataloader)  # a copy
    assert with_stain_shift(cfg, 'clean').test_dataloader == \
        cfg.test_dataloader
    with pytest.raises(ValueError, match="one of .*got 'bluish'"):
        with_stain_shift(cfg, 'bluish')
    cfg.test_dataloader.dataset.pipeline = pipeline[1:]
    with pytest.raises(ValueError, match='no .*LoadImageFromFile'):
        with_stain_shift(cfg, 'paler')


def test_table_gives_each_condition_next_to_clean():
    results = dict(clean=dict(mIoU=80.0), paler=dict(mIoU=77.5),
                   haematoxylin_heavy=dict(mIoU=71.25))
    assert stain_shift_table(results).splitlines() == [
        '| condition | H x | E x | mIoU | change |',
        '|---|---|---|---|---|',
        '| clean | 1 | 1 | 80.00 |  |',
        '| paler | 0.7 | 0.7 | 77.50 | -2.50 |',
        '| haematoxylin_heavy | 1.5 | 1 | 71.25 | -8.75 |',
    ]
    with pytest.raises(KeyError, match="no 'mDice' in the metrics of"):
        stain_shift_table(results, 'mDice')


def test_tool_reports_clean_and_shifted_miou(trained, tmp_path):
    work_dir = str(tmp_path / 'shift')
    proc = run_tool('test.py', CONFIG, trained['checkpoint'], '--stain-shift',
                    'haematoxylin_heavy', '--work-dir', work_dir,
                    *options(trained['data_root']))
    assert proc.returncode == 0, output(proc)[-6000:]
    assert "type='FixedStainShift'" in output(proc)
    assert output(proc).count('Iter(test) [2/2]') == 2
    with open(osp.join(work_dir, 'stain_shift.json')) as f:
        report = json.load(f)
    assert report['checkpoint'] == trained['checkpoint']
    assert report['factors'] == dict(haematoxylin_heavy=dict(H=1.5, E=1.0))
    assert list(report['metrics']) == ['clean', 'haematoxylin_heavy']
    for metrics in report['metrics'].values():
        assert 0 <= metrics['mIoU'] <= 100
    with open(osp.join(work_dir, 'stain_shift.md')) as f:
        table = f.read()
    clean, shifted = (report['metrics'][name]['mIoU']
                      for name in ('clean', 'haematoxylin_heavy'))
    assert f'| clean | 1 | 1 | {clean:.2f} |  |' in table
    assert (f'| haematoxylin_heavy | 1.5 | 1 | {shifted:.2f} | '
            f'{shifted - clean:+.2f} |') in table
    assert table.splitlines()[-1] in proc.stdout
    for name in ('clean', 'haematoxylin_heavy'):
        assert osp.isdir(osp.join(work_dir, 'stain_shift', name))


def test_tool_normalises_towards_the_checkpoints_stain(trained, tmp_path):
    """The training run stored its images' stain target in the checkpoint;
    --stain-norm CKPT puts Macenko normalisation after the re-staining."""
    checkpoint = torch.load(trained['checkpoint'], weights_only=False)
    target = checkpoint['meta']['stain_target']
    assert np.asarray(target['stain_matrix']).shape == (2, 3)
    assert target['num_images'] == 12  # every training patch (<= 64)
    work_dir = str(tmp_path / 'norm')
    proc = run_tool('test.py', CONFIG, trained['checkpoint'], '--stain-shift',
                    'paler', '--stain-norm', trained['checkpoint'],
                    '--work-dir', work_dir, *options(trained['data_root']))
    assert proc.returncode == 0, output(proc)[-6000:]
    log = output(proc)
    # The config of the last (paler) run is the last one in the log.
    assert log.rindex("type='FixedStainShift'") < log.rindex(
        "type='MacenkoStainNormalize'")
    with open(osp.join(work_dir, 'stain_shift.json')) as f:
        report = json.load(f)
    assert report['stain_norm'] == trained['checkpoint']
    assert list(report['metrics']) == ['clean', 'paler']
    with open(osp.join(work_dir, 'stain_shift.md')) as f:
        assert 'Macenko-normalised towards the stain of' in f.read()


def test_normalisation_goes_before_a_later_stain_shift(tmp_path):
    target = dict(stain_matrix=[[0.65, 0.70, 0.29], [0.07, 0.99, 0.11]],
                  max_concentrations=[1.0, 1.0])
    checkpoint = str(tmp_path / 'ckpt.pth')
    torch.save(dict(meta=dict(stain_target=target)), checkpoint)
    cfg = Config(dict(test_dataloader=dict(dataset=dict(pipeline=[
        dict(type='LoadImageFromFile'), dict(type='PackSegInputs')]))))
    shifted = with_stain_shift(with_stain_normalization(cfg, checkpoint),
                               'darker')
    assert [step['type'] for step in
            shifted.test_dataloader.dataset.pipeline] == [
                'LoadImageFromFile', 'FixedStainShift',
                'MacenkoStainNormalize', 'PackSegInputs']
    assert len(cfg.test_dataloader.dataset.pipeline) == 2  # a copy
    with pytest.raises(KeyError, match='carries no stain target'):
        torch.save(dict(meta={}), checkpoint)
        with_stain_normalization(cfg, checkpoint)
