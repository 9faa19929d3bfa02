"""Backbone weight conversion: every source layout reaches our backbones.

Each test writes a checkpoint in a published layout (random tensors under
the real names and shapes), converts it, builds a backbone through
``init_cfg=dict(type='Pretrained', ...)`` + ``init_weights()`` and compares
the backbone's tensors with the source tensors they must come from.
"""
import copy
import os
import os.path as osp
import subprocess
import sys
from typing import Dict, Sequence

import pytest
import torch
import torchvision
from mmengine.registry import init_default_scope
from mmpretrain.registry import MODELS as MMPRETRAIN_MODELS
from mmseg.registry import MODELS
from torch import Tensor

import protoprompt_mm  # noqa: F401
from protoprompt_mm.utils import load_config
from protoprompt_mm.utils.weight_conversion import (check_backbone_keys,
                                                    convert_checkpoint,
                                                    convert_state_dict,
                                                    read_state_dict)

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
MIT_STAGE1 = 'configs/protoprompt/stage1_protocam_mit-b1_bcss-wsss.py'
R18_STAGE1 = 'configs/protoprompt/stage1_protocam_r18_bcss-wsss.py'
MMPRETRAIN_CFG = 'configs/protoprompt/protoprompt_mmpretrain-r18_synthetic.py'
# MiT-B1: stage widths, blocks per stage, attention reduction, patch sizes.
MIT_B1 = dict(dims=(64, 128, 320, 512), depths=(2, 2, 2, 2),
              sr_ratios=(8, 4, 2, 1), patches=(7, 3, 3, 3))


def mit_stage_tensors(dim: int, in_dim: int, patch: int, sr: int,
                      depth: int) -> Dict[str, Dict[str, Tensor]]:
    """Random tensors of one MiT stage, named by part (layout-neutral)."""
    hidden = 4 * dim
    embed = dict(proj_w=torch.randn(dim, in_dim, patch, patch),
                 proj_b=torch.randn(dim), norm_w=torch.randn(dim),
                 norm_b=torch.randn(dim))
    blocks = []
    for _ in range(depth):
        block = dict(
            norm1_w=torch.randn(dim), norm1_b=torch.randn(dim),
            q_w=torch.randn(dim, dim), q_b=torch.randn(dim),
            k_w=torch.randn(dim, dim), k_b=torch.randn(dim),
            v_w=torch.randn(dim, dim), v_b=torch.randn(dim),
            proj_w=torch.randn(dim, dim), proj_b=torch.randn(dim),
            norm2_w=torch.randn(dim), norm2_b=torch.randn(dim),
            fc1_w=torch.randn(hidden, dim), fc1_b=torch.randn(hidden),
            dw_w=torch.randn(hidden, 1, 3, 3), dw_b=torch.randn(hidden),
            fc2_w=torch.randn(dim, hidden), fc2_b=torch.randn(dim))
        if sr > 1:
            block.update(sr_w=torch.randn(dim, dim, sr, sr),
                         sr_b=torch.randn(dim), srn_w=torch.randn(dim),
                         srn_b=torch.randn(dim))
        blocks.append(block)
    return dict(embed=embed, blocks=blocks, norm=dict(
        w=torch.randn(dim), b=torch.randn(dim)))


def random_mit(dims: Sequence[int], depths: Sequence[int],
               sr_ratios: Sequence[int], patches: Sequence[int]) -> list:
    """Per-stage random MiT tensors (see :func:`mit_stage_tensors`)."""
    torch.manual_seed(0)
    in_dims = (3, *dims[:-1])
    return [
        mit_stage_tensors(*args)
        for args in zip(dims, in_dims, patches, sr_ratios, depths)
    ]


def nvlabs_layout(stages: list) -> Dict[str, Tensor]:
    """The official SegFormer ``mit_b*.pth`` names (NVlabs/SegFormer)."""
    sd = {}
    for i, stage in enumerate(stages, start=1):
        e = stage['embed']
        sd.update({f'patch_embed{i}.proj.weight': e['proj_w'],
                   f'patch_embed{i}.proj.bias': e['proj_b'],
                   f'patch_embed{i}.norm.weight': e['norm_w'],
                   f'patch_embed{i}.norm.bias': e['norm_b']})
        for j, b in enumerate(stage['blocks']):
            p = f'block{i}.{j}.'
            sd.update({
                p + 'norm1.weight': b['norm1_w'],
                p + 'norm1.bias': b['norm1_b'],
                p + 'attn.q.weight': b['q_w'],
                p + 'attn.q.bias': b['q_b'],
                p + 'attn.kv.weight': torch.cat([b['k_w'], b['v_w']]),
                p + 'attn.kv.bias': torch.cat([b['k_b'], b['v_b']]),
                p + 'attn.proj.weight': b['proj_w'],
                p + 'attn.proj.bias': b['proj_b'],
                p + 'norm2.weight': b['norm2_w'],
                p + 'norm2.bias': b['norm2_b'],
                p + 'mlp.fc1.weight': b['fc1_w'],
                p + 'mlp.fc1.bias': b['fc1_b'],
                p + 'mlp.dwconv.dwconv.weight': b['dw_w'],
                p + 'mlp.dwconv.dwconv.bias': b['dw_b'],
                p + 'mlp.fc2.weight': b['fc2_w'],
                p + 'mlp.fc2.bias': b['fc2_b'],
            })
            if 'sr_w' in b:
                sd.update({p + 'attn.sr.weight': b['sr_w'],
                           p + 'attn.sr.bias': b['sr_b'],
                           p + 'attn.norm.weight': b['srn_w'],
                           p + 'attn.norm.bias': b['srn_b']})
        sd[f'norm{i}.weight'] = stage['norm']['w']
        sd[f'norm{i}.bias'] = stage['norm']['b']
    sd['head.weight'] = torch.randn(1000, stages[-1]['norm']['w'].numel())
    sd['head.bias'] = torch.randn(1000)
    return sd


def segformer_layout(stages: list) -> Dict[str, Tensor]:
    """The ``segformer`` names of the model hubs (SegformerForImage-
    Classification, e.g. nvidia/mit-b1)."""
    sd = {}
    enc = 'segformer.encoder.'
    for i, stage in enumerate(stages):
        e = stage['embed']
        sd.update({f'{enc}patch_embeddings.{i}.proj.weight': e['proj_w'],
                   f'{enc}patch_embeddings.{i}.proj.bias': e['proj_b'],
                   f'{enc}patch_embeddings.{i}.layer_norm.weight':
                   e['norm_w'],
                   f'{enc}patch_embeddings.{i}.layer_norm.bias': e['norm_b']})
        for j, b in enumerate(stage['blocks']):
            p = f'{enc}block.{i}.{j}.'
            a = p + 'attention.self.'
            sd.update({
                p + 'layer_norm_1.weight': b['norm1_w'],
                p + 'layer_norm_1.bias': b['norm1_b'],
                a + 'query.weight': b['q_w'], a + 'query.bias': b['q_b'],
                a + 'key.weight': b['k_w'], a + 'key.bias': b['k_b'],
                a + 'value.weight': b['v_w'], a + 'value.bias': b['v_b'],
                p + 'attention.output.dense.weight': b['proj_w'],
                p + 'attention.output.dense.bias': b['proj_b'],
                p + 'layer_norm_2.weight': b['norm2_w'],
                p + 'layer_norm_2.bias': b['norm2_b'],
                p + 'mlp.dense1.weight': b['fc1_w'],
                p + 'mlp.dense1.bias': b['fc1_b'],
                p + 'mlp.dwconv.dwconv.weight': b['dw_w'],
                p + 'mlp.dwconv.dwconv.bias': b['dw_b'],
                p + 'mlp.dense2.weight': b['fc2_w'],
                p + 'mlp.dense2.bias': b['fc2_b'],
            })
            if 'sr_w' in b:
                sd.update({a + 'sr.weight': b['sr_w'],
                           a + 'sr.bias': b['sr_b'],
                           a + 'layer_norm.weight': b['srn_w'],
                           a + 'layer_norm.bias': b['srn_b']})
        sd[f'{enc}layer_norm.{i}.weight'] = stage['norm']['w']
        sd[f'{enc}layer_norm.{i}.bias'] = stage['norm']['b']
    sd['classifier.weight'] = torch.randn(1000,
                                          stages[-1]['norm']['w'].numel())
    sd['classifier.bias'] = torch.randn(1000)
    return sd


def assert_mit_backbone_equals(backbone, stages: list) -> None:
    """Every tensor of mmseg's MixVisionTransformer is its source tensor."""
    for i, stage in enumerate(stages):
        e, layer = stage['embed'], backbone.layers[i]
        pairs = [(layer[0].projection.weight, e['proj_w']),
                 (layer[0].norm.weight, e['norm_w']),
                 (layer[0].norm.bias, e['norm_b']),
                 (layer[2].weight, stage['norm']['w'])]
        for n, (got, want) in enumerate(pairs):
            assert torch.equal(got, want), f'stage {i} embedding / norm #{n}'
        for j, b in enumerate(stage['blocks']):
            block = layer[1][j]
            attn = block.attn.attn
            pairs = [
                (block.norm1.bias, b['norm1_b']),
                (attn.in_proj_weight,
                 torch.cat([b['q_w'], b['k_w'], b['v_w']])),
                (attn.in_proj_bias,
                 torch.cat([b['q_b'], b['k_b'], b['v_b']])),
                (attn.out_proj.weight, b['proj_w']),
                (block.norm2.weight, b['norm2_w']),
                (block.ffn.layers[0].weight, b['fc1_w'][..., None, None]),
                (block.ffn.layers[1].weight, b['dw_w']),
                (block.ffn.layers[4].weight, b['fc2_w'][..., None, None]),
                (block.ffn.layers[4].bias, b['fc2_b']),
            ]
            if 'sr_w' in b:
                pairs += [(block.attn.sr.weight, b['sr_w']),
                          (block.attn.norm.weight, b['srn_w'])]
            for n, (got, want) in enumerate(pairs):
                assert torch.equal(got, want), f'stage {i} block {j} #{n}'


def build_with_pretrained(config: str, checkpoint: str):
    """A config's model, with ``pretrained=checkpoint``, init_weights run."""
    init_default_scope('mmseg')
    cfg = load_config(osp.join(REPO, config), dict(pretrained=checkpoint))
    assert cfg.model.backbone.init_cfg == dict(type='Pretrained',
                                               checkpoint=checkpoint)
    model = MODELS.build(cfg.model)
    model.init_weights()
    return model


def mmpretrain_classifier(backbone: dict):
    """A random mmpretrain ImageClassifier (backbone + GAP + linear head)."""
    torch.manual_seed(0)
    return MMPRETRAIN_MODELS.build(
        dict(type='ImageClassifier', _scope_='mmpretrain', backbone=backbone,
             neck=dict(type='GlobalAveragePooling'),
             head=dict(type='LinearClsHead', num_classes=10,
                       in_channels=512)))


def randomize_bn_statistics(module: torch.nn.Module) -> None:
    """Non-default BN buffers, so that copied statistics are detectable."""
    for name, buf in module.named_buffers():
        if name.endswith(('running_mean', 'running_var')):
            buf.copy_(torch.rand_like(buf) + 0.5)


@pytest.mark.parametrize('layout,make', [('mit', nvlabs_layout),
                                         ('timm-mit', segformer_layout)])
def test_mit_layouts_load_into_the_mit_b1_config(tmp_path, layout, make):
    stages = random_mit(**MIT_B1)
    src, dst = str(tmp_path / 'src.pth'), str(tmp_path / 'mmseg.pth')
    torch.save(make(stages), src)
    converted = convert_checkpoint(src, dst, layout)
    model = build_with_pretrained(MIT_STAGE1, dst)
    check_backbone_keys(converted, model.backbone, dst)
    assert_mit_backbone_equals(model.backbone, stages)


def test_official_mit_file_wrapped_and_prefixed_is_read(tmp_path):
    """A ``state_dict`` wrapper and DataParallel's ``module.`` prefix."""
    sd = nvlabs_layout(random_mit(**MIT_B1))
    path = str(tmp_path / 'wrapped.pth')
    torch.save(dict(state_dict={f'module.{k}': v for k, v in sd.items()},
                    meta=dict(epoch=3)), path)
    read = read_state_dict(path)
    assert set(read) == set(sd)
    assert torch.equal(read['block1.0.attn.q.weight'],
                       sd['block1.0.attn.q.weight'])


def test_torchvision_resnet_loads_into_mmseg_and_mmpretrain_resnet(tmp_path):
    torch.manual_seed(0)
    source = torchvision.models.resnet18(weights=None)
    randomize_bn_statistics(source)
    src, dst = str(tmp_path / 'resnet18.pth'), str(tmp_path / 'r18.pth')
    torch.save(source.state_dict(), src)
    converted = convert_checkpoint(src, dst, 'torchvision-resnet')
    assert 'fc.weight' not in converted
    mmseg_resnet = MODELS.build(
        dict(type='ResNet', depth=18,
             init_cfg=dict(type='Pretrained', checkpoint=dst)))
    mmseg_resnet.init_weights()
    mmpretrain_model = build_with_pretrained(MMPRETRAIN_CFG, dst)
    for backbone in (mmseg_resnet, mmpretrain_model.backbone):
        check_backbone_keys(converted, backbone)
        assert torch.equal(backbone.conv1.weight, source.conv1.weight)
        assert torch.equal(backbone.layer1[0].conv2.weight,
                           source.layer1[0].conv2.weight)
        assert torch.equal(backbone.layer3[0].downsample[0].weight,
                           source.layer3[0].downsample[0].weight)
        assert torch.equal(backbone.layer4[1].bn2.running_var,
                           source.layer4[1].bn2.running_var)
        assert torch.equal(backbone.bn1.running_mean,
                           source.bn1.running_mean)


def test_torchvision_resnet_does_not_fit_the_deep_stem(tmp_path):
    src, dst = str(tmp_path / 'resnet18.pth'), str(tmp_path / 'r18.pth')
    torch.save(torchvision.models.resnet18(weights=None).state_dict(), src)
    v1c = MODELS.build(dict(type='ResNetV1c', depth=18))
    with pytest.raises(ValueError, match=r'missing: stem\.0\.weight'):
        convert_checkpoint(src, dst, 'torchvision-resnet', v1c)
    assert not osp.exists(dst)


def test_mmpretrain_resnetv1c_loads_into_the_r18_config(tmp_path):
    """The deep stem's ConvModules (stem.i.conv / bn) become mmseg's plain
    Sequential (stem.3i / stem.3i+1); everything else keeps its name."""
    classifier = mmpretrain_classifier(dict(type='ResNetV1c', depth=18))
    randomize_bn_statistics(classifier)
    src, dst = str(tmp_path / 'cls.pth'), str(tmp_path / 'r18.pth')
    torch.save(dict(meta=dict(), state_dict=classifier.state_dict()), src)
    converted = convert_checkpoint(src, dst, 'mmpretrain')
    model = build_with_pretrained(R18_STAGE1, dst)
    check_backbone_keys(converted, model.backbone, dst)
    source, target = classifier.backbone, model.backbone
    for i in range(3):
        assert torch.equal(target.stem[3 * i].weight,
                           source.stem[i].conv.weight)
        assert torch.equal(target.stem[3 * i + 1].running_var,
                           source.stem[i].bn.running_var)
    assert torch.equal(target.layer2[0].conv1.weight,
                       source.layer2[0].conv1.weight)
    assert torch.equal(target.layer4[1].bn2.running_mean,
                       source.layer4[1].bn2.running_mean)


def test_mmpretrain_resnet_loads_into_the_mmpretrain_config(tmp_path):
    classifier = mmpretrain_classifier(dict(type='ResNet', depth=18))
    src, dst = str(tmp_path / 'cls.pth'), str(tmp_path / 'r18.pth')
    torch.save(dict(state_dict=classifier.state_dict()), src)
    convert_checkpoint(src, dst, 'mmpretrain')
    backbone = build_with_pretrained(MMPRETRAIN_CFG, dst).backbone
    for key, value in classifier.backbone.state_dict().items():
        assert torch.equal(backbone.state_dict()[key], value), key


def test_wrong_layout_names_the_file_and_keys(tmp_path):
    src = str(tmp_path / 'mit_b1.pth')
    torch.save(nvlabs_layout(random_mit(**MIT_B1)), src)
    for layout in ('torchvision-resnet', 'timm-mit', 'mmpretrain'):
        with pytest.raises(ValueError, match=f'mit_b1.pth: .*{layout}'):
            convert_checkpoint(src, str(tmp_path / 'out.pth'), layout)
    with pytest.raises(ValueError, match='unknown source layout'):
        convert_state_dict({}, 'caffe')
    not_weights = str(tmp_path / 'list.pth')
    torch.save([1, 2], not_weights)
    with pytest.raises(ValueError, match='list.pth: expected a state dict'):
        read_state_dict(not_weights)
    with pytest.raises(FileNotFoundError, match='absent.pth'):
        read_state_dict(str(tmp_path / 'absent.pth'))


def test_incomplete_attention_is_an_error():
    sd = nvlabs_layout(random_mit(**MIT_B1))
    del sd['block2.1.attn.kv.weight']
    with pytest.raises(ValueError, match=r'layers\.1\.1\.1\.attn\.attn\.'
                       r'in_proj_weight has the parts \[\'q\'\]'):
        convert_state_dict(sd, 'mit', 'mit_b1.pth')


def test_mit_b2_does_not_fit_the_b1_backbone(tmp_path):
    b2 = dict(MIT_B1, depths=(3, 4, 6, 3))
    converted = convert_state_dict(nvlabs_layout(random_mit(**b2)), 'mit')
    backbone = MODELS.build(copy.deepcopy(load_config(
        osp.join(REPO, MIT_STAGE1)).model.backbone))
    with pytest.raises(ValueError, match=r'unexpected: layers\.0\.1\.2\.'):
        check_backbone_keys(converted, backbone, 'mit_b2.pth')


def test_pretrained_url_is_refused():
    with pytest.raises(ValueError, match='nothing is downloaded'):
        load_config(osp.join(REPO, MIT_STAGE1),
                    dict(pretrained='open-mmlab://resnet18_v1c'))


def test_cli_converts_and_checks_against_a_config(tmp_path):
    src, dst = str(tmp_path / 'mit_b1.pth'), str(tmp_path / 'out.pth')
    torch.save(nvlabs_layout(random_mit(**MIT_B1)), src)
    proc = subprocess.run(
        [sys.executable, 'tools/convert_weights.py', src, dst, '--from',
         'mit', '--config', MIT_STAGE1],
        cwd=REPO, capture_output=True, text=True, timeout=120,
        env=dict(os.environ, OMP_NUM_THREADS='1'))
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert f'checked against {MIT_STAGE1}' in proc.stdout + proc.stderr
    saved = torch.load(dst, weights_only=False)
    assert saved['meta'] == dict(converted_from='mit', source=src)
    assert 'layers.3.1.1.attn.attn.in_proj_weight' in saved['state_dict']
