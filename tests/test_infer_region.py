"""Tiled large-image inference (protoprompt_mm.apis, infer_region.py)."""
import os.path as osp
import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.nn as nn
from mmengine.config import ConfigDict
from mmengine.structures import PixelData
from mmseg.registry import MODELS
from mmseg.structures import SegDataSample
from PIL import Image

from protoprompt_mm.apis import (background_mask, check_tiling, infer_region,
                                 init_segmentor, label_map, segment_region,
                                 tile_starts)
from protoprompt_mm.datasets import BCSSWSSSDataset
from protoprompt_mm.utils import load_config

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
STAGE2_CFG = osp.join(REPO, 'configs/protoprompt/protoprompt_r18_synthetic.py')
TINY_CFG = f"""_base_ = [{STAGE2_CFG!r}]
model = dict(
    neck=dict(embed_dim=16, num_prototypes=2),
    decode_head=dict(channels=16, embed_dim=16, num_attn_heads=2))
"""
PREPROCESSOR = dict(
    type='SegDataPreProcessor',
    mean=[123.675, 116.28, 103.53],
    std=[58.395, 57.12, 57.375],
    bgr_to_rgb=True)


@pytest.fixture(scope='module')
def tiny_model_files(tmp_path_factory):
    """A tiny random-init stage-2 config and checkpoints with / without
    dataset_meta."""
    root = tmp_path_factory.mktemp('tiny_model')
    config = root / 'tiny_protoprompt.py'
    config.write_text(TINY_CFG)
    torch.manual_seed(0)
    model = MODELS.build(load_config(str(config)).model)
    with_meta, without_meta = root / 'with_meta.pth', root / 'no_meta.pth'
    meta = dict(classes=('A', 'B', 'C', 'D'),
                palette=[[1, 2, 3], [4, 5, 6], [7, 8, 9], [10, 11, 12]])
    torch.save(dict(state_dict=model.state_dict(),
                    meta=dict(dataset_meta=meta)), with_meta)
    torch.save(dict(state_dict=model.state_dict()), without_meta)
    return str(config), str(with_meta), str(without_meta), meta


def random_image(height, width, seed=0, high=256):
    rng = np.random.default_rng(seed)
    return rng.integers(0, high, (height, width, 3), dtype=np.uint8)


class PerPixelModel(nn.Module):
    """Stub segmentor whose logits are a 1x1 conv of the normalised input:
    any misplaced tile or wrong blending weight shows in the stitched map."""

    def __init__(self):
        super().__init__()
        self.data_preprocessor = MODELS.build(PREPROCESSOR)
        self.conv = nn.Conv2d(3, 5, 1)

    def encode_decode(self, inputs, batch_img_metas):
        return self.conv(inputs)


class BorderArtefactModel(PerPixelModel):
    """Stub predicting class 1 everywhere except a confident class 0 in the
    last 4 columns and rows of every tile (like zero-padding artefacts)."""

    def encode_decode(self, inputs, batch_img_metas):
        logits = torch.zeros(inputs.shape[0], 2, *inputs.shape[2:])
        logits[:, 1] = 5.0
        logits[:, 0, -4:, :] = logits[:, 0, :, -4:] = 20.0
        return logits


def test_tile_grid_is_mmseg_slide_grid():
    for length, tile, stride in [(300, 64, 48), (260, 64, 48), (64, 64, 48),
                                 (2048, 224, 192), (100, 10, 10)]:
        starts = tile_starts(length, tile, stride)
        grids = max(length - tile + stride - 1, 0) // stride + 1
        expected = [min(i * stride, length - tile) for i in range(grids)]
        assert starts == expected
        assert starts[0] == 0 and starts[-1] + tile == length
    with pytest.raises(ValueError, match='length >= tile'):
        tile_starts(50, 64, 48)


@pytest.mark.parametrize('height,width', [(260, 300), (40, 50)])
def test_tiles_are_stitched_without_seams(height, width):
    torch.manual_seed(0)
    model = PerPixelModel().eval()
    image = random_image(height, width)
    whole = model.data_preprocessor(
        dict(inputs=[torch.from_numpy(image).permute(2, 0, 1)]),
        False)['inputs']
    expected = model.encode_decode(whole, None).softmax(dim=1)[0]
    probs = infer_region(model, image, tile=64, overlap=16, batch_size=5)
    assert probs.shape == (5, height, width)
    assert probs.dtype == torch.float32
    torch.testing.assert_close(probs, expected, atol=1e-5, rtol=1e-5)
    half = infer_region(model, image, tile=64, overlap=16, batch_size=5,
                        canvas_dtype=torch.float16)
    assert half.dtype == torch.float16
    torch.testing.assert_close(half.float(), expected, atol=2e-3, rtol=0)


def test_tile_border_artefacts_do_not_make_seams():
    model = BorderArtefactModel().eval()
    labels = infer_region(model, random_image(260, 300), tile=64,
                          overlap=16).argmax(0)
    # Class 0 survives only along the image's own bottom / right border.
    assert (labels[:-4, :-4] == 1).all()
    assert (labels[-4:] == 0).all() and (labels[:, -4:] == 0).all()


def test_matches_slide_inference_with_the_prompting_head(tiny_model_files):
    """256 x 256 region, 64 x 64 crops: mmseg's slide inference of the
    prompting model agrees with the tiled inference."""
    config, checkpoint, _, _ = tiny_model_files
    model = init_segmentor(config, checkpoint)
    image = random_image(256, 256, seed=1)
    probs = infer_region(model, image, tile=64, overlap=16, batch_size=8)

    model.test_cfg = ConfigDict(
        mode='slide', crop_size=(64, 64), stride=(48, 48))
    sample = SegDataSample(
        metainfo=dict(img_shape=(256, 256), ori_shape=(256, 256)))
    sample.gt_sem_seg = PixelData(data=torch.zeros(1, 256, 256).long())
    with torch.no_grad():
        result = model.test_step(
            dict(inputs=[torch.from_numpy(image).permute(2, 0, 1)],
                 data_samples=[sample]))[0]
    slide = result.seg_logits.data.softmax(dim=0)
    assert result.pred_sem_seg.data.shape == (1, 256, 256)
    # Pixels under one tile only: the same probabilities.
    starts = tile_starts(256, 64, 48)
    once = torch.zeros(256)
    for start in starts:
        once[start:start + 64] += 1
    single = (once[:, None] == 1) & (once[None, :] == 1)
    assert single.any()
    torch.testing.assert_close(probs[:, single], slide[:, single],
                               atol=1e-4, rtol=1e-4)
    # Overlaps: cross-faded softmax vs softmax of mean logits, same labels.
    agree = (probs.argmax(0) == slide.argmax(0)).float().mean()
    assert agree > 0.97


def test_infer_region_tool_writes_mask_and_overlay(tiny_model_files,
                                                   tmp_path):
    config, checkpoint, _, meta = tiny_model_files
    image = random_image(260, 300, seed=2, high=200)  # "tissue"
    image[:40, :60] = 250  # white glass
    image_path = tmp_path / 'region.png'
    Image.fromarray(image[..., ::-1]).save(image_path)  # stored as RGB
    out_mask, out_overlay = tmp_path / 'mask.png', tmp_path / 'overlay.png'
    proc = subprocess.run([
        sys.executable, 'tools/infer_region.py', config, checkpoint,
        str(image_path), '--out-mask', str(out_mask), '--out-overlay',
        str(out_overlay), '--tile', '64', '--overlap', '16', '--batch', '4',
        '--background-thresh', '220'
    ], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f'wrote {out_mask} and {out_overlay}' in proc.stdout
    mask = Image.open(out_mask)
    assert mask.mode == 'P' and mask.size == (300, 260)
    labels = np.asarray(mask)
    assert (labels[:40, :60] == 4).all()
    assert set(np.unique(labels[40:])) <= {0, 1, 2, 3}
    assert np.array_equal(
        labels[40:],
        infer_region(init_segmentor(config, checkpoint), image, tile=64,
                     overlap=16).argmax(0).numpy()[40:])
    colours = np.asarray(mask.getpalette()[:15]).reshape(5, 3)
    assert colours[:4].tolist() == meta['palette']
    assert colours[4].tolist() == [255, 255, 255]
    overlay = Image.open(out_overlay)
    assert overlay.mode == 'RGB' and overlay.size == (300, 260)


def test_palette_falls_back_to_the_config_dataset(tiny_model_files):
    config, _, checkpoint, _ = tiny_model_files
    model = init_segmentor(config, checkpoint)
    assert model.dataset_meta['palette'] == \
        BCSSWSSSDataset.METAINFO['palette']
    assert not model.training


def test_classes_and_colours_must_be_known(tiny_model_files, tmp_path):
    config, _, checkpoint, _ = tiny_model_files
    datasetless = tmp_path / 'datasetless.py'
    datasetless.write_text(f"_base_ = [{config!r}]\n"
                           'test_dataloader = None\nval_dataloader = None\n')
    image = tmp_path / 'image.png'
    Image.fromarray(random_image(40, 40)).save(image)
    with pytest.raises(KeyError, match='no_meta.pth.*no classes and palette'):
        segment_region(str(datasetless), checkpoint, str(image),
                       str(tmp_path / 'mask.png'), str(tmp_path / 'o.png'),
                       tile=32, overlap=8, progress=False)
    with pytest.raises(ValueError, match=r'alpha \(--alpha\)'):
        segment_region(config, checkpoint, str(image), 'm.png', 'o.png',
                       alpha=1.5)


def test_init_segmentor_loads_local_files_strictly(tiny_model_files,
                                                  tmp_path):
    config, checkpoint, _, meta = tiny_model_files
    assert init_segmentor(config, checkpoint).dataset_meta == meta
    missing = str(tmp_path / 'missing.pth')
    with pytest.raises(FileNotFoundError, match='missing.pth'):
        init_segmentor(config, missing)
    state = torch.load(checkpoint, weights_only=False)['state_dict']
    partial = str(tmp_path / 'partial.pth')
    torch.save(dict(state_dict=dict(list(state.items())[1:])), partial)
    with pytest.raises(RuntimeError, match='missing keys'):
        init_segmentor(config, partial)
    assert not init_segmentor(config, partial, strict=False).training


def test_label_map_is_a_banded_uint8_argmax():
    probs = torch.rand(5, 70, 33)
    labels = label_map(probs, band=16)
    assert labels.dtype == np.uint8
    assert np.array_equal(labels, probs.argmax(0).numpy())


def test_background_mask_by_brightness():
    image = np.full((4, 4, 3), 120, np.uint8)
    image[0] = 240
    mask = background_mask(image, 220)
    assert mask[0].all() and not mask[1:].any()


def test_bad_arguments_are_refused():
    for tile, overlap, batch_size, message in [
            (64, 64, 8, 'overlap < tile'), (0, 0, 8, 'tile >= 1'),
            (64, -1, 8, 'overlap'), (64, 16, 0, 'batch_size must be >= 1')]:
        with pytest.raises(ValueError, match=message):
            check_tiling(tile, overlap, batch_size)
    check_tiling(1, 0, 1)
    model = PerPixelModel().eval()
    with pytest.raises(ValueError, match='overlap'):
        infer_region(model, random_image(80, 80), tile=64, overlap=64)
    with pytest.raises(ValueError, match='uint8'):
        infer_region(model, random_image(80, 80).astype(np.float32))
    with pytest.raises(ValueError, match='canvas_dtype'):
        infer_region(model, random_image(80, 80), canvas_dtype=torch.int32)
