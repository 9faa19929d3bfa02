"""Tests of the synthetic H&E generator and the synthetic data config."""
import filecmp
import glob
import os
import os.path as osp
import re
import runpy
import sys

import numpy as np
import pytest
from mmengine.config import Config
from mmseg.registry import DATASETS
from PIL import Image

from protoprompt_mm.datasets import (BCSSWSSSDataset, labels_from_mask,
                                     parse_image_labels)
from protoprompt_mm.datasets.synthetic_histo import (MIN_CLASS_FRACTION,
                                                     generate_synthetic_histo,
                                                     slide_stain)

REPO_ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
SMALL = dict(num_train=12, num_val=4, num_test=4, size=64)


def relative_files(root):
    return sorted(
        osp.relpath(path, root)
        for path in glob.glob(osp.join(root, '**', '*.png'), recursive=True))


@pytest.fixture(scope='module')
def generated(tmp_path_factory):
    root = str(tmp_path_factory.mktemp('synthetic'))
    generate_synthetic_histo(root, seed=3, **SMALL)
    return root


def test_layout(generated):
    files = relative_files(generated)
    train = [f for f in files if f.startswith('training' + os.sep)]
    assert len(train) == 12
    assert len([f for f in files if f.startswith('training_gt')]) == 12
    for split in ('val', 'test'):
        for kind in ('img', 'mask'):
            assert len(os.listdir(osp.join(generated, split, kind))) == 4
    for name in train:
        assert re.fullmatch(r'synth_\d{5}\[[01]{4}\]\.png', osp.basename(name))


def test_same_seed_same_bytes_other_seed_differs(generated, tmp_path):
    again = str(tmp_path / 'again')
    generate_synthetic_histo(again, seed=3, workers=2, **SMALL)
    files = relative_files(generated)
    assert files == relative_files(again)
    match, mismatch, errors = filecmp.cmpfiles(
        generated, again, files, shallow=False)
    assert not mismatch and not errors
    other = str(tmp_path / 'other')
    generate_synthetic_histo(other, seed=4, **SMALL)
    val = osp.join('val', 'img', 'val_00000.png')
    assert not filecmp.cmp(
        osp.join(generated, val), osp.join(other, val), shallow=False)


def test_names_match_masks(generated):
    for path in glob.glob(osp.join(generated, 'training', '*.png')):
        gt_path = osp.join(generated, 'training_gt', osp.basename(path))
        mask_image = Image.open(gt_path)
        assert mask_image.mode == 'P'
        mask = np.array(mask_image)
        flags = parse_image_labels(path, 4)
        assert flags.tolist() == labels_from_mask(mask, 4).tolist(), path
        assert 1 <= flags.sum() <= 3
        assert set(np.unique(mask).tolist()) <= {0, 1, 2, 3, 4}
        counts = np.bincount(mask.ravel(), minlength=5)[:4]
        assert (counts[flags == 1] >= MIN_CLASS_FRACTION * mask.size).all()
        rgb = np.array(Image.open(path))
        assert rgb.shape == (64, 64, 3)
        if (mask == 4).any():
            assert rgb[mask == 4].mean() > 215
            assert rgb[mask < 4].mean() < rgb[mask == 4].mean()


def test_refuses_to_mix_with_existing_files(generated):
    with pytest.raises(FileExistsError, match='training'):
        generate_synthetic_histo(generated, seed=3, **SMALL)


def test_cli(tmp_path, monkeypatch, capsys):
    out = str(tmp_path / 'cli')
    monkeypatch.setattr(sys, 'argv', [
        'make_synthetic_histo.py', '--out', out, '--seed', '1', '--num-train',
        '2', '--num-val', '1', '--num-test', '1', '--size', '48'
    ])
    runpy.run_path(
        osp.join(REPO_ROOT, 'tools', 'make_synthetic_histo.py'),
        run_name='__main__')
    assert "'train': 2" in capsys.readouterr().out
    assert len(relative_files(out)) == 2 + 2 + 2 + 2


def test_synthetic_config_builds(generated):
    cfg = Config.fromfile(
        osp.join(REPO_ROOT, 'configs', '_base_', 'datasets',
                 'synthetic_histo.py'))
    assert cfg.train_dataloader.batch_size == 8
    assert cfg.train_dataloader.persistent_workers is True
    assert cfg.train_dataloader.dataset.data_root == 'data/synthetic_histo'
    for key in ('train_dataloader', 'train_dataloader_pseudo',
                'val_dataloader', 'test_dataloader'):
        cfg[key].dataset.data_root = generated
    # Hidden GT stands in for pseudo masks (same names, same scheme).
    cfg.train_dataloader_pseudo.dataset.pseudo_mask_dir = 'training_gt'
    train = DATASETS.build(cfg.train_dataloader.dataset)
    assert isinstance(train, BCSSWSSSDataset) and len(train) == 12
    packed = train[0]
    assert packed['inputs'].shape == (3, 64, 64)
    assert packed['data_samples'].metainfo['img_labels'].tolist() == (
        parse_image_labels(packed['data_samples'].img_path, 4).tolist())
    pseudo = DATASETS.build(cfg.train_dataloader_pseudo.dataset)
    sample = pseudo[0]['data_samples']
    assert set(sample.gt_sem_seg.data.unique().tolist()) <= {0, 1, 2, 3, 255}
    for key in ('val_dataloader', 'test_dataloader'):
        dataset = DATASETS.build(cfg[key].dataset)
        assert len(dataset) == 4
        sample = dataset[0]['data_samples']
        seg = sample.gt_sem_seg.data
        assert sample.metainfo['img_labels'].tolist() == labels_from_mask(
            seg.numpy(), 4).tolist()


def test_hard_difficulty_is_reproducible_and_consistent(tmp_path):
    first, again = str(tmp_path / 'a'), str(tmp_path / 'b')
    generate_synthetic_histo(first, seed=3, difficulty='hard', **SMALL)
    generate_synthetic_histo(again, seed=3, difficulty='hard', workers=2,
                             **SMALL)
    files = relative_files(first)
    assert files == relative_files(again)
    assert all(filecmp.cmp(osp.join(first, f), osp.join(again, f),
                           shallow=False) for f in files)
    standard = str(tmp_path / 'standard')
    generate_synthetic_histo(standard, seed=3, **SMALL)
    assert not filecmp.cmp(osp.join(first, files[0]),
                           osp.join(standard, files[0]), shallow=False)
    for path in glob.glob(osp.join(first, 'training', '*.png')):
        mask = np.array(Image.open(path.replace('training', 'training_gt')))
        flags = parse_image_labels(osp.basename(path), 4)
        assert (labels_from_mask(mask, 4) == flags).all()
    with pytest.raises(ValueError, match='difficulty'):
        generate_synthetic_histo(str(tmp_path / 'c'), seed=3,
                                 difficulty='extreme', **SMALL)


def test_slides_have_their_own_stain():
    same = slide_stain(0, 0, 1)
    assert np.array_equal(same['vectors'], slide_stain(0, 0, 1)['vectors'])
    assert not np.allclose(same['vectors'], slide_stain(0, 0, 2)['vectors'])
    # Val / test slides are not training slides.
    assert not np.allclose(same['vectors'], slide_stain(0, 1, 1)['vectors'])
    assert np.allclose(np.linalg.norm(same['vectors'], axis=1), 1.0)
