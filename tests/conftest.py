"""Shared pytest fixtures: registration and the mmseg default scope."""
import os
import sys

import pytest

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO_ROOT not in sys.path:
    sys.path.insert(0, REPO_ROOT)

# `make test` runs pytest-xdist workers, one per core: one torch thread
# each (and in the tools they start), or the threads fight for the cores.
if os.environ.get('PYTEST_XDIST_WORKER'):
    os.environ['OMP_NUM_THREADS'] = '1'

import protoprompt_mm  # noqa: E402,F401  (registers every component)
import torch  # noqa: E402

if os.environ.get('PYTEST_XDIST_WORKER'):
    torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def mmseg_scope():
    """Every test builds from mmseg's registries, as configs do."""
    from mmengine.registry import init_default_scope
    init_default_scope('mmseg')
    yield


@pytest.fixture(scope='session')
def trained(tmp_path_factory):
    """tools/train.py (2 iterations) on the manifest example config and the
    tiny patches of ``test_manifest_training.make_patches``; shared by the
    manifest tests."""
    from test_manifest_training import (CONFIG, make_patches, options,
                                        output, run_tool)
    root = tmp_path_factory.mktemp('manifest')
    data_root, work_dir = str(root / 'data'), str(root / 'work')
    make_patches(data_root)
    proc = run_tool('train.py', CONFIG, '--work-dir', work_dir,
                    *options(data_root))
    assert proc.returncode == 0, output(proc)[-6000:]
    with open(os.path.join(work_dir, 'last_checkpoint')) as f:
        checkpoint = f.read().strip()
    return dict(data_root=data_root, work_dir=work_dir, log=output(proc),
                checkpoint=checkpoint)
