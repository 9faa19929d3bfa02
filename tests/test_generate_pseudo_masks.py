"""tools/generate_pseudo_masks.py, and stage 1 -> pseudo masks -> stage 2
through the real command-line tools."""
import argparse
import glob
import importlib.util
import json
import os
import os.path as osp
import socket
import subprocess
import sys

import numpy as np
import pytest
import torch
from mmengine.config import Config
from mmengine.registry import init_default_scope
from mmseg.registry import MODELS
from PIL import Image

from protoprompt_mm.datasets import parse_image_labels
from protoprompt_mm.datasets.synthetic_histo import (generate_synthetic_histo,
                                                     save_palette_mask)
from protoprompt_mm.utils import load_config

REPO_ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
STAGE1 = osp.join(REPO_ROOT, 'configs', 'protoprompt',
                  'stage1_protocam_r18_synthetic.py')
STAGE2 = osp.join(REPO_ROOT, 'configs', 'protoprompt',
                  'protoprompt_r18_synthetic.py')
NUM_TRAIN = 8
SIZE = 32
# A small network, so that the tool tests stay fast.
TINY = {
    'model.backbone.stem_channels': 8,
    'model.backbone.base_channels': 8,
    'model.neck.in_channels': [8, 16, 32, 64],
    'model.neck.embed_dim': 16,
}


def load_tool():
    spec = importlib.util.spec_from_file_location(
        'generate_pseudo_masks',
        osp.join(REPO_ROOT, 'tools', 'generate_pseudo_masks.py'))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


tool = load_tool()


@pytest.fixture(scope='module')
def data_root(tmp_path_factory):
    root = str(tmp_path_factory.mktemp('synthetic'))
    generate_synthetic_histo(root, seed=1, num_train=NUM_TRAIN, num_val=2,
                             num_test=2, size=SIZE)
    return root


def options(root):
    """``--cfg-options`` of the tiny model on the data at ``root``."""
    return [f'{key}={value}' for key, value in TINY.items()] + [
        f'train_dataloader.dataset.data_root={root}',
        'test_dataloader.num_workers=0'
    ]


@pytest.fixture(scope='module')
def checkpoint(tmp_path_factory):
    """Weights of the tiny stage-1 model (untrained: any CAMs will do)."""
    init_default_scope('mmseg')  # module fixtures run before conftest's
    torch.manual_seed(0)
    model = MODELS.build(load_config(STAGE1, TINY).model)
    path = str(tmp_path_factory.mktemp('ckpt') / 'stage1.pth')
    torch.save(dict(state_dict=model.state_dict()), path)
    return path


def run_tool(monkeypatch, *argv):
    monkeypatch.setattr(sys, 'argv', ['generate_pseudo_masks.py', *argv])
    tool.main()


def run(*cmd):
    """Run a tool as a user would, from the repository root."""
    env = dict(os.environ, PYTHONPATH=REPO_ROOT)
    proc = subprocess.run([sys.executable, *cmd], cwd=REPO_ROOT, env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, (f'{cmd[0]} failed:\n{proc.stdout[-3000:]}'
                                  f'\n{proc.stderr[-5000:]}')
    return proc.stdout


def test_refuses_a_non_empty_out_dir(monkeypatch, tmp_path, data_root,
                                     checkpoint):
    (tmp_path / 'old.png').write_bytes(b'')
    with pytest.raises(FileExistsError, match='--force'):
        run_tool(monkeypatch, STAGE1, checkpoint, '--out', str(tmp_path),
                 '--cfg-options', *options(data_root))


def test_writes_gated_masks_cams_and_metrics(monkeypatch, capsys, tmp_path,
                                             data_root, checkpoint):
    out = str(tmp_path / 'pseudo')
    run_tool(monkeypatch, STAGE1, checkpoint, '--out', out, '--save-cams',
             '--batch-size', '3', '--scales', '1.0', '0.75',
             '--cfg-options', *options(data_root))
    printed = capsys.readouterr().out
    assert 'pseudo-mask mIoU:' in printed and 'coverage:' in printed

    images = sorted(glob.glob(osp.join(data_root, 'training', '*.png')))
    masks = sorted(glob.glob(osp.join(out, '*.png')))
    assert [osp.basename(m) for m in masks] == [
        osp.basename(i) for i in images
    ]
    for path in masks:
        labels = parse_image_labels(path, 4)
        mask = np.array(Image.open(path))
        assert mask.shape == (SIZE, SIZE) and mask.dtype == np.uint8
        allowed = set(np.flatnonzero(labels).tolist()) | {4, 255}
        assert set(np.unique(mask).tolist()) <= allowed, path
        cams = np.load(path[:-4] + '.npy')
        assert cams.shape == (4, SIZE, SIZE) and cams.dtype == np.float16
        assert np.all(cams[labels == 0] == 0)
        assert cams.min() >= 0 and cams.max() <= 1

    with open(osp.join(out, tool.METRICS_FILE)) as f:
        metrics = json.load(f)
    assert 0 <= metrics['coverage'] <= 1
    assert set(metrics['IoU']) == {'TUM', 'STR', 'LYM', 'NEC'}
    assert metrics['num_images'] == NUM_TRAIN
    assert (metrics['bg_thresh'], metrics['fg_thresh']) == (
        load_config(STAGE1).pseudo_label_cfg.bg_thresh,
        load_config(STAGE1).pseudo_label_cfg.fg_thresh)

    # --force writes into the same folder; CLI thresholds override.
    run_tool(monkeypatch, STAGE1, checkpoint, '--out', out, '--force',
             '--no-flip', '--scales', '1.0', '--bg-thresh', '1.0',
             '--fg-thresh', '1.0', '--cfg-options', *options(data_root))
    for path in masks:  # scores < 1 are background, the peak is a class
        assert set(np.unique(np.array(Image.open(path))).tolist()) <= {
            0, 1, 2, 3, 4
        }


def test_two_ranks_write_the_same_masks_as_one(monkeypatch, tmp_path,
                                              data_root, checkpoint):
    single, ranks = str(tmp_path / 'single'), str(tmp_path / 'ranks')
    common = ['--batch-size', '2', '--scales', '1.0', '--cfg-options',
              *options(data_root)]
    run_tool(monkeypatch, STAGE1, checkpoint, '--out', single, *common)
    with socket.socket() as sock:
        sock.bind(('127.0.0.1', 0))
        port = sock.getsockname()[1]
    run('-m', 'torch.distributed.run', '--nproc_per_node', '2',
        f'--master_port={port}', 'tools/generate_pseudo_masks.py', STAGE1,
        checkpoint, '--out', ranks, '--launcher', 'pytorch', *common)
    assert sorted(os.listdir(single)) == sorted(os.listdir(ranks))
    for path in glob.glob(osp.join(single, '*.png')):
        with open(path, 'rb') as a, \
                open(osp.join(ranks, osp.basename(path)), 'rb') as b:
            assert a.read() == b.read(), path
    with open(osp.join(single, tool.METRICS_FILE)) as a, \
            open(osp.join(ranks, tool.METRICS_FILE)) as b:
        assert json.load(a)['IoU'] == json.load(b)['IoU']


def test_scorer_counts_only_pixels_labelled_with_a_class(tmp_path):
    gt = np.array([[0, 0, 1, 1], [4, 4, 2, 2]], dtype=np.uint8)
    save_palette_mask(str(tmp_path / 'gt.png'), gt)
    pseudo = np.array([[0, 255, 1, 0], [0, 4, 2, 4]], dtype=np.uint8)
    scorer = tool.PseudoMaskScorer(4, background_index=4, ignore_index=255)
    scorer.update(pseudo, str(tmp_path / 'gt.png'))
    metrics = scorer.metrics(['TUM', 'STR', 'LYM', 'NEC'])
    # scored pixels (GT tissue, pseudo class): (0,0) 0/0, (0,2) 1/1,
    # (0,3) GT 1 / pseudo 0, (1,2) 2/2.
    assert metrics['IoU']['TUM'] == pytest.approx(0.5)
    assert metrics['IoU']['STR'] == pytest.approx(0.5)
    assert metrics['IoU']['LYM'] == pytest.approx(1.0)
    assert np.isnan(metrics['IoU']['NEC'])
    assert metrics['mIoU'] == pytest.approx(2 / 3)
    assert metrics['coverage'] == pytest.approx(4 / 6)
    with pytest.raises(FileNotFoundError, match='missing.png'):
        scorer.update(pseudo, str(tmp_path / 'missing.png'))


def test_thresholds_must_be_configured():
    cfg = Config(dict(pseudo_label_cfg=dict(bg_thresh=0.2)))
    args = argparse.Namespace(bg_thresh=None, fg_thresh=None)
    with pytest.raises(KeyError, match='pseudo_label_cfg.fg_thresh'):
        tool.pseudo_label_params(cfg, args, 4)
    args.fg_thresh = 0.6
    assert tool.pseudo_label_params(cfg, args, 4) == dict(
        bg_thresh=0.2, fg_thresh=0.6, ignore_index=255, background_index=4)
    with pytest.raises(KeyError, match='bg_tresh'):
        tool.pseudo_label_params(
            Config(dict(pseudo_label_cfg=dict(bg_tresh=0.1))), args, 4)


def test_end_to_end_stage1_pseudo_masks_stage2(tmp_path):
    root = str(tmp_path / 'data')
    run('tools/make_synthetic_histo.py', '--out', root, '--seed', '0',
        '--num-train', '16', '--num-val', '2', '--num-test', '2', '--size',
        '64')
    loaders = []
    for loader in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        loaders += [
            f'{loader}.dataset.data_root={root}', f'{loader}.num_workers=0',
            f'{loader}.persistent_workers=False'
        ]
    short = [
        'train_cfg.max_iters=4', 'train_cfg.val_interval=4',
        'default_hooks.checkpoint.interval=4',
        'param_scheduler.0.end=2', 'param_scheduler.1.begin=2',
        'train_dataloader.batch_size=4'
    ]
    work1 = str(tmp_path / 'stage1')
    run('tools/train.py', STAGE1, '--work-dir', work1, '--cfg-options',
        *loaders, *short)
    masks = osp.join(root, 'pseudo_masks')
    printed = run('tools/generate_pseudo_masks.py', STAGE1,
                  osp.join(work1, 'iter_4.pth'), '--out', masks,
                  '--batch-size', '8', '--scales', '1.0', '--cfg-options',
                  *loaders)
    assert 'pseudo-mask mIoU:' in printed
    assert len(glob.glob(osp.join(masks, '*.png'))) == 16
    assert osp.isfile(osp.join(masks, tool.METRICS_FILE))

    work2 = str(tmp_path / 'stage2')
    run('tools/train.py', STAGE2, '--work-dir', work2, '--cfg-options',
        *loaders, *short, f'train_dataloader.dataset.pseudo_mask_dir={masks}')
    assert osp.isfile(osp.join(work2, 'iter_4.pth'))
