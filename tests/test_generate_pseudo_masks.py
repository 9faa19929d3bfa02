"""protoprompt_mm.apis.pseudo_masks and sample_panels (what
tools/generate_pseudo_masks.py and tools/visualize.py run). Stage 1 ->
pseudo masks -> stage 2 through the command-line tools is the README's
"Running mmseg's way" (tests/test_readme_commands.py)."""
import glob
import json
import os
import os.path as osp
import socket
import subprocess
import sys

import numpy as np
import pytest
import torch
from mmcv.transforms import Compose
from mmengine.config import Config
from mmengine.registry import init_default_scope
from mmseg.registry import MODELS
from PIL import Image

from protoprompt_mm.apis import (METRICS_FILE, PseudoMaskScorer,
                                 build_label_dataset, draw_sample_panels,
                                 generate_pseudo_masks, pseudo_label_params,
                                 pseudo_mask_report)
from protoprompt_mm.datasets import parse_image_labels
from protoprompt_mm.datasets.palette_masks import save_palette_mask
from protoprompt_mm.datasets.synthetic_histo import generate_synthetic_histo
from protoprompt_mm.utils import load_config

REPO_ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
STAGE1 = osp.join(REPO_ROOT, 'configs', 'protoprompt',
                  'stage1_cam_r18_synthetic.py')
STAGE2_DATA = osp.join(REPO_ROOT, 'configs', '_base_', 'datasets',
                       'bcss_wsss.py')
NUM_TRAIN = 8
SIZE = 32
# A small network, so that the tool tests stay fast.
TINY = {
    'model.backbone.stem_channels': 8,
    'model.backbone.base_channels': 8,
    'model.decode_head.in_channels': [32, 64],
}


@pytest.fixture(scope='module')
def data_root(tmp_path_factory):
    root = str(tmp_path_factory.mktemp('synthetic'))
    generate_synthetic_histo(root, seed=1, num_train=NUM_TRAIN, num_val=3,
                             num_test=2, size=SIZE)
    return root


def data_options(root):
    """Config overrides of the tiny model on the data at ``root``."""
    return {
        **TINY, 'train_dataloader.dataset.data_root': root,
        'test_dataloader.dataset.data_root': root,
        'test_dataloader.num_workers': 0
    }


def options(root):
    """The same as ``--cfg-options`` arguments."""
    return [
        f'{key}={value}'.replace(' ', '')
        for key, value in data_options(root).items()
    ]


def tiny_cfg(root, **extra):
    return load_config(STAGE1, {**data_options(root), **extra})


@pytest.fixture(scope='module')
def checkpoint(tmp_path_factory):
    """Weights of the tiny stage-1 model (untrained: any CAMs will do)."""
    init_default_scope('mmseg')  # module fixtures run before conftest's
    torch.manual_seed(0)
    model = MODELS.build(load_config(STAGE1, TINY).model)
    path = str(tmp_path_factory.mktemp('ckpt') / 'stage1.pth')
    torch.save(dict(state_dict=model.state_dict()), path)
    return path


def run(*cmd):
    """Run a tool as a user would, from the repository root."""
    env = dict(os.environ, PYTHONPATH=REPO_ROOT)
    proc = subprocess.run([sys.executable, *cmd], cwd=REPO_ROOT, env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, (f'{cmd[0]} failed:\n{proc.stdout[-3000:]}'
                                  f'\n{proc.stderr[-5000:]}')
    return proc.stdout


def read_metrics(out):
    with open(osp.join(out, METRICS_FILE)) as f:
        return json.load(f)


def gt_labels(mask_path):
    """Classes present in a ground-truth mask (4 = background)."""
    return set(np.unique(np.array(Image.open(mask_path))).tolist()) - {4}


def test_refuses_a_non_empty_out_dir(tmp_path, data_root, checkpoint):
    (tmp_path / 'old.png').write_bytes(b'')
    with pytest.raises(FileExistsError, match='--force'):
        generate_pseudo_masks(tiny_cfg(data_root), checkpoint, str(tmp_path))


def test_writes_gated_masks_cams_and_metrics(tmp_path, data_root,
                                             checkpoint):
    out = str(tmp_path / 'pseudo')
    record = generate_pseudo_masks(tiny_cfg(data_root), checkpoint, out,
                                   save_cams=True, batch_size=3,
                                   scales=[1.0, 0.75])
    report = pseudo_mask_report(record, out)
    assert f'Wrote {NUM_TRAIN} pseudo masks of train to {out}' in report
    assert 'pseudo-mask mIoU:' in report and 'coverage:' in report
    assert 'precision mIoU:' in report and 'oracle' not in report.lower()

    images = sorted(glob.glob(osp.join(data_root, 'training', '*.png')))
    masks = sorted(glob.glob(osp.join(out, '*.png')))
    assert [osp.basename(m) for m in masks] == [
        osp.basename(i) for i in images
    ]
    for path in masks:
        labels = parse_image_labels(path, 4)
        mask = np.array(Image.open(path))
        assert mask.shape == (SIZE, SIZE) and mask.dtype == np.uint8
        allowed = set(np.flatnonzero(labels).tolist()) | {255}
        assert set(np.unique(mask).tolist()) <= allowed, path
        cams = np.load(path[:-4] + '.npy')
        assert cams.shape == (4, SIZE, SIZE) and cams.dtype == np.float16
        assert np.all(cams[labels == 0] == 0)
        assert cams.min() >= 0 and cams.max() <= 1

    metrics = read_metrics(out)
    assert metrics['gating'] == 'image_labels' and 'cls_thresh' not in metrics
    for key in ('mIoU', 'precision_mIoU', 'coverage'):
        assert 0 <= metrics[key] <= 1, key
    for key in ('IoU', 'precision_IoU'):
        assert set(metrics[key]) == {'TUM', 'STR', 'LYM', 'NEC'}, key
    assert metrics['num_images'] == NUM_TRAIN
    assert 'bg_thresh' not in metrics
    assert (metrics['fg_thresh'], metrics['thresh_mode']) == (
        load_config(STAGE1).pseudo_label_cfg.fg_thresh, 'fixed')

    # force writes into the same folder; the given thresholds override the
    # config's. Alpha 1 of the adaptive mode keeps each kept class's peak
    # pixels only.
    generate_pseudo_masks(tiny_cfg(data_root), checkpoint, out, force=True,
                          flip=False, scales=[1.0], fg_thresh=1.0,
                          thresh_mode='adaptive')
    metrics = read_metrics(out)
    assert (metrics['fg_thresh'], metrics['thresh_mode']) == (1.0, 'adaptive')
    for path in masks:
        mask = np.array(Image.open(path))
        labelled = np.count_nonzero(mask != 255)
        assert 1 <= labelled < mask.size // 4, path


def test_two_ranks_write_the_same_masks_as_one(tmp_path, data_root,
                                              checkpoint):
    single, ranks = str(tmp_path / 'single'), str(tmp_path / 'ranks')
    generate_pseudo_masks(tiny_cfg(data_root), checkpoint, single,
                          batch_size=2, scales=[1.0])
    with socket.socket() as sock:
        sock.bind(('127.0.0.1', 0))
        port = sock.getsockname()[1]
    run('-m', 'torch.distributed.run', '--nproc_per_node', '2',
        f'--master_port={port}', 'tools/generate_pseudo_masks.py', STAGE1,
        checkpoint, '--out', ranks, '--launcher', 'pytorch', '--batch-size',
        '2', '--scales', '1.0', '--cfg-options', *options(data_root))
    assert sorted(os.listdir(single)) == sorted(os.listdir(ranks))
    for path in glob.glob(osp.join(single, '*.png')):
        with open(path, 'rb') as a, \
                open(osp.join(ranks, osp.basename(path)), 'rb') as b:
            assert a.read() == b.read(), path
    assert read_metrics(single)['IoU'] == read_metrics(ranks)['IoU']


def test_val_is_gated_by_predicted_labels_unless_oracle(
        tmp_path, data_root, checkpoint):
    # cls_thresh 1: no probability exceeds it, so only the top class of
    # each image is predicted present.
    cfg = tiny_cfg(data_root, **{'model.test_cfg.cls_thresh': 1.0})
    predicted, oracle = str(tmp_path / 'predicted'), str(tmp_path / 'oracle')
    record = generate_pseudo_masks(cfg, checkpoint, predicted, split='val',
                                   scales=[1.0], save_cams=True)
    assert record['gating'] == 'predicted' and record['cls_thresh'] == 1.0
    assert json.dumps(read_metrics(predicted)) == json.dumps(record)
    masks = sorted(glob.glob(osp.join(data_root, 'val', 'mask', '*.png')))
    assert len(masks) == 3
    dropped = 0
    for mask in masks:
        name = osp.basename(mask)[:-4]
        kept = np.flatnonzero(
            np.load(osp.join(predicted, name + '.npy')).max(axis=(1, 2)))
        assert len(kept) == 1, name
        # Classes of the mask the model predicts absent get no pixel.
        dropped += len(gt_labels(mask) - set(kept.tolist()))
        pseudo = np.array(Image.open(osp.join(predicted, name + '.png')))
        assert set(np.unique(pseudo).tolist()) <= {kept[0], 255}
    assert dropped > 0

    assert 'oracle' not in pseudo_mask_report(record, predicted).lower()
    record = generate_pseudo_masks(cfg, checkpoint, oracle, split='val',
                                   oracle_labels=True, scales=[1.0],
                                   save_cams=True)
    report = pseudo_mask_report(record, oracle)
    assert 'pseudo-mask mIoU [ORACLE labels]:' in report
    assert 'ORACLE: gated by the labels of the ground-truth masks' in report
    metrics = read_metrics(oracle)
    assert metrics['gating'] == 'oracle' and 'cls_thresh' not in metrics
    for mask in masks:
        cams = np.load(osp.join(oracle, osp.basename(mask)[:-4] + '.npy'))
        assert set(np.flatnonzero(cams.max(axis=(1, 2))).tolist()) == \
            gt_labels(mask)

    with pytest.raises(ValueError, match='val / test only'):
        generate_pseudo_masks(cfg, checkpoint, str(tmp_path / 'train'),
                              oracle_labels=True)


def test_visualize_gates_by_predicted_labels_unless_oracle(
        tmp_path, data_root, checkpoint):
    cfg = tiny_cfg(data_root)
    assert draw_sample_panels(cfg, checkpoint, str(tmp_path / 'pred'),
                              num=1) == 1
    assert draw_sample_panels(cfg, checkpoint, str(tmp_path / 'oracle'),
                              num=1, oracle_labels=True) == 1
    name = osp.basename(
        sorted(glob.glob(osp.join(data_root, 'test', 'img', '*.png')))[0])[:-4]
    assert sorted(os.listdir(tmp_path / 'pred')) == [
        f'{name}_panel.png', f'{name}_seg.png'
    ]
    assert sorted(os.listdir(tmp_path / 'oracle')) == [
        f'{name}_oracle_panel.png', f'{name}_oracle_seg.png'
    ]


def test_fg_thresh_changes_what_stage_2_trains_on(tmp_path, data_root,
                                                  checkpoint):
    """Masks of two thresholds through the stage-2 training pipeline: the
    higher threshold leaves more pixels unsure (255), which the loss
    ignores."""
    pipeline = Compose(load_config(STAGE2_DATA).train_pipeline_pseudo)
    images = sorted(glob.glob(osp.join(data_root, 'training', '*.png')))
    trained = {}
    for fg_thresh in (0.2, 0.6):
        out = str(tmp_path / str(fg_thresh))
        generate_pseudo_masks(tiny_cfg(data_root), checkpoint, out,
                              scales=[1.0], fg_thresh=fg_thresh)
        counts = []
        for image in images:
            packed = pipeline(
                dict(img_path=image,
                     seg_map_path=osp.join(out, osp.basename(image)),
                     img_labels=None, seg_fields=[],
                     reduce_zero_label=False))
            seg = packed['data_samples'].gt_sem_seg.data
            counts.append(np.bincount(seg.flatten().numpy(), minlength=256))
        trained[fg_thresh] = np.stack(counts)  # (images, 256) per value
    low, high = trained[0.2], trained[0.6]
    # Per class: the pixels at 0.6 are a subset of those at 0.2.
    assert (high[:, :4] <= low[:, :4]).all()
    assert high[:, :4].sum() < low[:, :4].sum()
    assert high[:, 255].sum() > low[:, 255].sum()


def test_scorer_counts_unlabelled_tissue_as_misses(tmp_path):
    gt = np.array([[0, 0, 1, 1], [4, 4, 2, 2]], dtype=np.uint8)
    save_palette_mask(str(tmp_path / 'gt.png'), gt)
    pseudo = np.array([[0, 255, 1, 0], [0, 255, 2, 255]], dtype=np.uint8)
    scorer = PseudoMaskScorer(4, background_index=4, ignore_index=255)
    scorer.update(pseudo, str(tmp_path / 'gt.png'))
    metrics = scorer.metrics(['TUM', 'STR', 'LYM', 'NEC'])
    # GT tissue: (0,0) 0 -> 0, (0,1) 0 -> miss, (0,2) 1 -> 1, (0,3) 1 -> 0,
    # (1,2) 2 -> 2, (1,3) 2 -> miss; (1,0), pseudo 0 on GT background, is
    # not scored. All tissue: TUM 1 / (2 + 2 - 1), STR 1 / 2, LYM 1 / 2.
    assert metrics['IoU']['TUM'] == pytest.approx(1 / 3)
    assert metrics['IoU']['STR'] == pytest.approx(0.5)
    assert metrics['IoU']['LYM'] == pytest.approx(0.5)
    assert np.isnan(metrics['IoU']['NEC'])
    assert metrics['mIoU'] == pytest.approx(4 / 9)
    # Labelled tissue only: (0,0), (0,2), (0,3), (1,2).
    assert metrics['precision_IoU']['TUM'] == pytest.approx(0.5)
    assert metrics['precision_IoU']['STR'] == pytest.approx(0.5)
    assert metrics['precision_IoU']['LYM'] == pytest.approx(1.0)
    assert np.isnan(metrics['precision_IoU']['NEC'])
    assert metrics['precision_mIoU'] == pytest.approx(2 / 3)
    assert metrics['coverage'] == pytest.approx(4 / 6)
    with pytest.raises(FileNotFoundError, match='missing.png'):
        scorer.update(pseudo, str(tmp_path / 'missing.png'))


def test_pseudo_label_params():
    cfg = Config(dict(pseudo_label_cfg=dict(thresh_mode='adaptive')))
    with pytest.raises(KeyError, match='pseudo_label_cfg.fg_thresh'):
        pseudo_label_params(cfg)
    assert pseudo_label_params(cfg, fg_thresh=0.6) == dict(
        fg_thresh=0.6, thresh_mode='adaptive', ignore_index=255)
    assert pseudo_label_params(
        Config(dict(pseudo_label_cfg=dict(fg_thresh=0.3))),
        thresh_mode='adaptive')['thresh_mode'] == 'adaptive'
    with pytest.raises(KeyError, match='bg_thresh'):
        pseudo_label_params(
            Config(dict(pseudo_label_cfg=dict(bg_thresh=0.1))), 0.2)


def test_build_label_dataset_drops_mask_loaders_on_train(data_root):
    cfg = tiny_cfg(data_root)
    train = build_label_dataset(cfg, 'train')
    assert len(train) == NUM_TRAIN and 'gt_sem_seg' not in train[0][
        'data_samples']
    val = build_label_dataset(cfg, 'val')
    assert len(val) == 3 and 'gt_sem_seg' in val[0]['data_samples']
