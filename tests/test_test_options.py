"""set_test_options: what tools/test.py's flags change in the config."""
import pytest

from protoprompt_mm.utils import load_runner_config, set_test_options

CONFIG = 'configs/protoprompt/protoprompt_r18_synthetic.py'


def test_flags_reach_the_config(tmp_path):
    cfg = load_runner_config(CONFIG, work_dir=str(tmp_path))
    model = cfg.model
    set_test_options(cfg, 'ckpt.pth', show_dir=str(tmp_path / 'vis'),
                     tta=True, out=str(tmp_path / 'masks'))
    assert cfg.load_from == 'ckpt.pth'
    assert cfg.default_hooks.visualization.draw is True
    assert not cfg.default_hooks.visualization.get('show')
    assert cfg.visualizer.save_dir == str(tmp_path / 'vis')
    assert cfg.model.type == 'SegTTAModel' and cfg.model.module == model
    assert cfg.test_dataloader.dataset.pipeline == cfg.tta_pipeline
    assert cfg.test_evaluator.output_dir == str(tmp_path / 'masks')
    assert cfg.test_evaluator.keep_results is True


def test_flags_without_what_they_need_are_refused(tmp_path):
    cfg = load_runner_config(CONFIG, work_dir=str(tmp_path))
    cfg.pop('tta_model')
    with pytest.raises(KeyError, match='--tta needs tta_model'):
        set_test_options(cfg, 'ckpt.pth', tta=True)
    cfg.default_hooks.pop('visualization')
    with pytest.raises(KeyError, match='--show/--show-dir need'):
        set_test_options(cfg, 'ckpt.pth', show=True)
