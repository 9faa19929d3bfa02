"""set_training_start: what tools/train.py resumes or loads, and its errors.

The subprocess runs (a stage-2 run from the stage-1 weights resumed with
``--resume``) are in test_readme_commands.py.
"""
import os
import os.path as osp

import pytest
from mmengine.config import Config

from protoprompt_mm.utils import load_runner_config, set_training_start

REPO_ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
STAGE2 = osp.join(REPO_ROOT, 'configs', 'protoprompt',
                  'protoprompt_r18_synthetic.py')


def config(work_dir, load_from=None) -> Config:
    return Config(dict(work_dir=str(work_dir), load_from=load_from))


def write_checkpoint(work_dir, name: str) -> str:
    """A (dummy) checkpoint and the work dir's last_checkpoint naming it."""
    work_dir.mkdir(exist_ok=True)
    path = str(work_dir / name)
    open(path, 'wb').close()
    (work_dir / 'last_checkpoint').write_text(path)
    return path


def test_resume_picks_the_work_dirs_checkpoint_over_load_from(tmp_path):
    stage1 = write_checkpoint(tmp_path / 's1', 'iter_300.pth')
    own = write_checkpoint(tmp_path / 's2', 'iter_100.pth')
    cfg = config(tmp_path / 's2', load_from=stage1)
    set_training_start(cfg, resume=True)
    assert (cfg.resume, cfg.load_from) == (True, own)


def test_resume_without_a_checkpoint_starts_from_load_from(tmp_path):
    stage1 = write_checkpoint(tmp_path / 's1', 'iter_300.pth')
    cfg = config(tmp_path / 's2', load_from=stage1)
    set_training_start(cfg, resume=True)
    assert (cfg.resume, cfg.load_from) == (False, stage1)
    cfg = config(tmp_path / 's2')
    set_training_start(cfg, resume=True)
    assert (cfg.resume, cfg.load_from) == (False, None)


def test_without_resume_load_from_is_kept(tmp_path):
    stage1 = write_checkpoint(tmp_path / 's1', 'iter_300.pth')
    write_checkpoint(tmp_path / 's2', 'iter_100.pth')
    cfg = config(tmp_path / 's2', load_from=stage1)
    cfg.resume = True  # a config's own resume=True gives way to the flag
    set_training_start(cfg, resume=False)
    assert (cfg.resume, cfg.load_from) == (False, stage1)


def test_missing_load_from_names_the_file(tmp_path):
    missing = str(tmp_path / 's1' / 'iter_300.pth')
    with pytest.raises(FileNotFoundError) as err:
        set_training_start(config(tmp_path / 's2', missing), resume=False)
    assert missing in str(err.value)
    assert 'train stage 1 first' in str(err.value)
    assert 'load_from=None' in str(err.value)
    with pytest.raises(FileNotFoundError, match='train stage 1 first'):
        set_training_start(config(tmp_path / 's2', missing), resume=True)


def test_empty_load_from_is_an_error(tmp_path):
    # What `load_from=$(cat W/last_checkpoint)` gives when W has no run.
    with pytest.raises(ValueError, match='train stage 1 first'):
        set_training_start(config(tmp_path, ''), resume=False)


def test_remote_load_from_is_left_to_mmengine(tmp_path):
    url = 'https://example.org/stage1.pth'
    cfg = config(tmp_path, url)
    set_training_start(cfg, resume=False)
    assert cfg.load_from == url


def test_resume_from_a_vanished_checkpoint_names_last_checkpoint(tmp_path):
    gone = write_checkpoint(tmp_path, 'iter_100.pth')
    os.remove(gone)
    with pytest.raises(FileNotFoundError, match='last_checkpoint'):
        set_training_start(config(tmp_path), resume=True)


def test_stage2_config_load_from_defaults_to_none_and_is_overridable(
        tmp_path):
    # tools/run_pipeline.py passes --cfg-options load_from=<stage-1 ckpt>.
    assert load_runner_config(STAGE2).load_from is None
    stage1 = write_checkpoint(tmp_path / 's1', 'iter_2.pth')
    cfg = load_runner_config(STAGE2, dict(load_from=stage1),
                             work_dir=str(tmp_path / 's2'))
    set_training_start(cfg, resume=False)
    assert (cfg.resume, cfg.load_from) == (False, stage1)
