"""Tests of the prototype-bank builder, PrototypeInitHook and its tool."""
import os.path as osp

import mmcv
import numpy as np
import pytest
import torch
from mmengine.config import Config
from mmengine.dataset import pseudo_collate
from mmengine.hooks import Hook
from mmengine.runner import Runner
from mmseg.registry import MODELS
from mmseg.structures import SegDataSample
from torch.utils.data import DataLoader

from protoprompt_mm.engine.prototype_bank_builder import (
    build_image_bank_dataloader, build_prototype_bank, build_prototype_record)
from tool_loading import load_tool

REPO_ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
NUM_CLASSES, K, D = 4, 2, 8
# One BGR colour per class; multi-label images are painted grey.
COLOURS = np.array([[40, 40, 200], [200, 60, 60], [60, 180, 60],
                    [150, 30, 150]], dtype=np.uint8)


def tiny_model_cfg(embed_dim: int = D, **bank) -> dict:
    """EncoderDecoder with a narrow ResNet-18, a PrototypeBank and FCN."""
    return dict(
        type='EncoderDecoder',
        data_preprocessor=dict(
            type='SegDataPreProcessor',
            mean=[128.0] * 3,
            std=[64.0] * 3,
            bgr_to_rgb=True,
            size=(32, 32),
            seg_pad_val=255),
        backbone=dict(
            type='ResNetV1c', depth=18, stem_channels=8, base_channels=8),
        neck=dict(
            type='PrototypeBank',
            in_channels=[8, 16, 32, 64],
            in_index=[1, 2, 3],
            num_classes=NUM_CLASSES,
            embed_dim=embed_dim,
            num_prototypes=K,
            update_mode='momentum',
            **bank),
        decode_head=dict(
            type='FCNHead',
            in_channels=64,
            in_index=3,
            channels=8,
            num_convs=1,
            concat_input=False,
            num_classes=NUM_CLASSES,
            loss_decode=dict(type='CrossEntropyLoss', loss_weight=1.0)))


def write_tiny_data(root: str, per_class: int = 3, multi: int = 3) -> None:
    """32x32 patches named ``x_0001[1000].png`` plus masks in ``mask/``."""
    rng = np.random.default_rng(0)
    index = 0
    flags = [np.eye(NUM_CLASSES, dtype=int)[c] for c in range(NUM_CLASSES)
             for _ in range(per_class)] + [np.array([1, 1, 0, 0])] * multi
    for flag in flags:
        index += 1
        name = f'x_{index:04d}[{"".join(map(str, flag))}]'
        single = flag.sum() == 1
        colour = COLOURS[flag.argmax()] if single else np.full(3, 128)
        img = np.clip(colour + rng.normal(0, 10, (32, 32, 3)), 0, 255)
        img[:, 24:] = 255  # white glass
        mask = np.full((32, 32), flag.argmax(), dtype=np.uint8)
        mask[:, 24:] = NUM_CLASSES  # background
        mmcv.imwrite(
            img.astype(np.uint8), osp.join(root, 'img', name + '.png'))
        mmcv.imwrite(mask, osp.join(root, 'mask', name + '.png'))


def train_dataloader_cfg(root: str) -> dict:
    return dict(
        batch_size=2,
        num_workers=0,
        sampler=dict(type='InfiniteSampler', shuffle=True),
        dataset=dict(
            type='BCSSWSSSDataset',
            data_root=root,
            data_prefix=dict(img_path='img', seg_map_path='mask'),
            pipeline=[
                dict(type='LoadImageFromFile'),
                dict(type='LoadHistoAnnotations', num_classes=NUM_CLASSES),
                dict(type='PackSegInputs'),
            ]))


def runner_cfg(root: str, work_dir: str, max_iters: int, **extra) -> Config:
    return Config(
        dict(
            model=tiny_model_cfg(),
            work_dir=work_dir,
            train_dataloader=train_dataloader_cfg(root),
            train_cfg=dict(type='IterBasedTrainLoop', max_iters=max_iters),
            optim_wrapper=dict(optimizer=dict(type='SGD', lr=0.01)),
            default_hooks=dict(
                checkpoint=dict(
                    type='CheckpointHook', interval=1, by_epoch=False)),
            custom_hooks=[
                dict(
                    type='PrototypeInitHook',
                    max_images_per_class=2,
                    save_path='protos.pth')
            ],
            default_scope='mmseg',
            log_level='WARNING',
            **extra))


class PrototypeProbe(Hook):
    """Records the prototypes seen by the first training iteration."""

    def before_train_iter(self, runner, batch_idx, data_batch=None) -> None:
        if not hasattr(self, 'seen'):
            self.seen = runner.model.neck.prototypes.detach().clone()


def make_runner(cfg: Config):
    runner = Runner.from_cfg(cfg)
    probe = PrototypeProbe()
    runner.register_hook(probe, priority='LOWEST')
    return runner, probe


@pytest.fixture(scope='module')
def data_root(tmp_path_factory) -> str:
    root = str(tmp_path_factory.mktemp('tiny_histo'))
    write_tiny_data(root)
    return root


def in_memory_loader(labels, colours, batch_size=4) -> DataLoader:
    """pseudo-collated batches of uniform 32x32 images with labels."""
    samples = []
    for flag, colour in zip(labels, colours):
        img = torch.tensor(colour, dtype=torch.uint8)[:, None, None]
        samples.append(
            dict(
                inputs=img.expand(3, 32, 32).clone(),
                data_samples=SegDataSample(
                    metainfo=dict(img_labels=np.array(flag)))))
    return DataLoader(
        samples, batch_size=batch_size, collate_fn=pseudo_collate)


def test_builder_uses_only_single_label_images():
    torch.manual_seed(0)
    model = MODELS.build(tiny_model_cfg())
    model.init_weights()
    eye = np.eye(NUM_CLASSES, dtype=int)
    labels = [eye[c] for c in range(NUM_CLASSES) for _ in range(4)]
    colours = [COLOURS[c] for c in range(NUM_CLASSES) for _ in range(4)]
    labels += [[1, 1, 0, 0], [0, 0, 0, 0]] * 3
    colours += [[255, 255, 255]] * 6
    embedded = []
    model.backbone.register_forward_hook(
        lambda m, args, out: embedded.append(args[0].shape[0]))
    model.train()
    protos = build_prototype_bank(
        model, in_memory_loader(labels, colours), NUM_CLASSES, K,
        max_images_per_class=3)
    assert model.training  # mode restored
    assert protos.shape == (NUM_CLASSES, K, D)
    assert torch.allclose(protos.norm(dim=-1), torch.ones(NUM_CLASSES, K))
    # 3 of the 4 images of each class, no multi-label / unlabelled image.
    assert sum(embedded) == 3 * NUM_CLASSES
    # Uniform images of one colour per class: both prototypes of a class
    # are that colour's embedding, distinct across classes.
    same = torch.einsum('nkd,nkd->nk', protos, protos.roll(1, dims=1))
    assert (same > 0.999).all()
    cross = protos[:, 0] @ protos[:, 0].t()
    assert (cross - torch.eye(NUM_CLASSES)).max() < 0.999


def test_builder_pixel_fallback_and_missing_class(caplog):
    model = MODELS.build(tiny_model_cfg())
    eye = np.eye(NUM_CLASSES, dtype=int)
    labels = [eye[0], eye[0], eye[1], eye[1], eye[2], eye[2], eye[3]]
    colours = [COLOURS[i // 2] for i in range(7)]
    protos = build_prototype_bank(model, in_memory_loader(labels, colours),
                                  NUM_CLASSES, K)
    assert protos.shape == (NUM_CLASSES, K, D)
    with pytest.raises(ValueError, match=r'class 3 \(class_3\): no single'):
        build_prototype_bank(model,
                             in_memory_loader(labels[:6], colours[:6]),
                             NUM_CLASSES, K)


def test_builder_falls_back_to_multi_label_images(monkeypatch):
    import protoprompt_mm.engine.prototype_bank_builder as builder
    logged = []
    monkeypatch.setattr(builder, 'print_log',
                        lambda msg, **kwargs: logged.append(msg))
    model = MODELS.build(tiny_model_cfg())
    eye = np.eye(NUM_CLASSES, dtype=int)
    # Class 3 never appears alone: its prototypes come from the images
    # that include it.
    labels = [eye[c] for c in range(3) for _ in range(K)]
    labels += [[1, 0, 0, 1]] * K + [[0, 1, 0, 0]]
    colours = [COLOURS[c] for c in range(3) for _ in range(K)]
    colours += [COLOURS[3]] * K + [COLOURS[1]]
    protos = build_prototype_bank(model, in_memory_loader(labels, colours),
                                  NUM_CLASSES, K)
    assert protos.shape == (NUM_CLASSES, K, D)
    assert torch.isfinite(protos).all()
    assert any('class 3 (class_3): no single-label image' in msg
               for msg in logged)


def test_builder_encoder_embed_dim_must_match():
    model = MODELS.build(tiny_model_cfg())
    encoder = MODELS.build(tiny_model_cfg(embed_dim=D * 2))
    with pytest.raises(ValueError, match='embed_dim=16 does not match'):
        build_prototype_bank(model, [], NUM_CLASSES, K, encoder=encoder)


def test_image_bank_dataloader_reuses_train_dataset(data_root):
    loader = build_image_bank_dataloader(
        dict(batch_size=3), train_dataloader_cfg(data_root), NUM_CLASSES,
        max_images_per_class=2)
    dataset = loader.dataset
    paths = [osp.basename(dataset.get_data_info(i)['img_path'])
             for i in range(len(dataset))]
    # Up front: the first 2 single-label images of each class only.
    assert paths == [
        'x_0001[1000].png', 'x_0002[1000].png', 'x_0004[0100].png',
        'x_0005[0100].png', 'x_0007[0010].png', 'x_0008[0010].png',
        'x_0010[0001].png', 'x_0011[0001].png'
    ]
    batch = next(iter(loader))
    # Test-style pipeline: no mask, labels in the metainfo.
    assert 'gt_sem_seg' not in batch['data_samples'][0]
    assert batch['data_samples'][0].img_labels.tolist() == [1, 0, 0, 0]
    with pytest.raises(ValueError, match=r"unknown keys \['sampler'\]"):
        build_image_bank_dataloader(
            dict(sampler={}), None, NUM_CLASSES, max_images_per_class=2)


def test_hook_initialises_before_training_and_skips_on_resume(
        data_root, tmp_path):
    work_dir = str(tmp_path / 'work')
    runner, probe = make_runner(runner_cfg(data_root, work_dir, 1))
    initial = runner.model.neck.prototypes.detach().clone()
    runner.train()
    saved = torch.load(osp.join(work_dir, 'protos.pth'), weights_only=True)
    assert saved['classes'] == ['TUM', 'STR', 'LYM', 'NEC']
    assert saved['meta']['max_images_per_class'] == 2
    assert not torch.allclose(saved['prototypes'], initial)
    assert torch.allclose(probe.seen, saved['prototypes'])

    # Resume: the checkpoint's prototypes must win over a rebuild.
    ckpt_path = osp.join(work_dir, 'iter_1.pth')
    ckpt = torch.load(ckpt_path, weights_only=False)
    marker = torch.nn.functional.normalize(torch.randn(NUM_CLASSES, K, D),
                                           dim=-1)
    ckpt['state_dict']['neck.prototypes'] = marker
    torch.save(ckpt, ckpt_path)
    runner, probe = make_runner(
        runner_cfg(data_root, work_dir, 2, resume=True))
    runner.train()
    assert torch.allclose(probe.seen, marker)


def test_hook_skips_with_init_prototypes(data_root, tmp_path):
    file = str(tmp_path / 'init.pth')
    marker = torch.nn.functional.normalize(torch.randn(NUM_CLASSES, K, D),
                                           dim=-1)
    torch.save(dict(prototypes=marker), file)
    cfg = runner_cfg(data_root, str(tmp_path / 'work'), 1)
    cfg.model.neck.init_prototypes = file
    runner, probe = make_runner(cfg)
    runner.train()
    assert torch.allclose(probe.seen, marker)
    assert not osp.exists(osp.join(str(tmp_path / 'work'), 'protos.pth'))


def test_hook_without_prototype_bank_raises(data_root, tmp_path):
    cfg = runner_cfg(data_root, str(tmp_path / 'work'), 1)
    cfg.model.pop('neck')
    cfg.model.decode_head.in_index = 3
    with pytest.raises(TypeError, match='holds no prototypes'):
        Runner.from_cfg(cfg).train()


def test_tool_writes_file_loadable_by_prototype_bank(data_root, tmp_path):
    cfg_file = tmp_path / 'cfg.py'
    cfg = runner_cfg(data_root, str(tmp_path / 'work'), 1)
    cfg.dump(str(cfg_file))
    torch.manual_seed(1)
    model = MODELS.build(tiny_model_cfg())
    ckpt = str(tmp_path / 'model.pth')
    torch.save(dict(state_dict=model.state_dict()), ckpt)
    out = str(tmp_path / 'out' / 'protos.pth')

    tool = load_tool('build_prototype_bank')
    tool.main([str(cfg_file), ckpt, '--out', out, '--device', 'cpu',
               '--num-iters', '5'])

    saved = torch.load(out, weights_only=True)
    assert saved['classes'] == ['TUM', 'STR', 'LYM', 'NEC']
    assert saved['meta']['checkpoint'] == ckpt
    # Settings of the config's PrototypeInitHook, CLI overrides on top.
    assert saved['meta']['max_images_per_class'] == 2
    assert saved['meta']['num_iters'] == 5
    expected = build_prototype_record(
        model.eval(), cfg.train_dataloader, max_images_per_class=2,
        num_iters=5)['prototypes']
    assert torch.allclose(saved['prototypes'], expected, atol=1e-5)

    bank = MODELS.build(
        dict(type='PrototypeBank', in_channels=[8, 16, 32, 64],
             num_classes=NUM_CLASSES, embed_dim=D, num_prototypes=K,
             init_prototypes=out))
    bank.init_weights()
    assert torch.allclose(bank.prototypes, saved['prototypes'], atol=1e-6)
