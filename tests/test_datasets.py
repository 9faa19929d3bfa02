"""Tests of the histology WSSS datasets and the real-data base configs."""
import os
import os.path as osp

import numpy as np
import pytest
from mmengine.config import Config
from mmseg.registry import DATASETS

from protoprompt_mm.datasets import (BCSSWSSSDataset, HistoWSSSDataset,
                                     LUADHistoSegDataset)
from protoprompt_mm.datasets.palette_masks import save_palette_mask
from protoprompt_mm.datasets.synthetic_histo import save_rgb_png

REPO_ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
MASK = np.array([[0, 0, 1, 1], [0, 4, 4, 1], [2, 4, 4, 1], [2, 2, 4, 4]],
                np.uint8)


def write_image(path, seed=0):
    os.makedirs(osp.dirname(path), exist_ok=True)
    rgb = np.random.default_rng(seed).integers(0, 256, (4, 4, 3), np.uint8)
    save_rgb_png(str(path), rgb)


def write_mask(path, mask=MASK):
    os.makedirs(osp.dirname(path), exist_ok=True)
    save_palette_mask(str(path), mask)


def make_layout(root, train_dir='training', val_dir='val', names=None):
    """Tiny BCSS-style folder; returns the training names."""
    names = names or ['a+1[1101].png', 'b+1[0010].png']
    for i, name in enumerate(names):
        write_image(osp.join(root, train_dir, name), i)
    for split, name in ((val_dir, 'v1.png'), (val_dir, 'v2[1110].png'),
                        ('test', 't1.png')):
        write_image(osp.join(root, split, 'img', name))
        write_mask(osp.join(root, split, 'mask', name))
    return names


def build(root, cls=BCSSWSSSDataset, **kwargs):
    return cls(data_root=str(root), **kwargs)


def test_bcss_default_layout(tmp_path):
    make_layout(tmp_path)
    train = build(tmp_path, split='train')
    assert len(train) == 2
    info = train.get_data_info(0)
    assert info['img_path'] == osp.join(
        str(tmp_path), 'training', 'a+1[1101].png')
    assert 'seg_map_path' not in info
    assert info['img_labels'].dtype == np.int64
    assert info['img_labels'].tolist() == [1, 1, 0, 1]
    assert train.get_data_info(1)['img_labels'].tolist() == [0, 0, 1, 0]

    val = build(tmp_path, split='val')
    infos = {
        osp.basename(val.get_data_info(i)['img_path']): val.get_data_info(i)
        for i in range(len(val))
    }
    assert infos['v1.png']['img_labels'] is None
    assert infos['v1.png']['seg_map_path'] == osp.join(
        str(tmp_path), 'val', 'mask', 'v1.png')
    assert infos['v2[1110].png']['img_labels'].tolist() == [1, 1, 1, 0]
    assert len(build(tmp_path, split='test')) == 1


@pytest.mark.parametrize('train_dir', ['train/img', 'train'])
def test_luad_renamed_folders(tmp_path, train_dir):
    make_layout(
        tmp_path,
        train_dir=train_dir,
        val_dir='valid',
        names=['p-[1 0 0 1].png', 'q-[0 1 1 0].png'])
    train = build(tmp_path, LUADHistoSegDataset, split='train')
    assert train.metainfo['classes'] == ('TE', 'NEC', 'LYM', 'TAS')
    assert train.data_prefix['img_path'] == osp.join(str(tmp_path), train_dir)
    assert [train.get_data_info(i)['img_labels'].tolist()
            for i in range(2)] == [[1, 0, 0, 1], [0, 1, 1, 0]]
    val = build(tmp_path, LUADHistoSegDataset, split='val')
    assert osp.join('valid', 'mask') in val.get_data_info(0)['seg_map_path']


def test_explicit_data_prefix(tmp_path):
    make_layout(tmp_path)
    dataset = build(
        tmp_path,
        data_prefix=dict(img_path='val/img', seg_map_path='val/mask'))
    assert len(dataset) == 2
    assert dataset.get_data_info(0)['seg_map_path'].startswith(
        osp.join(str(tmp_path), 'val', 'mask'))


@pytest.mark.parametrize('absolute', [False, True])
def test_pseudo_mask_dir(tmp_path, absolute):
    names = make_layout(tmp_path)
    for name in names:
        write_mask(tmp_path / 'pseudo' / name)
    pseudo_dir = str(tmp_path / 'pseudo') if absolute else 'pseudo'
    dataset = build(
        tmp_path,
        split='train',
        pseudo_mask_dir=pseudo_dir,
        pipeline=[dict(type='LoadHistoAnnotations')])
    info = dataset.get_data_info(0)
    assert info['seg_map_path'] == osp.join(str(tmp_path), 'pseudo', names[0])
    gt = dataset[0]['gt_seg_map']
    assert set(np.unique(gt).tolist()) == {0, 1, 2, 255}
    assert (gt[MASK == 4] == 255).all()
    assert info['img_labels'].tolist() == [1, 1, 0, 1]


def test_pseudo_mask_dir_missing_mask_names_image(tmp_path):
    names = make_layout(tmp_path)
    write_mask(tmp_path / 'pseudo' / names[0])
    with pytest.raises(FileNotFoundError, match='no mask') as err:
        build(tmp_path, split='train', pseudo_mask_dir='pseudo')
    assert names[1] in str(err.value)


def test_pseudo_mask_dir_rejected_for_val(tmp_path):
    with pytest.raises(ValueError, match='training split'):
        build(tmp_path, split='val', pseudo_mask_dir='pseudo')


def test_image_without_mask_names_file(tmp_path):
    make_layout(tmp_path)
    write_image(tmp_path / 'val' / 'img' / 'orphan.png')
    with pytest.raises(FileNotFoundError, match='no mask') as err:
        build(tmp_path, split='val')
    assert 'orphan.png' in str(err.value)


@pytest.mark.parametrize('name, message', [
    ('nolabels.png', 'must carry 4 class flags'),
    ('few[110].png', 'expected 4 class flags'),
    ('bad[1102].png', 'must be 0 or 1'),
])
def test_bad_training_names(tmp_path, name, message):
    make_layout(tmp_path, names=['ok[1000].png', name])
    with pytest.raises(ValueError, match=message) as err:
        build(tmp_path, split='train')
    assert name in str(err.value)


def test_bad_flags_in_val_name(tmp_path):
    make_layout(tmp_path)
    write_image(tmp_path / 'val' / 'img' / 'v3[12].png')
    write_mask(tmp_path / 'val' / 'mask' / 'v3[12].png')
    with pytest.raises(ValueError, match='v3'):
        build(tmp_path, split='val')


def test_empty_and_missing_folders(tmp_path):
    (tmp_path / 'training').mkdir()
    with pytest.raises(ValueError, match='contains no|No') as err:
        build(tmp_path, split='train')
    assert osp.join(str(tmp_path), 'training') in str(err.value)
    with pytest.raises(FileNotFoundError) as err:
        build(tmp_path, split='test')
    assert osp.join(str(tmp_path), 'test', 'img') in str(err.value)


def test_argument_errors(tmp_path):
    with pytest.raises(ValueError, match='split'):
        build(tmp_path, split='training')
    with pytest.raises(ValueError, match='Either'):
        build(tmp_path)
    with pytest.raises(ValueError, match='class subsets'):
        build(tmp_path, split='train', metainfo=dict(classes=('TUM', 'STR')))


def test_lazy_init_and_serialization(tmp_path):
    lazy = build(tmp_path / 'later', split='train', lazy_init=True)
    assert lazy.metainfo['classes'] == ('TUM', 'STR', 'LYM', 'NEC')
    make_layout(tmp_path / 'later')
    lazy.full_init()
    plain = build(tmp_path / 'later', split='train', serialize_data=False)
    for i in range(2):
        assert np.array_equal(
            lazy.get_data_info(i)['img_labels'],
            plain.get_data_info(i)['img_labels'])


def test_base_dataset_with_custom_classes(tmp_path):
    (tmp_path / 'training').mkdir()
    write_image(tmp_path / 'training' / 'x[01].png')
    dataset = HistoWSSSDataset(
        data_root=str(tmp_path),
        split='train',
        metainfo=dict(classes=('A', 'B')))
    assert dataset.get_data_info(0)['img_labels'].tolist() == [0, 1]


@pytest.mark.parametrize('config, dataset_cls, names, first_labels', [
    ('bcss_wsss.py', BCSSWSSSDataset, None, [1, 1, 0, 1]),
    ('luad_histoseg.py', LUADHistoSegDataset,
     ['p-[1 0 0 1].png', 'q-[0 1 1 0].png'], [1, 0, 0, 1]),
])
def test_real_data_configs_build(tmp_path, config, dataset_cls, names,
                                 first_labels):
    names = make_layout(tmp_path, names=names)
    cfg = Config.fromfile(
        osp.join(REPO_ROOT, 'configs', '_base_', 'datasets', config))
    assert cfg.val_evaluator == dict(
        type='TissueIoUMetric',
        iou_metrics=['mIoU', 'mDice', 'FwIoU'],
        extra_protocols=['background_as_error'])
    for key in ('train_dataloader', 'train_dataloader_pseudo',
                'val_dataloader', 'test_dataloader'):
        cfg[key].dataset.data_root = str(tmp_path)
    cfg.train_dataloader_pseudo.dataset.pseudo_mask_dir = 'val/mask'
    for name in names:
        write_mask(tmp_path / 'val' / 'mask' / name)
    train = DATASETS.build(cfg.train_dataloader.dataset)
    assert type(train) is dataset_cls and len(train) == 2
    sample = train[0]['data_samples']
    assert 'gt_sem_seg' not in sample
    assert sample.metainfo['img_labels'].tolist() == first_labels
    pseudo = DATASETS.build(cfg.train_dataloader_pseudo.dataset)
    assert 255 in pseudo[0]['data_samples'].gt_sem_seg.data.unique()
    val = DATASETS.build(cfg.val_dataloader.dataset)
    val_sample = val[0]['data_samples']
    assert val_sample.metainfo['img_labels'].tolist() == [1, 1, 1, 0]
    # Val / test keep GT background (4) for the background_as_error protocol.
    assert set(val_sample.gt_sem_seg.data.unique().tolist()) == {0, 1, 2, 4}
    assert len(DATASETS.build(cfg.test_dataloader.dataset)) == 1
