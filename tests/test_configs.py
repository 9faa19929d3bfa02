"""Every config under configs/ loads, and every model in them builds."""
import glob
import os

import pytest
import torch
from mmseg.registry import MODELS

from protoprompt_mm.utils import load_config

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIGS = sorted(
    os.path.relpath(path, REPO_ROOT) for path in glob.glob(
        os.path.join(REPO_ROOT, 'configs', '**', '*.py'), recursive=True))


def test_configs_found():
    assert any('protoprompt_r18' in path for path in CONFIGS)


@pytest.mark.parametrize('path', CONFIGS)
def test_config_loads_and_model_builds(path):
    cfg = load_config(os.path.join(REPO_ROOT, path))
    runnable = not path.startswith(os.path.join('configs', '_base_'))
    if runnable:
        assert cfg.default_scope == 'mmseg'
        assert 'protoprompt_mm' in cfg.custom_imports['imports']
        assert cfg.custom_imports['allow_failed_imports'] is False
    if 'model' not in cfg:
        return
    if not runnable and 'type' not in cfg.model:
        # A fragment (e.g. resnet18_v1c.py) that the model bases complete;
        # they are built below as configs of their own.
        assert 'backbone' in cfg.model, path
        return
    model = MODELS.build(cfg.model).eval()
    with torch.no_grad():
        out = model(torch.randn(1, 3, 64, 64), mode='tensor')
    num_classes = cfg.model.decode_head.num_classes
    assert out.shape[:2] == (1, num_classes), path
