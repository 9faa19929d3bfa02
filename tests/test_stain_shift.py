"""Stain-shift evaluation: FixedStainShift inserted into the test pipeline,
the report table, and tools/test.py --stain-shift on a tiny trained
checkpoint of the manifest example config."""
import json
import os.path as osp

import pytest
from mmengine.config import Config

from protoprompt_mm.apis import stain_shift_table, with_stain_shift
from test_manifest_training import (  # noqa: F401  (the fixture trained)
    CONFIG, options, output, run_tool, trained)


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
