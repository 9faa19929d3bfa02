"""Tests of the histology transforms on plain numpy result dicts."""
import os.path as osp

import numpy as np
import pytest
from mmcv.transforms import Compose
from PIL import Image

from protoprompt_mm.datasets.palette_masks import save_palette_mask
from protoprompt_mm.datasets.synthetic_histo import save_rgb_png
from protoprompt_mm.datasets.transforms import (CAMToPseudoLabel,
                                                LoadCAMPseudoLabel,
                                                LoadHistoAnnotations,
                                                LoadImageLevelLabels,
                                                cams_to_pseudo_label)

MASK = np.array([[0, 1, 4], [3, 4, 2]], np.uint8)
# Two classes on a 2x3 image; class 1 is absent from the labels below.
CAMS = np.array([
    [[0.90, 0.50, 0.10], [0.30, 0.05, 0.70]],
    [[0.95, 0.99, 0.00], [0.60, 0.00, 0.20]],
], np.float32)


def mask_results(path):
    return dict(seg_map_path=str(path), seg_fields=[])


def test_palette_mask_background_to_ignore(tmp_path):
    path = tmp_path / 'm[1011].png'
    save_palette_mask(str(path), MASK)
    assert Image.open(path).mode == 'P'
    results = LoadHistoAnnotations()(mask_results(path))
    assert results['gt_seg_map'].dtype == np.uint8
    assert results['gt_seg_map'].tolist() == [[0, 1, 255], [3, 255, 2]]
    assert results['seg_fields'] == ['gt_seg_map']


def test_keep_background_keeps_it_apart_from_ignore(tmp_path):
    path = tmp_path / 'm.png'
    save_palette_mask(str(path), np.array([[0, 4, 255, 3]], np.uint8))
    loader = LoadHistoAnnotations(keep_background=True)
    assert loader(mask_results(path))['gt_seg_map'].tolist() == [[0, 4, 255,
                                                                   3]]
    assert 'keep_background=True' in repr(loader)
    save_palette_mask(str(path), np.array([[4, 5]], np.uint8))
    with pytest.raises(ValueError, match=r'unexpected values \[5\]'):
        loader(mask_results(path))


def test_pseudo_mask_png_with_ignore(tmp_path):
    path = tmp_path / 'pseudo.png'
    save_palette_mask(str(path), np.array([[255, 4, 0]], np.uint8))
    gt = LoadHistoAnnotations(background_index=4)(
        mask_results(path))['gt_seg_map']
    assert gt.tolist() == [[255, 255, 0]]


def test_mask_values_outside_range_name_file(tmp_path):
    path = tmp_path / 'bad_mask.png'
    save_palette_mask(str(path), np.array([[0, 5, 7]], np.uint8))
    with pytest.raises(ValueError, match=r'unexpected values \[5, 7\]') as e:
        LoadHistoAnnotations()(mask_results(path))
    assert 'bad_mask.png' in str(e.value)


def test_rgb_mask_rejected(tmp_path):
    path = tmp_path / 'rgb_mask.png'
    save_rgb_png(str(path), np.zeros((2, 2, 3), np.uint8))
    with pytest.raises(ValueError, match='single-channel') as e:
        LoadHistoAnnotations()(mask_results(path))
    assert 'rgb_mask.png' in str(e.value)


def test_bad_label_ids_rejected():
    with pytest.raises(ValueError, match='background_index'):
        LoadHistoAnnotations(background_index=2)


def test_image_level_labels_sources():
    transform = LoadImageLevelLabels(num_classes=4)
    stored = transform(dict(img_path='x[0000].png', img_labels=[1, 0, 0, 1]))
    assert stored['img_labels'].dtype == np.int64
    assert stored['img_labels'].tolist() == [1, 0, 0, 1]
    parsed = transform(dict(img_path='x-[0 1 1 0].png', img_labels=None))
    assert parsed['img_labels'].tolist() == [0, 1, 1, 0]
    derived = transform(
        dict(img_path='val/x.png', gt_seg_map=np.array([[1, 255, 3]])))
    assert derived['img_labels'].tolist() == [0, 1, 0, 1]


def test_image_level_labels_errors_name_file():
    transform = LoadImageLevelLabels(num_classes=4)
    # A dataset's sample: stored labels (None) or a mask path it carries.
    for sample in (dict(img_labels=None), dict(seg_map_path='m.png')):
        with pytest.raises(ValueError, match='no image-level labels') as e:
            transform(dict(img_path='val/nolabel.png', **sample))
        assert 'nolabel.png' in str(e.value)
    with pytest.raises(ValueError, match='4 flags') as e:
        transform(dict(img_path='stored.png', img_labels=np.array([1, 2])))
    assert 'stored.png' in str(e.value)


def test_cams_to_pseudo_label_by_hand():
    labels = np.array([1, 0])
    # Gated: only class 0 counts; below fg_thresh is unsure (255).
    out = cams_to_pseudo_label(CAMS, labels, 0.6)
    assert out.dtype == np.uint8
    assert out.tolist() == [[0, 255, 255], [255, 255, 0]]
    # Not gated: class 1 wins where it is larger.
    out = cams_to_pseudo_label(CAMS, np.array([1, 1]), 0.6)
    assert out.tolist() == [[1, 1, 255], [1, 255, 0]]
    # Float16 input, another ignore id, a lower threshold.
    out = cams_to_pseudo_label(
        CAMS.astype(np.float16), labels, 0.5, ignore_index=200)
    assert out.tolist() == [[0, 0, 200], [200, 200, 0]]
    # Threshold 0 labels every pixel; no class present: all unsure.
    assert cams_to_pseudo_label(CAMS, labels, 0.0).tolist() == [[0] * 3] * 2
    out = cams_to_pseudo_label(CAMS, np.array([0, 0]), 0.0)
    assert (out == 255).all()


def test_adaptive_threshold_is_a_fraction_of_each_map_peak():
    # Peaks 0.45 (class 0) and 0.495: alpha 0.6 keeps class-0 pixels from
    # 0.27 on, while the fixed threshold 0.6 keeps none.
    low = CAMS * 0.5
    labels = np.array([1, 0])
    assert cams_to_pseudo_label(low, labels, 0.6, 'adaptive').tolist() == [
        [0, 255, 255], [255, 255, 0]]
    assert (cams_to_pseudo_label(low, labels, 0.6) == 255).all()
    # Per class: class 1 (peak 0.495) keeps 0.3 >= 0.297, class 0 (peak
    # 0.45) drops 0.25 < 0.27.
    both = cams_to_pseudo_label(low, np.array([1, 1]), 0.6, 'adaptive')
    assert both.tolist() == [[1, 1, 255], [1, 255, 0]]
    # A kept class whose map is zero everywhere labels nothing.
    zero = np.zeros((2, 2, 3), np.float32)
    assert (cams_to_pseudo_label(zero, labels, 0.5, 'adaptive') == 255).all()


def test_threshold_modes_agree_on_peak_normalised_cams():
    rng = np.random.default_rng(0)
    raw = rng.random((3, 8, 8)).astype(np.float32) * 0.5
    cams = raw / raw.max(axis=(1, 2), keepdims=True)
    labels = np.array([1, 0, 1])
    for alpha in (0.5, 0.7, 0.9):
        fixed = cams_to_pseudo_label(cams, labels, alpha)
        assert (fixed == 255).any() and (fixed != 255).any()
        assert np.array_equal(
            cams_to_pseudo_label(cams, labels, alpha, 'adaptive'), fixed)
        assert not np.array_equal(
            cams_to_pseudo_label(raw, labels, alpha, 'adaptive'),
            cams_to_pseudo_label(raw, labels, alpha))


@pytest.mark.parametrize('kwargs, message', [
    (dict(fg_thresh=1.5), 'fg_thresh'),
    (dict(fg_thresh=-0.1), 'fg_thresh'),
    (dict(thresh_mode='dynamic'), 'thresh_mode'),
    (dict(ignore_index=1), 'ignore_index'),
    (dict(img_labels=np.array([1, 0, 1])), 'does not match'),
    (dict(img_labels=np.array([2, 0])), '0 / 1'),
    (dict(cams=CAMS[0]), r'\(N, H, W\)'),
    (dict(cams=CAMS + 0.5), r'\[0, 1\]'),
])
def test_cams_to_pseudo_label_errors(kwargs, message):
    args = dict(cams=CAMS, img_labels=np.array([1, 0]), fg_thresh=0.6)
    args.update(kwargs)
    with pytest.raises(ValueError, match=message):
        cams_to_pseudo_label(**args)


def test_cam_to_pseudo_label_transform_gating():
    results = dict(img_path='p.png', cams=CAMS, img_labels=np.array([1, 0]))
    out = CAMToPseudoLabel(0.6)(dict(results))
    assert out['gt_seg_map'].tolist() == [[0, 255, 255], [255, 255, 0]]
    assert out['seg_fields'] == ['gt_seg_map']
    ungated = CAMToPseudoLabel(0.6, gate_by_labels=False)(dict(results))
    assert ungated['gt_seg_map'].tolist() == [[1, 1, 255], [1, 255, 0]]
    adaptive = CAMToPseudoLabel(0.6, thresh_mode='adaptive')(
        dict(results, cams=CAMS * 0.5))
    assert adaptive['gt_seg_map'].tolist() == [[0, 255, 255], [255, 255, 0]]
    with pytest.raises(ValueError, match='fg_thresh'):
        CAMToPseudoLabel(1.5)
    with pytest.raises(ValueError, match='thresh_mode'):
        CAMToPseudoLabel(0.5, thresh_mode='dynamic')
    with pytest.raises(ValueError, match='p.png'):
        CAMToPseudoLabel(0.6)(dict(results, img_labels=np.ones(3)))


CONVERTER = dict(fg_thresh=0.6)


def test_load_cam_pseudo_label_png(tmp_path):
    path = tmp_path / 'p.png'
    save_palette_mask(str(path), np.array([[0, 4, 255]], np.uint8))
    out = LoadCAMPseudoLabel()(dict(seg_map_path=str(path), seg_fields=[]))
    assert out['gt_seg_map'].tolist() == [[0, 255, 255]]


@pytest.mark.parametrize('suffix', ['.npy', '.npz'])
def test_load_cam_pseudo_label_arrays(tmp_path, suffix):
    path = str(tmp_path / f'p{suffix}')
    cams = CAMS.astype(np.float16)
    if suffix == '.npy':
        np.save(path, cams)
    else:
        np.savez(path, cams=cams)
    results = dict(
        seg_map_path=path,
        img_labels=np.array([1, 0]),
        img_shape=(2, 3),
        seg_fields=[])
    out = LoadCAMPseudoLabel(converter=CONVERTER)(results)
    # Below fg_thresh is ignore: the map is ready for the loss.
    assert out['gt_seg_map'].tolist() == [[0, 255, 255], [255, 255, 0]]
    assert out['seg_fields'] == ['gt_seg_map']


def test_load_cam_pseudo_label_errors(tmp_path):
    path = str(tmp_path / 'cams.npy')
    np.save(path, CAMS.astype(np.float16))
    base = dict(seg_map_path=path, img_labels=np.array([1, 0]), seg_fields=[])
    with pytest.raises(ValueError, match='converter') as e:
        LoadCAMPseudoLabel()(dict(base))
    assert 'cams.npy' in str(e.value)
    with pytest.raises(ValueError, match='img_labels') as e:
        LoadCAMPseudoLabel(converter=CONVERTER)(dict(base, img_labels=None))
    assert 'cams.npy' in str(e.value)
    with pytest.raises(ValueError, match='image size') as e:
        LoadCAMPseudoLabel(converter=CONVERTER)(dict(base, img_shape=(4, 4)))
    assert 'cams.npy' in str(e.value)
    with pytest.raises(ValueError, match=r'\.png, \.npy or \.npz') as e:
        LoadCAMPseudoLabel()(dict(base, seg_map_path='x/cams.jpg'))
    assert 'cams.jpg' in str(e.value)
    npz = str(tmp_path / 'two.npz')
    np.savez(npz, a=CAMS, b=CAMS)
    with pytest.raises(ValueError, match='two.npz'):
        LoadCAMPseudoLabel(converter=CONVERTER)(dict(base, seg_map_path=npz))


def test_img_labels_reach_packed_metainfo_through_flips(tmp_path):
    image = np.zeros((6, 8, 3), np.uint8)
    image[:, :4] = 255
    img_path = str(tmp_path / 'patch[0110].png')
    save_rgb_png(img_path, image)
    mask_path = str(tmp_path / 'patch_mask.png')
    save_palette_mask(mask_path, np.tile([[1] * 4 + [4] * 4], (6, 1)))
    meta_keys = ('img_path', 'flip', 'flip_direction', 'img_labels')
    pipeline = Compose([
        dict(type='LoadImageFromFile'),
        dict(type='LoadHistoAnnotations'),
        dict(type='LoadImageLevelLabels', num_classes=4),
        dict(type='RandomFlip', prob=1.0, direction='horizontal'),
        dict(type='RandomFlip', prob=1.0, direction='vertical'),
        dict(type='PackSegInputs', meta_keys=meta_keys),
    ])
    packed = pipeline(
        dict(
            img_path=img_path,
            seg_map_path=mask_path,
            img_labels=None,
            seg_fields=[],
            reduce_zero_label=False))
    sample = packed['data_samples']
    assert sample.metainfo['img_labels'].tolist() == [0, 1, 1, 0]
    assert sample.metainfo['flip'] is True
    seg = sample.gt_sem_seg.data[0]
    # Flipped horizontally: the class-1 half moved to the right.
    assert (seg[:, 4:] == 1).all() and (seg[:, :4] == 255).all()
    assert (packed['inputs'][:, :, 4:] == 255).all()
    assert osp.basename(sample.metainfo['img_path']) == 'patch[0110].png'


def test_inference_samples_pass_the_annotation_loaders():
    # What mmseg's inference_model / MMSegInferencer feed the test pipeline:
    # no mask to load, no labels to find; a flagged name still gives labels.
    pipeline = Compose([LoadHistoAnnotations(keep_background=True),
                        LoadImageLevelLabels()])
    for sample in (dict(img=np.zeros((2, 2, 3), np.uint8)),
                   dict(img_path='slide_tile.png')):
        out = pipeline(dict(sample))
        assert 'gt_seg_map' not in out and 'img_labels' not in out
    flagged = pipeline(dict(img_path='tile[0110].png'))
    assert flagged['img_labels'].tolist() == [0, 1, 1, 0]
    with pytest.raises(KeyError, match='seg_map_path'):
        LoadHistoAnnotations()(dict(img_path='x.png', img_labels=[1, 0, 0, 0]))
