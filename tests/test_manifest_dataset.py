"""HistoManifestDataset: users' own patches, labels from a CSV / JSON file."""
import json
import os
import os.path as osp

import numpy as np
import pytest
from mmengine.config import Config
from mmseg.registry import DATASETS

from protoprompt_mm.datasets import HistoManifestDataset, read_label_manifest
from protoprompt_mm.datasets.palette_masks import save_palette_mask
from protoprompt_mm.datasets.synthetic_histo import save_rgb_png

REPO_ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
CLASSES = ('tumour', 'stroma', 'necrosis')


def write_image(path, size=(4, 4)):
    os.makedirs(osp.dirname(path), exist_ok=True)
    save_rgb_png(str(path), np.full((*size, 3), 128, np.uint8))


def write_mask(path, mask):
    os.makedirs(osp.dirname(path), exist_ok=True)
    save_palette_mask(str(path), np.asarray(mask, np.uint8))


def write(path, text):
    path.write_text(text)
    return str(path)


def build(root, ann_file, **kwargs):
    return HistoManifestDataset(
        data_root=str(root),
        ann_file=ann_file,
        metainfo=dict(classes=CLASSES),
        **kwargs)


@pytest.fixture
def patches(tmp_path):
    for name in ('a.png', 'b.png', 'c.png'):
        write_image(tmp_path / 'img' / name)
    return tmp_path


def labels(dataset):
    return [None if dataset.get_data_info(i)['img_labels'] is None else
            dataset.get_data_info(i)['img_labels'].tolist()
            for i in range(len(dataset))]


@pytest.mark.parametrize('text', [
    'image,labels\nimg/a.png,tumour;necrosis\nimg/b.png, stroma \n',
    'image,tumour,stroma,necrosis\nimg/a.png,1,0,1\nimg/b.png,0,1,0\n',
    'slide,image,labels\ns1,img/a.png,necrosis;tumour\ns2,img/b.png,stroma\n',
])
def test_csv_names_and_flags(patches, text):
    dataset = build(patches, write(patches / 'train.csv', text))
    assert labels(dataset) == [[1, 0, 1], [0, 1, 0]]
    info = dataset.get_data_info(0)
    assert info['img_path'] == osp.join(str(patches), 'img', 'a.png')
    assert info['img_labels'].dtype == np.int64
    assert 'seg_map_path' not in info
    assert dataset.metainfo['classes'] == CLASSES


def test_json_names_and_flags(patches):
    entries = [dict(image='img/a.png', labels=['stroma']),
               dict(image='img/b.png', labels=[1, 0, 1])]
    path = write(patches / 'train.json', json.dumps(entries))
    assert labels(build(patches, path)) == [[0, 1, 0], [1, 0, 1]]


def test_masks_by_pattern_give_labels_to_unlabelled_rows(patches):
    write_mask(patches / 'masks' / 'a_mask.png',
               [[0, 3, 3, 3], [255, 2, 2, 2]] * 2)
    write_mask(patches / 'masks' / 'b_mask.png', [[1] * 4] * 4)
    path = write(patches / 'val.csv', 'image,labels\nimg/a.png,\n'
                 'img/b.png,stroma\n')
    dataset = build(
        patches,
        path,
        seg_map_pattern='masks/{stem}_mask.png',
        pipeline=[
            dict(type='LoadHistoAnnotations'),
            dict(type='LoadImageLevelLabels')
        ])
    assert dataset.get_data_info(0)['seg_map_path'] == osp.join(
        str(patches), 'masks', 'a_mask.png')
    assert labels(dataset) == [None, [0, 1, 0]]
    # Background is index 3 = number of classes, the pipeline's transforms
    # got the dataset's class count and background index.
    sample = dataset[0]
    assert sample['img_labels'].tolist() == [1, 0, 1]
    assert sample['gt_seg_map'][0].tolist() == [0, 255, 255, 255]


def test_every_bad_row_is_named(patches):
    path = write(patches / 'train.csv', 'image,labels\n'
                 'img/a.png,tumour\n'
                 'img/b.png,tumor\n'       # row 3: unknown class
                 ',stroma\n')              # row 4: no image
    with pytest.raises(ValueError, match='2 bad row') as err:
        build(patches, path)
    assert (f"{path}, row 3: unknown class name(s) ['tumor']; the classes "
            f"are ['tumour', 'stroma', 'necrosis']") in str(err.value)
    assert f'{path}, row 4: empty image path' in str(err.value)

    path = write(patches / 'train.csv', 'image,labels\n'
                 'img/a.png,tumour\n'
                 './img/a.png,stroma\n'    # row 3: duplicate of row 2
                 'img/missing.png,stroma\n'  # row 4: no such file
                 'img/c.png,\n')           # row 5: no labels, no masks
    with pytest.raises(ValueError, match='3 bad row') as err:
        build(patches, path)
    message = str(err.value)
    assert (f"{path}, row 3: duplicate image './img/a.png' (listed before in "
            f'{path}, row 2)') in message
    missing = osp.join(str(patches), 'img', 'missing.png')
    assert f'{path}, row 4: image {missing} does not exist' in message
    assert f"{path}, row 5: 'img/c.png' has no labels" in message


def test_missing_mask_is_named(patches):
    write_mask(patches / 'masks' / 'a.png', [[0] * 4] * 4)
    path = write(patches / 'val.csv', 'image,labels\nimg/a.png,\n'
                 'img/b.png,\n')
    with pytest.raises(ValueError) as err:
        build(patches, path, seg_map_pattern='masks/{stem}.png')
    mask = osp.join(str(patches), 'masks', 'b.png')
    assert f"{path}, row 3: mask {mask} of 'img/b.png'" in str(err.value)


@pytest.mark.parametrize('text, message', [
    ('path,labels\na.png,tumour\n', "needs an 'image' column"),
    ('image,tumour,stroma\nimg/a.png,1,0\n', "missing class column(s) "
     "['necrosis']"),
    ('image,tumour,stroma,necrosis,tumor\nimg/a.png,1,0,0,1\n',
     "unknown class name(s) ['tumor']"),
])
def test_bad_csv_header_names_row_1(patches, text, message):
    path = write(patches / 'train.csv', text)
    with pytest.raises(ValueError, match='row 1') as err:
        build(patches, path)
    assert message in str(err.value)


@pytest.mark.parametrize('entry, message', [
    (dict(image='img/a.png', labels=[1, 0]), 'expected 3 class flags'),
    (dict(image='img/a.png', labels=[1, 2, 0]), 'must be 0 or 1'),
    (dict(image='img/a.png', labels='tumour'), 'must be a list'),
    (dict(labels=['tumour']), "string 'image'"),
])
def test_bad_json_entry_is_named(patches, entry, message):
    entries = [dict(image='img/b.png', labels=['stroma']), entry]
    path = write(patches / 'train.json', json.dumps(entries))
    with pytest.raises(ValueError, match='entry 2: ') as err:
        build(patches, path)
    assert message in str(err.value)


def test_csv_flag_errors_and_extra_cells(tmp_path):
    path = write(tmp_path / 'm.csv', 'image,tumour,stroma,necrosis\n'
                 'a.png,1,x,0\nb.png,1,0,0,1\n')
    with pytest.raises(ValueError) as err:
        read_label_manifest(path, CLASSES)
    assert f"{path}, row 2: class flags must be 0 or 1, got ['x']" in str(
        err.value)
    assert f'{path}, row 3: more cells than header columns' in str(err.value)


def test_manifest_format_errors(tmp_path):
    with pytest.raises(ValueError, match='.csv or .json'):
        read_label_manifest(write(tmp_path / 'm.txt', 'a.png'), CLASSES)
    with pytest.raises(ValueError, match='not valid JSON'):
        read_label_manifest(write(tmp_path / 'm.json', '[{'), CLASSES)
    with pytest.raises(ValueError, match='lists no image'):
        read_label_manifest(write(tmp_path / 'e.csv', 'image,labels\n'),
                            CLASSES)
    with pytest.raises(ValueError, match='JSON list'):
        read_label_manifest(write(tmp_path / 'd.json', '{}'), CLASSES)


def test_argument_errors(patches):
    path = write(patches / 'train.csv', 'image,labels\nimg/a.png,tumour\n')
    with pytest.raises(ValueError, match='needs metainfo classes'):
        HistoManifestDataset(ann_file=path)
    with pytest.raises(ValueError, match='needs ann_file'):
        build(patches, '')
    with pytest.raises(ValueError, match='{stem}, {name}, {path}'):
        build(patches, path, seg_map_pattern='masks/{image}.png')
    with pytest.raises(ValueError, match='background_index must be in'):
        build(patches, path, background_index=1)
    with pytest.raises(ValueError, match='num_classes=4, but the dataset '
                       'has num_classes=3'):
        build(patches, path, pipeline=[
            dict(type='LoadImageLevelLabels', num_classes=4)])


def test_lazy_init_reads_nothing(tmp_path):
    lazy = build(tmp_path, 'later.csv', lazy_init=True)
    write_image(tmp_path / 'img' / 'a.png')
    write(tmp_path / 'later.csv', 'image,labels\nimg/a.png,tumour\n')
    lazy.full_init()
    assert labels(lazy) == [[1, 0, 0]]


def test_manifest_base_config_builds(patches):
    cfg = Config.fromfile(
        osp.join(REPO_ROOT, 'configs', '_base_', 'datasets', 'manifest.py'))
    write(patches / 'train.csv', 'image,labels\nimg/a.png,tumour\n')
    write(patches / 'val.csv', 'image,labels\nimg/b.png,\n')
    write_mask(patches / 'masks' / 'b.png', [[0, 1, 2, 3]] * 4)
    for key in ('train_dataloader', 'val_dataloader'):
        cfg[key].dataset.update(
            data_root=str(patches), metainfo=dict(classes=CLASSES))
    cfg.val_dataloader.dataset.update(
        ann_file='val.csv', seg_map_pattern='masks/{stem}.png')
    train = DATASETS.build(cfg.train_dataloader.dataset)
    assert train[0]['data_samples'].metainfo['img_labels'].tolist() == [
        1, 0, 0
    ]
    val = DATASETS.build(cfg.val_dataloader.dataset)
    sample = val[0]['data_samples']
    assert sample.metainfo['img_labels'].tolist() == [1, 1, 1]
    # Validation keeps the background (index 3, the number of classes).
    assert set(sample.gt_sem_seg.data.unique().tolist()) == {0, 1, 2, 3}
