"""Pseudo masks of a manifest dataset: stage 1 on the manifest example config
(tools/train.py), tools/generate_pseudo_masks.py on its training split, read
back by the manifest base's train_dataloader_pseudo; val scored against the
masks of its seg_map_pattern."""
import glob
import json
import os.path as osp

import numpy as np
import pytest
from mmengine.config import Config
from mmseg.registry import DATASETS
from PIL import Image

from protoprompt_mm.apis import (METRICS_FILE, build_label_dataset,
                                 generate_pseudo_masks)
from protoprompt_mm.datasets.transforms import LoadHistoAnnotations
from protoprompt_mm.utils import load_config
from test_manifest_training import (CLASSES, CONFIG, LOADERS, SIZE, options,
                                    output, run_tool)

MANIFEST_BASE = osp.join(
    osp.dirname(osp.dirname(CONFIG)), '_base_', 'datasets', 'manifest.py')
NUM_TRAIN = 12  # make_patches


@pytest.fixture(scope='module')
def stage1(trained):
    """2 iterations of stage 1 (``trained``) and the pseudo masks of its
    training split, written where the manifest base's
    train_dataloader_pseudo reads them."""
    data_root, checkpoint = trained['data_root'], trained['checkpoint']
    out = osp.join(data_root, 'pseudo_masks')
    proc = run_tool('generate_pseudo_masks.py', CONFIG, checkpoint, '--out',
                    out, '--batch-size', '4', '--scales', '1.0',
                    *options(data_root))
    assert proc.returncode == 0, output(proc)[-6000:]
    return dict(data_root=data_root, checkpoint=checkpoint, out=out,
                printed=proc.stdout)


def manifest_cfg(data_root):
    """The example config on ``data_root`` with in-process loaders."""
    return load_config(CONFIG, {
        **{f'{loader}.dataset.data_root': data_root for loader in LOADERS},
        'test_dataloader.dataset.ann_file': 'test.json',
        'test_dataloader.num_workers': 0
    })


def test_train_split_is_named_by_the_manifest_paths(stage1):
    assert (f'Wrote {NUM_TRAIN} pseudo masks of train' in stage1['printed'])
    assert 'image labels (file names or manifest)' in stage1['printed']
    assert 'No ground truth to score them' in stage1['printed']
    written = sorted(
        osp.relpath(path, stage1['out'])
        for path in glob.glob(osp.join(stage1['out'], '**', '*.png'),
                              recursive=True))
    assert written == [f'patches/p{i:02d}.png' for i in range(NUM_TRAIN)]


def test_pseudo_loader_reads_every_mask(stage1, tmp_path):
    """A stage-2 config on the manifest base: every sample of its
    train_dataloader_pseudo has a pseudo mask, gated by the image's labels
    from the manifest."""
    stage2 = tmp_path / 'stage2_data.py'
    stage2.write_text(
        f'_base_ = [{MANIFEST_BASE!r}]\n'
        f'patches = dict(data_root={stage1["data_root"]!r}, '
        f'metainfo=dict(classes={CLASSES!r}))\n'
        'train_dataloader = dict(_base_.train_dataloader_pseudo, '
        'dataset=dict(_base_.train_dataloader_pseudo.dataset, **patches))\n')
    dataset = DATASETS.build(Config.fromfile(str(stage2)).train_dataloader
                             .dataset)
    assert len(dataset) == NUM_TRAIN
    loader = LoadHistoAnnotations(num_classes=len(CLASSES))
    for i in range(len(dataset)):
        info = dataset.get_data_info(i)
        assert info['seg_map_path'] == osp.join(
            stage1['out'], osp.relpath(info['img_path'],
                                       stage1['data_root']))
        raw = np.array(Image.open(info['seg_map_path']))
        assert raw.shape == (SIZE, SIZE) and raw.dtype == np.uint8
        allowed = set(np.flatnonzero(info['img_labels']).tolist()) | {255}
        assert set(np.unique(raw).tolist()) <= allowed, info['seg_map_path']
        assert loader(dict(info))['gt_seg_map'].shape == (SIZE, SIZE)
    sample = dataset[0]  # through the stage-2 training pipeline
    assert sample['data_samples'].gt_sem_seg.data.shape[-2:] == (SIZE, SIZE)


def test_val_split_is_scored_against_its_pattern_masks(stage1, tmp_path):
    cfg = manifest_cfg(stage1['data_root'])
    val = build_label_dataset(cfg, 'val')
    assert len(val) == 2 and 'gt_sem_seg' in val[0]['data_samples']
    assert 'gt_sem_seg' not in build_label_dataset(cfg,
                                                   'train')[0]['data_samples']
    assert len(build_label_dataset(cfg, 'test')) == 2
    out = str(tmp_path / 'val')
    record = generate_pseudo_masks(cfg, stage1['checkpoint'], out,
                                   split='val', scales=(1.0, ), flip=False)
    assert record['num_images'] == 2 and record['gating'] == 'predicted'
    assert record['gt_dir'] == osp.join(stage1['data_root'], 'masks')
    assert 0 <= record['mIoU'] <= 1 and 0 <= record['coverage'] <= 1
    with open(osp.join(out, METRICS_FILE)) as f:
        assert json.load(f)['mIoU'] == pytest.approx(record['mIoU'],
                                                     nan_ok=True)
    assert sorted(glob.glob(osp.join(out, 'patches', '*.png'))) == [
        osp.join(out, 'patches', f'val{i}.png') for i in range(2)
    ]


def test_a_split_without_its_dataloader_is_an_error(stage1):
    cfg = manifest_cfg(stage1['data_root'])
    cfg.val_dataloader = None
    with pytest.raises(KeyError, match='labels the dataset of '
                       'val_dataloader, which the config does not have'):
        build_label_dataset(cfg, 'val')
