"""Tests of MultiLevelFeatureCapture."""
import pytest
import torch
from mmseg.registry import MODELS


def build(backbone: dict, layers, frozen: bool = False):
    return MODELS.build(
        dict(
            type='MultiLevelFeatureCapture',
            backbone=backbone,
            layers=layers,
            frozen=frozen))


def hook_count(module: torch.nn.Module) -> int:
    return sum(len(m._forward_hooks) for m in module.modules())


def test_mmseg_resnet_levels_and_no_hook_leak():
    model = build(dict(type='ResNetV1c', depth=18), ['layer3', 'layer2'])
    model.train()
    x = torch.randn(2, 3, 64, 64)
    for _ in range(2):
        out = model(x)
    assert isinstance(out, tuple)
    assert [tuple(o.shape) for o in out] == [(2, 256, 4, 4), (2, 128, 8, 8)]
    assert hook_count(model) == 0
    # Same maps as the backbone's own outputs (eval: BN is deterministic).
    model.eval()
    ref = model.backbone(x)
    out = model(x)
    assert torch.allclose(out[0], ref[2]) and torch.allclose(out[1], ref[1])
    out[0].sum().backward()
    assert model.backbone.layer3[0].conv1.weight.grad is not None
    # Capture stops the backbone after the last wanted layer.
    assert model.backbone.layer4[0].conv1.weight.grad is None


def test_mmpretrain_resnet_inner_layer_frozen():
    model = build(
        dict(type='mmpretrain.ResNet', depth=18),
        ['layer1.0.conv1', 'layer4'],
        frozen=True)
    model.train()
    assert not model.backbone.training
    assert not any(p.requires_grad for p in model.parameters())
    out = model(torch.randn(1, 3, 64, 64))
    assert [tuple(o.shape) for o in out] == [(1, 64, 16, 16), (1, 512, 2, 2)]
    assert not out[1].requires_grad
    with torch.no_grad():
        assert model(torch.randn(1, 3, 32, 32))[1].shape == (1, 512, 1, 1)
    assert hook_count(model) == 0


def test_bad_layer_name_lists_available_names():
    with pytest.raises(ValueError, match=r"no submodule\(s\) \['layer9'\]; "
                       r'available names: stem, stem\.0'):
        build(dict(type='ResNetV1c', depth=18), ['layer2', 'layer9'])
    with pytest.raises(ValueError, match='duplicate layers'):
        build(dict(type='ResNetV1c', depth=18), ['layer2', 'layer2'])


def test_token_output_raises_and_cleans_up():
    model = build(
        dict(
            type='VisionTransformer',
            img_size=(32, 32),
            patch_size=16,
            embed_dims=32,
            num_layers=2,
            num_heads=2), ['layers.0'])
    with pytest.raises(
            RuntimeError, match=r"'layers.0' returned \(1, 5, 32\)"):
        model(torch.randn(1, 3, 32, 32))
    assert hook_count(model) == 0
