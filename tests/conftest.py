"""Shared pytest fixtures: registration and the mmseg default scope."""
import os
import sys

import pytest

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO_ROOT not in sys.path:
    sys.path.insert(0, REPO_ROOT)

import protoprompt_mm  # noqa: E402,F401  (registers every component)


@pytest.fixture(autouse=True)
def mmseg_scope():
    """Every test builds from mmseg's registries, as configs do."""
    from mmengine.registry import init_default_scope
    init_default_scope('mmseg')
    yield
