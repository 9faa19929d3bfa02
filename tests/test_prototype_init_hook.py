"""Tests of prototype initialisation: the image bank, its encoding, the
clustering, the bank building API, PrototypeInitHook and its tool."""
import os
import os.path as osp
import subprocess
import sys

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

import protoprompt_mm.models.utils.prototype_clustering as clustering
from protoprompt_mm.apis import (build_prototype_bank,
                                 build_prototype_bank_from_config,
                                 build_prototype_record, encode_image_bank,
                                 prototype_embedder, save_prototype_file)
from protoprompt_mm.datasets import (build_image_bank_dataloader,
                                     image_bank_batch_uses)
from protoprompt_mm.models.utils import (ClassFeatures, cluster_class_features,
                                         cosine_kmeans)

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


def test_builder_pixel_fallback_and_missing_class():
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
    logged = []
    monkeypatch.setattr(clustering, 'print_log',
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


def test_image_bank_batch_uses_caps_each_class_and_kind():
    labels = torch.tensor([[1, 0, 0], [1, 0, 0], [0, 1, 0], [1, 1, 0],
                           [0, 0, 0], [0, 1, 1]])
    single_counts, multi_counts = [1, 0, 0], [0, 0, 1]
    uses = image_bank_batch_uses(labels, single_counts, multi_counts,
                                 max_images_per_class=2)
    # Image 1 is over class 0's single-label cap, image 4 has no label.
    assert uses == [(0, 0, True), (2, 1, True), (3, 0, False), (3, 1, False),
                    (5, 1, False), (5, 2, False)]
    assert single_counts == [1, 0, 0] and multi_counts == [0, 0, 1]


def test_encode_image_bank_embeds_tissue_of_the_needed_images():
    model = MODELS.build(tiny_model_cfg())
    model.train()
    embedder, embed_bank = prototype_embedder(model)
    assert embedder is model and embed_bank is model.neck
    eye = np.eye(NUM_CLASSES, dtype=int)
    labels = [[1, 1, 0, 0]]
    labels += [eye[c] for c in range(NUM_CLASSES) for _ in range(3)]
    colours = [COLOURS[0]]
    colours += [COLOURS[c] for c in range(NUM_CLASSES) for _ in range(3)]
    loader = in_memory_loader(labels, colours)
    for sample in loader.dataset[1::3]:  # the first image of each class
        sample['inputs'][:, :, 16:] = 255  # white glass, right half
    single, multi = encode_image_bank(embedder, embed_bank, loader,
                                      NUM_CLASSES, K, max_images_per_class=2,
                                      tissue_threshold=220.0)
    assert model.training  # mode restored
    assert [single.count(c) for c in range(NUM_CLASSES)] == [2] * NUM_CLASSES
    assert [multi.count(c) for c in range(NUM_CLASSES)] == [1, 1, 0, 0]
    vecs = torch.stack(single.image_vecs[0])
    assert vecs.shape == (2, D)
    assert torch.allclose(vecs.norm(dim=1), torch.ones(2))
    # Pixel embeddings of the first K - 1 images only; the half-white first
    # image of a class keeps half of its cells.
    assert [len(single.pixel_feats[c]) for c in range(NUM_CLASSES)] == [1] * 4
    whole = multi.pixel_feats[0][0].shape[0]
    assert single.pixel_feats[0][0].shape == (whole // 2, D)


def test_cluster_class_features_with_both_fallbacks(monkeypatch):
    logged = []
    monkeypatch.setattr(clustering, 'print_log',
                        lambda msg, **kwargs: logged.append(msg))
    torch.manual_seed(0)
    single, multi = ClassFeatures(3, K), ClassFeatures(3, K)
    for _ in range(3):
        single.add(0, torch.randn(D), torch.randn(5, D))
    single.add(1, torch.randn(D), torch.randn(4, D))
    for _ in range(2):
        multi.add(2, torch.randn(D), torch.randn(5, D))
    protos = cluster_class_features(single, multi, ['a', 'b', 'c'], D,
                                    num_iters=5, seed=1)
    assert protos.shape == (3, K, D)
    # Class 0 from its image vectors, class 1 (one image) from its pixels,
    # class 2 (no single-label image) from its multi-label images.
    expected = [torch.stack(single.image_vecs[0]), single.pixel_feats[1][0],
                torch.stack(multi.image_vecs[2])]
    for cls, points in enumerate(expected):
        assert torch.equal(protos[cls], cosine_kmeans(points, K, 5, 1))
    assert [msg.split(':')[0] for msg in logged] == ['class 1 (b)',
                                                     'class 2 (c)']
    with pytest.raises(ValueError, match=r'class 0 \(a\): no single-label'):
        cluster_class_features(ClassFeatures(2, K), ClassFeatures(2, K),
                               ['a', 'b'], D)
    few = ClassFeatures(1, K)
    few.add(0, torch.randn(D), torch.randn(1, D))
    with pytest.raises(ValueError, match='1 tissue pixels are too few'):
        cluster_class_features(few, ClassFeatures(1, K), ['a'], D)


def write_config_and_checkpoint(data_root: str, tmp_path):
    """A runner config file and a checkpoint of its (seeded) model."""
    cfg_file = str(tmp_path / 'cfg.py')
    cfg = runner_cfg(data_root, str(tmp_path / 'work'), 1)
    cfg.dump(cfg_file)
    torch.manual_seed(1)
    model = MODELS.build(tiny_model_cfg())
    ckpt = str(tmp_path / 'model.pth')
    torch.save(dict(state_dict=model.state_dict()), ckpt)
    return cfg, cfg_file, model, ckpt


def test_bank_from_config_uses_the_hook_settings(data_root, tmp_path):
    cfg, cfg_file, model, ckpt = write_config_and_checkpoint(
        data_root, tmp_path)
    record = build_prototype_bank_from_config(cfg_file, ckpt, num_iters=5)
    assert record['classes'] == ['TUM', 'STR', 'LYM', 'NEC']
    # Settings of the config's PrototypeInitHook, the given ones on top.
    assert record['meta'] == dict(
        max_images_per_class=2, num_iters=5, seed=0, tissue_threshold=220.0,
        config=cfg_file, checkpoint=ckpt)
    expected = build_prototype_record(
        model.eval(), cfg.train_dataloader, max_images_per_class=2,
        num_iters=5)['prototypes']
    assert torch.allclose(record['prototypes'], expected, atol=1e-5)

    out = str(tmp_path / 'out' / 'protos.pth')
    save_prototype_file(out, record)
    bank = MODELS.build(
        dict(type='PrototypeBank', in_channels=[8, 16, 32, 64],
             num_classes=NUM_CLASSES, embed_dim=D, num_prototypes=K,
             init_prototypes=out))
    bank.init_weights()
    assert torch.allclose(bank.prototypes, record['prototypes'], atol=1e-6)


def test_config_with_two_prototype_init_hooks_raises(tmp_path):
    cfg_file = str(tmp_path / 'two_hooks.py')
    Config(dict(custom_hooks=[dict(type='PrototypeInitHook')] * 2)).dump(
        cfg_file)
    with pytest.raises(ValueError, match='2 PrototypeInitHook entries'):
        build_prototype_bank_from_config(cfg_file)


def test_tool_passes_its_options_on(data_root, tmp_path):
    _, cfg_file, _, ckpt = write_config_and_checkpoint(data_root, tmp_path)
    out = str(tmp_path / 'protos.pth')
    proc = subprocess.run(
        [sys.executable, 'tools/build_prototype_bank.py', cfg_file, ckpt,
         '--out', out, '--device', 'cpu', '--max-images-per-class', '3',
         '--num-iters', '4', '--tissue-threshold', '255', '--cfg-options',
         'custom_hooks.0.seed=7'],
        cwd=REPO_ROOT, env=dict(os.environ, PYTHONPATH=REPO_ROOT),
        capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    saved = torch.load(out, weights_only=True)
    assert saved['prototypes'].shape == (NUM_CLASSES, K, D)
    assert saved['meta'] == dict(
        max_images_per_class=3, num_iters=4, seed=7, tissue_threshold=255.0,
        config=cfg_file, checkpoint=ckpt)
