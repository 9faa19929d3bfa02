"""Stain maths and transforms: HED round trip, Macenko against a known
decomposition, seeded jitter, BGR channel order, masks untouched, the
stain augmentation on in every dataset base, --stain-norm inference."""
import os.path as osp
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from mmengine.config import Config
from mmseg.registry import DATASETS
from PIL import Image

from protoprompt_mm.apis import infer_region, init_segmentor, segment_region
from protoprompt_mm.datasets.stain import (RGB_FROM_HED, STAIN_SHIFTS,
                                           MacenkoNormalizer, apply_to_bgr,
                                           build_stain_normalizer,
                                           fit_stain_target, hed_to_rgb,
                                           intensity, macenko_stains,
                                           optical_density, rgb_to_hed,
                                           scale_stains)
from protoprompt_mm.datasets.transforms import (FixedStainShift,
                                                MacenkoStainNormalize,
                                                RandomHEDJitter)
from protoprompt_mm.engine.hooks import StainTargetHook
from test_infer_region import (  # noqa: F401  (the fixture tiny_model_files)
    PerPixelModel, random_image, tiny_model_files)
from test_manifest_training import CLASSES, make_patches

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
DATASET_BASES = osp.join(REPO, 'configs', '_base_', 'datasets')
ABLATIONS = osp.join(REPO, 'configs', 'protoprompt', 'ablations')
# H and E vectors unlike Ruifrok-Johnston's, to be recovered by Macenko.
SOURCE = np.array([[0.60, 0.75, 0.28], [0.20, 0.90, 0.40]])
TARGET = np.array([[0.55, 0.72, 0.42], [0.22, 0.80, 0.56]])


def unit(matrix):
    return matrix / np.linalg.norm(matrix, axis=1, keepdims=True)


def concentrations(shape, seed=0):
    """H / E amounts (H, W, 2): mixtures, 10 % pure H, 10 % pure E, 10 %
    glass."""
    rng = np.random.default_rng(seed)
    share = rng.uniform(0, 1, shape)
    share[rng.uniform(size=shape) < 0.1] = 1
    share[rng.uniform(size=shape) < 0.1] = 0
    total = rng.uniform(0.3, 1.8, shape) * (rng.uniform(size=shape) > 0.1)
    return np.stack([share * total, (1 - share) * total], axis=-1)


def beer_lambert(amounts, matrix):
    """uint8 RGB image of stain amounts (H, W, 2) with OD vectors (2, 3)."""
    return np.rint(intensity(amounts @ unit(matrix))).astype(np.uint8)


def sample(img):
    seg = np.random.default_rng(1).integers(0, 5, img.shape[:2], np.uint8)
    return dict(img=img, gt_seg_map=seg, seg_fields=['gt_seg_map'],
                img_labels=np.array([1, 0, 1, 0]))


def test_hed_round_trip_is_exact_and_deconvolves_pure_stains():
    rgb = random_image(32, 40)
    assert np.array_equal(np.rint(hed_to_rgb(rgb_to_hed(rgb))), rgb)
    for stain in range(3):
        amounts = np.zeros(3)
        amounts[stain] = 0.8
        pixel = intensity(amounts @ RGB_FROM_HED)
        assert np.allclose(rgb_to_hed(pixel), amounts, atol=1e-4)
    assert np.array_equal(scale_stains(rgb, (1, 1, 1)), rgb)
    assert scale_stains(rgb.astype(np.float32), (1, 1)).dtype == np.float32


def test_macenko_recovers_a_known_stain_matrix():
    amounts = concentrations((128, 128))
    matrix, maxima = macenko_stains(beer_lambert(amounts, SOURCE))
    assert (np.sum(matrix * unit(SOURCE), axis=1) > 0.999).all(), matrix
    tissue = amounts.sum(-1) > 0
    assert np.allclose(maxima, np.percentile(amounts[tissue], 99, axis=0),
                       rtol=0.05)


def test_macenko_normalisation_maps_one_staining_onto_another():
    amounts = concentrations((96, 96))
    target_image = beer_lambert(amounts * [1.2, 0.8], TARGET)
    normalizer = MacenkoNormalizer(*macenko_stains(target_image))
    out = normalizer.normalize(beer_lambert(amounts, SOURCE))
    assert out.dtype == np.uint8
    error = np.abs(out.astype(float) - target_image)
    assert error.mean() < 2 and np.percentile(error, 99) < 8
    glass = random_image(20, 20, high=10) + 245  # no tissue to fit
    assert np.array_equal(normalizer.normalize(glass), glass)


def test_stain_normalizer_from_a_reference_file_or_statistics(tmp_path):
    reference = beer_lambert(concentrations((64, 64), seed=3), TARGET)
    path = str(tmp_path / 'reference.png')
    Image.fromarray(reference).save(path)  # RGB on disk
    from_file = build_stain_normalizer(path)
    matrix, maxima = macenko_stains(reference)
    assert np.allclose(from_file.stain_matrix, matrix)
    assert np.allclose(from_file.max_concentrations, maxima)
    from_stats = build_stain_normalizer(
        stain_matrix=matrix.tolist(), max_concentrations=maxima.tolist())
    source = beer_lambert(concentrations((40, 40), seed=4), SOURCE)
    assert np.array_equal(from_file.normalize(source),
                          from_stats.normalize(source))
    with pytest.raises(FileNotFoundError, match='missing.png'):
        build_stain_normalizer(str(tmp_path / 'missing.png'))
    with pytest.raises(ValueError, match='either reference'):
        build_stain_normalizer(path, stain_matrix=matrix)
    with pytest.raises(ValueError, match='either reference'):
        build_stain_normalizer(stain_matrix=matrix)
    with pytest.raises(ValueError, match=r'stain_matrix \(2, 3\)'):
        MacenkoNormalizer([[1, 0, 0]], [1, 1])
    Image.fromarray(np.full((30, 30, 3), 250, np.uint8)).save(
        tmp_path / 'glass.png')
    with pytest.raises(ValueError, match='glass.png: 0 tissue pixels'):
        build_stain_normalizer(str(tmp_path / 'glass.png'))


def test_hed_jitter_is_seeded_within_range_and_leaves_masks():
    img = random_image(24, 24, high=220)
    jitter = RandomHEDJitter(scale_sigma=0.05, shift_sigma=0.05)
    outputs = []
    for seed in (0, 0, 1):
        np.random.seed(seed)
        original = sample(img.copy())
        out = jitter(sample(img.copy()))
        assert out['img'].dtype == np.uint8
        assert out['img'].shape == img.shape
        assert np.array_equal(out['gt_seg_map'], original['gt_seg_map'])
        assert np.array_equal(out['img_labels'], original['img_labels'])
        outputs.append(out['img'])
    assert np.array_equal(outputs[0], outputs[1])
    assert not np.array_equal(outputs[0], outputs[2])
    np.random.seed(0)  # the same draws as the jitter's, applied directly
    np.random.rand()
    scales = np.random.uniform(0.95, 1.05, 3)
    shifts = np.random.uniform(-0.05, 0.05, 3)
    assert np.array_equal(
        outputs[0], apply_to_bgr(lambda x: scale_stains(x, scales, shifts),
                                 img))
    np.random.seed(0)
    assert np.array_equal(RandomHEDJitter(prob=0.0)(sample(img))['img'], img)
    with pytest.raises(ValueError, match='scale_sigma'):
        RandomHEDJitter(scale_sigma=1.5)
    with pytest.raises(ValueError, match=r'colour image \(H, W, 3\)'):
        jitter(dict(img=img[..., 0]))


def test_fixed_shift_reads_the_image_as_bgr():
    rgb = beer_lambert(concentrations((32, 32)), TARGET)
    bgr = np.ascontiguousarray(rgb[..., ::-1])
    out = FixedStainShift('haematoxylin_heavy')(sample(bgr))
    expected = scale_stains(rgb, STAIN_SHIFTS['haematoxylin_heavy'])
    assert np.array_equal(out['img'][..., ::-1], expected)
    # More haematoxylin absorbs red (BGR index 2) more than blue.
    loss = bgr.astype(float).mean((0, 1)) - out['img'].mean((0, 1))
    assert loss[2] > loss[0] > 0
    darker = FixedStainShift('darker')(sample(bgr))['img']
    paler = FixedStainShift('paler')(sample(bgr))['img']
    assert darker.mean() < bgr.mean() < paler.mean()
    glass = (bgr == 255).all(-1)
    assert glass.any() and (darker[glass] == 255).all()  # stays white
    with pytest.raises(ValueError, match='condition must be one of'):
        FixedStainShift('bluish')


def test_normalize_transform_is_bgr_in_bgr_out_and_leaves_masks():
    matrix, maxima = macenko_stains(
        beer_lambert(concentrations((64, 64)), TARGET))
    transform = MacenkoStainNormalize(
        stain_matrix=matrix.tolist(), max_concentrations=maxima.tolist())
    rgb = beer_lambert(concentrations((48, 48), seed=5), SOURCE)
    original = sample(np.ascontiguousarray(rgb[..., ::-1]))
    out = transform(sample(original['img'].copy()))
    expected = MacenkoNormalizer(matrix, maxima).normalize(rgb)
    assert np.array_equal(out['img'][..., ::-1], expected)
    assert np.array_equal(out['gt_seg_map'], original['gt_seg_map'])
    assert 'stain_matrix=' in repr(transform)


@pytest.mark.parametrize('base', [
    'bcss_wsss.py', 'luad_histoseg.py', 'synthetic_histo.py', 'manifest.py'
])
def test_stain_augmentation_is_on_in_every_dataset_base(base):
    """HED jitter before the RGB distortion in both training pipelines and
    their loaders; none in val / test / TTA."""
    cfg = Config.fromfile(osp.join(DATASET_BASES, base))
    loaders = dict(train_pipeline=cfg.train_dataloader.dataset.pipeline,
                   train_pipeline_pseudo=cfg.train_dataloader_pseudo.dataset
                   .pipeline)
    for key, loader_pipeline in loaders.items():
        types = [step['type'] for step in cfg[key]]
        assert types.index('RandomHEDJitter') < \
            types.index('PhotoMetricDistortion'), (base, key, types)
        assert loader_pipeline == cfg[key]
    for key in ('test_pipeline', 'tta_pipeline'):
        assert 'RandomHEDJitter' not in str(cfg[key])
    for loader in ('val_dataloader', 'test_dataloader'):
        assert 'RandomHEDJitter' not in str(cfg[loader])


@pytest.mark.parametrize('ablation, parent, jitter', [
    ('stage1_protocam-no-stain-aug', 'stage1_protocam', None),
    ('protoprompt-no-stain-aug', 'protoprompt', None),
    ('stage1_protocam-hed-strong', 'stage1_protocam', 0.2),
    ('protoprompt-hed-strong', 'protoprompt', 0.2),
    ('stage1_protocam-hed-scale', 'stage1_protocam', (0.3, 0.01)),
    ('protoprompt-hed-scale', 'protoprompt', (0.3, 0.01)),
])
def test_stain_ablation_configs_change_only_the_jitter(ablation, parent,
                                                       jitter):
    name = '{}_r18_synthetic.py'
    pipeline = Config.fromfile(osp.join(ABLATIONS, name.format(
        ablation))).train_dataloader.dataset.pipeline
    parent_pipeline = Config.fromfile(osp.join(
        REPO, 'configs', 'protoprompt',
        name.format(parent))).train_dataloader.dataset.pipeline
    jitters = [(step['scale_sigma'], step['shift_sigma'])
               for step in pipeline if step['type'] == 'RandomHEDJitter']
    if isinstance(jitter, float):
        jitter = (jitter, jitter)
    assert jitters == ([] if jitter is None else [jitter])
    assert [step for step in pipeline
            if step['type'] != 'RandomHEDJitter'] == [
                step for step in parent_pipeline
                if step['type'] != 'RandomHEDJitter']


def test_stain_augmentation_runs_in_a_training_sample(tmp_path):
    cfg = Config.fromfile(osp.join(DATASET_BASES, 'manifest.py'))
    data_root = str(tmp_path / 'data')
    make_patches(data_root)
    dataset_cfg = cfg.train_dataloader.dataset
    dataset_cfg.update(data_root=data_root,
                       metainfo=dict(classes=CLASSES))
    dataset = DATASETS.build(dataset_cfg)
    assert any(isinstance(t, RandomHEDJitter)
               for t in dataset.pipeline.transforms)
    np.random.seed(0)
    packed = dataset[0]
    assert tuple(packed['inputs'].shape) == (3, 64, 64)
    assert packed['data_samples'].metainfo['img_labels'] is not None


def test_infer_region_with_stain_normalisation(tiny_model_files, tmp_path):
    reference = beer_lambert(concentrations((64, 64)), TARGET)
    path = str(tmp_path / 'reference.png')
    Image.fromarray(reference).save(path)
    normalizer = build_stain_normalizer(path)
    bgr = np.ascontiguousarray(
        beer_lambert(concentrations((70, 90), seed=6), SOURCE)[..., ::-1])
    model = PerPixelModel().eval()
    normalised = apply_to_bgr(normalizer.normalize, bgr)
    assert np.array_equal(
        infer_region(model, bgr, tile=32, overlap=8,
                     stain_normalizer=normalizer),
        infer_region(model, normalised, tile=32, overlap=8))

    config, checkpoint, _, _ = tiny_model_files
    image_path, out_mask = tmp_path / 'region.png', tmp_path / 'mask.png'
    Image.fromarray(bgr[..., ::-1]).save(image_path)
    files = [config, checkpoint, str(image_path), str(out_mask),
             str(tmp_path / 'overlay.png')]
    segment_region(*files, tile=64, overlap=16, stain_norm=path,
                   progress=False)
    expected = infer_region(init_segmentor(config, checkpoint), normalised,
                            tile=64, overlap=16).argmax(0).numpy()
    assert np.array_equal(np.asarray(Image.open(out_mask)), expected)
    with pytest.raises(FileNotFoundError, match='nothing.png'):
        segment_region(*files, tile=64, overlap=16,
                       stain_norm=str(tmp_path / 'nothing.png'))


def write_stained_images(folder, count, matrix, size=(48, 48)):
    paths = []
    for i in range(count):
        path = str(folder / f'stained{i}.png')
        Image.fromarray(beer_lambert(concentrations(size, seed=10 + i),
                                     matrix)).save(path)
        paths.append(path)
    return paths


def test_stain_target_pools_images_and_recovers_their_stains(tmp_path):
    paths = write_stained_images(tmp_path, 3, SOURCE)
    target = fit_stain_target(paths, max_pixels_per_image=1000)
    assert target['num_images'] == 3
    assert np.allclose(target['stain_matrix'], unit(SOURCE), atol=0.02)
    # The 99th-percentile concentrations of the pooled amounts.
    pooled = np.concatenate([concentrations((48, 48), seed=10 + i)
                             for i in range(3)]).reshape(-1, 2)
    tissue = (optical_density(np.stack([beer_lambert(
        concentrations((48, 48), seed=10 + i), SOURCE) for i in range(3)]
    ).reshape(-1, 3)) >= 0.15).all(axis=1)
    assert np.allclose(target['max_concentrations'],
                       np.percentile(pooled[tissue], 99, axis=0), rtol=0.1)
    glass = str(tmp_path / 'glass.png')
    Image.fromarray(np.full((32, 32, 3), 250, np.uint8)).save(glass)
    with pytest.raises(ValueError, match='pooled pixels of 1 images'):
        fit_stain_target([glass])
    with pytest.raises(FileNotFoundError, match='missing.png'):
        fit_stain_target([str(tmp_path / 'missing.png')])


def test_normalizer_from_the_stain_target_a_checkpoint_carries(tmp_path):
    target = dict(stain_matrix=unit(TARGET).tolist(),
                  max_concentrations=[1.5, 0.9], num_images=3)
    checkpoint = str(tmp_path / 'iter_2.pth')
    torch.save(dict(meta=dict(stain_target=target), state_dict={}),
               checkpoint)
    from_checkpoint = build_stain_normalizer(checkpoint)
    expected = MacenkoNormalizer(target['stain_matrix'],
                                 target['max_concentrations'])
    rgb = beer_lambert(concentrations((40, 40), seed=3), SOURCE)
    assert np.array_equal(from_checkpoint.normalize(rgb),
                          expected.normalize(rgb))
    assert 'reference=' in repr(MacenkoStainNormalize(reference=checkpoint))
    bare = str(tmp_path / 'bare.pth')
    torch.save(dict(meta=dict(), state_dict={}), bare)
    with pytest.raises(KeyError, match='carries no stain target'):
        build_stain_normalizer(bare)
    with pytest.raises(FileNotFoundError, match='nope.pth'):
        build_stain_normalizer(str(tmp_path / 'nope.pth'))


class ListDataset:
    """``len`` and ``get_data_info`` of an mmseg dataset over files."""

    def __init__(self, paths):
        self.paths = paths

    def __len__(self):
        return len(self.paths)

    def get_data_info(self, index):
        return dict(img_path=self.paths[index])


def fake_runner(paths, iteration=0):
    return SimpleNamespace(
        iter=iteration,
        train_dataloader=SimpleNamespace(dataset=ListDataset(paths)))


def test_stain_target_hook_fits_saves_and_keeps_a_resumed_target(tmp_path):
    paths = write_stained_images(tmp_path, 5, SOURCE)
    hook = StainTargetHook(num_images=3, max_pixels_per_image=500)
    assert hook.sample_paths(ListDataset(paths)) == [
        paths[0], paths[2], paths[4]]
    hook.before_train(fake_runner(paths))
    assert hook.target == fit_stain_target(
        [paths[0], paths[2], paths[4]], max_pixels_per_image=500)
    checkpoint = dict(meta=dict(seed=0))
    hook.before_save_checkpoint(None, checkpoint)
    assert checkpoint['meta'] == dict(seed=0, stain_target=hook.target)

    # Resumed (iteration > 0): the checkpoint's target is kept, not refitted.
    resumed = StainTargetHook()
    stored = dict(hook.target, num_images=99)
    resumed.after_load_checkpoint(None, dict(meta=dict(stain_target=stored)))
    resumed.before_train(fake_runner(paths, iteration=4))
    assert resumed.target == stored
    # load_from (iteration 0): a fresh fit on this run's training images.
    started = StainTargetHook(num_images=3, max_pixels_per_image=500)
    started.after_load_checkpoint(None, dict(meta=dict(stain_target=stored)))
    started.before_train(fake_runner(paths))
    assert started.target == hook.target


def test_stain_target_hook_on_glass_raises_or_warns(tmp_path):
    glass = str(tmp_path / 'glass.png')
    Image.fromarray(np.full((32, 32, 3), 250, np.uint8)).save(glass)
    with pytest.raises(ValueError, match='strict=False'):
        StainTargetHook().before_train(fake_runner([glass]))
    lenient = StainTargetHook(strict=False)
    lenient.before_train(fake_runner([glass]))
    checkpoint = dict(meta={})
    lenient.before_save_checkpoint(None, checkpoint)
    assert lenient.target is None and checkpoint == dict(meta={})
