"""PromptFusionHead: shape contract, prompting switches, loss dispatch."""
import pytest
import torch
import torch.nn as nn
from mmengine.structures import PixelData
from mmseg.registry import MODELS
from mmseg.structures import SegDataSample

from protoprompt_mm.models.necks import PromptedFeatures

NUM_CLASSES, EMBED_DIM, K = 3, 8, 2


def make_head(**kwargs):
    cfg = dict(
        type='PromptFusionHead',
        in_channels=[8, 16],
        in_index=[0, 1],
        input_transform='resize_concat',
        channels=12,
        embed_dim=EMBED_DIM,
        num_attn_heads=2,
        num_classes=NUM_CLASSES,
        norm_cfg=dict(type='BN'),
        dropout_ratio=0.0)
    cfg.update(kwargs)
    return MODELS.build(cfg)


def make_inputs(batch=2, prototypes=None):
    feats = (torch.randn(batch, 8, 8, 8), torch.randn(batch, 16, 4, 4))
    embedding = nn.functional.normalize(
        torch.randn(batch, EMBED_DIM, 8, 8), dim=1)
    if prototypes is None:
        prototypes = nn.functional.normalize(
            torch.randn(NUM_CLASSES, K, EMBED_DIM), dim=-1)
    similarity = torch.einsum('bdhw,nkd->bnkhw', embedding,
                              prototypes).amax(2)
    return PromptedFeatures(feats, embedding, similarity, prototypes)


def make_samples(batch=2, size=32):
    samples = []
    for _ in range(batch):
        sample = SegDataSample()
        sample.gt_sem_seg = PixelData(
            data=torch.randint(0, NUM_CLASSES, (1, size, size)))
        sample.set_metainfo(dict(img_shape=(size, size),
                                 pad_shape=(size, size)))
        samples.append(sample)
    return samples


def randomise(head):
    """Move the zero-initialised prompt layers away from identity."""
    for name in ('attn_out', 'sim_gate'):
        if hasattr(head, name):
            nn.init.normal_(getattr(head, name).weight, std=0.5)


def test_eval_forward_returns_plain_tensor():
    head = make_head().eval()
    out = head(make_inputs())
    assert type(out) is torch.Tensor
    assert out.shape == (2, NUM_CLASSES, 8, 8)
    pred = head.predict(make_inputs(), [dict(img_shape=(32, 32))], None)
    assert type(pred) is torch.Tensor
    assert pred.shape == (2, NUM_CLASSES, 32, 32)


def test_needs_prototype_bank_output():
    head = make_head()
    with pytest.raises(TypeError, match='PrototypeBank'):
        head((torch.randn(1, 8, 8, 8), torch.randn(1, 16, 4, 4)))


def test_prompts_are_identity_at_init_and_then_matter():
    torch.manual_seed(0)
    head = make_head().eval()
    inputs = make_inputs()
    other = make_inputs(prototypes=nn.functional.normalize(
        torch.randn(NUM_CLASSES, K, EMBED_DIM), dim=-1))
    other = PromptedFeatures(inputs.feats, inputs.embedding,
                             other.similarity, other.prototypes)
    assert torch.allclose(head(inputs), head(other), atol=1e-6)
    randomise(head)
    assert not torch.allclose(head(inputs), head(other), atol=1e-4)


def test_switches_remove_the_prompts():
    head = make_head(use_cross_attention=False,
                     use_similarity_reweight=False).eval()
    assert not hasattr(head, 'query_proj') and not hasattr(head, 'sim_gate')
    inputs = make_inputs()
    other = make_inputs(prototypes=-inputs.prototypes)
    other = PromptedFeatures(inputs.feats, inputs.embedding,
                             other.similarity, other.prototypes)
    assert torch.equal(head(inputs), head(other))

    only_gate = make_head(use_cross_attention=False).eval()
    randomise(only_gate)
    assert not torch.allclose(only_gate(inputs), only_gate(other), atol=1e-4)


def test_embed_dim_must_split_into_heads():
    with pytest.raises(ValueError, match='num_attn_heads'):
        make_head(num_attn_heads=3)


class RecordingLoss(nn.Module):
    """A loss that asks for prototypes and records what it received."""
    requires_prototypes = True
    loss_name = 'loss_record'

    def forward(self, pred, target, prototypes=None, ignore_index=255,
                **kwargs):
        self.seen = (pred, target, prototypes, ignore_index)
        return pred.sum() * 0 + 1.0


def test_loss_dispatch_passes_embeddings_and_prototypes():
    head = make_head()
    recorder = RecordingLoss()
    head.loss_decode = nn.ModuleList([head.loss_decode, recorder])
    inputs = make_inputs()
    losses = head.loss(inputs, make_samples(), None)
    assert set(losses) == {'loss_ce', 'loss_record', 'acc_seg'}
    pred, target, prototypes, ignore_index = recorder.seen
    assert pred is inputs.embedding
    assert prototypes is inputs.prototypes
    assert target.shape == (2, 32, 32) and ignore_index == 255
    losses['loss_ce'].backward()
    assert head.conv_seg.weight.grad is not None


def test_same_named_losses_are_summed():
    head = make_head(loss_decode=[
        dict(type='CrossEntropyLoss', loss_weight=1.0),
        dict(type='CrossEntropyLoss', loss_weight=2.0)
    ])
    single = make_head(loss_decode=dict(type='CrossEntropyLoss',
                                        loss_weight=3.0))
    single.load_state_dict(head.state_dict())
    inputs, samples = make_inputs(), make_samples()
    head.eval(), single.eval()
    assert torch.allclose(
        head.loss(inputs, samples, None)['loss_ce'],
        single.loss(inputs, samples, None)['loss_ce'])
