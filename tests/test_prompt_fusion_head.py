"""PromptFusionHead: shape contract, prompting switches, loss dispatch."""
import pytest
import torch
import torch.nn as nn
from mmengine.structures import PixelData
from mmseg.models.necks import FPN
from mmseg.registry import MODELS
from mmseg.structures import SegDataSample

from protoprompt_mm.models.losses import (PrototypeAwareLoss,
                                          PrototypeContrastiveLoss)
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


def test_after_fpn_says_what_it_got_and_what_to_configure():
    fpn = FPN(in_channels=[8, 16], out_channels=8, num_outs=2)
    levels = fpn([torch.randn(1, 8, 8, 8), torch.randn(1, 16, 4, 4)])
    with pytest.raises(TypeError) as error:
        make_head().loss(levels, make_samples(batch=1), None)
    message = str(error.value)
    assert 'PromptFusionHead needs the PromptedFeatures of a PrototypeBank' \
        in message
    assert 'got a tuple of 2 entries of shapes (1, 8, 8, 8), (1, 8, 4, 4)' \
        in message
    assert "neck=dict(type='PrototypeBank'" in message


@pytest.mark.parametrize('rebuild', [tuple, list, lambda x: [t for t in x]])
def test_rebuilt_neck_output_still_works(rebuild):
    torch.manual_seed(0)
    head = make_head().eval()
    randomise(head)
    inputs = make_inputs()
    rebuilt = rebuild(inputs)
    assert not isinstance(rebuilt, PromptedFeatures)
    assert torch.equal(head(rebuilt), head(inputs))
    recorder = RecordingLoss()
    head.loss_decode = nn.ModuleList([head.loss_decode, recorder])
    head.loss(rebuilt, make_samples(), None)
    assert recorder.seen['embedding'] is inputs.embedding
    assert recorder.seen['prototypes'] is inputs.prototypes


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


class RecordingLoss(PrototypeAwareLoss):
    """A prototype-aware loss that records what it received."""

    def __init__(self):
        super().__init__(1.0, 'mean', 'loss_record')

    def forward(self, embedding, seg_label, prototypes, weight=None,
                ignore_index=255, seg_logits=None):
        self.seen = dict(embedding=embedding, seg_label=seg_label,
                         prototypes=prototypes, weight=weight,
                         ignore_index=ignore_index, seg_logits=seg_logits)
        return embedding.sum() * 0 + 1.0


class TopHalfSampler:
    """A pixel sampler that keeps the top half of every label map."""

    def sample(self, seg_logit, seg_label):
        weight = torch.zeros(seg_label.squeeze(1).shape)
        weight[:, :weight.shape[1] // 2] = 1.0
        return weight


def test_loss_dispatch_passes_embeddings_and_prototypes():
    head = make_head()
    recorder = RecordingLoss()
    head.loss_decode = nn.ModuleList([head.loss_decode, recorder])
    inputs = make_inputs()
    losses = head.loss(inputs, make_samples(), None)
    assert set(losses) == {'loss_ce', 'loss_record', 'acc_seg'}
    seen = recorder.seen
    assert seen['embedding'] is inputs.embedding
    assert seen['prototypes'] is inputs.prototypes
    assert seen['seg_label'].shape == (2, 32, 32)
    assert seen['ignore_index'] == 255 and seen['weight'] is None
    assert seen['seg_logits'].shape == (2, NUM_CLASSES, 32, 32)
    losses['loss_ce'].backward()
    assert head.conv_seg.weight.grad is not None


def test_sampler_weights_reach_the_prototype_losses():
    torch.manual_seed(0)
    head = make_head(loss_decode=dict(type='PrototypeContrastiveLoss'))
    head.sampler = TopHalfSampler()
    inputs, samples = make_inputs(), make_samples()
    through_head = head.loss(inputs, samples, None)['loss_proto_contrast']

    labels = torch.stack([s.gt_sem_seg.data[0] for s in samples])
    weight = TopHalfSampler().sample(None, labels[:, None])
    loss_fn = PrototypeContrastiveLoss()
    weighted = loss_fn(inputs.embedding, labels, prototypes=inputs.prototypes,
                       weight=weight)
    unweighted = loss_fn(inputs.embedding, labels,
                         prototypes=inputs.prototypes)
    assert through_head.item() == pytest.approx(weighted.item(), rel=1e-6)
    assert through_head.item() != pytest.approx(unweighted.item(), rel=1e-3)


def test_loss_by_feat_without_prompts_names_the_loss():
    head = make_head(loss_decode=dict(type='PrototypeContrastiveLoss'))
    with pytest.raises(ValueError, match=r'PrototypeContrastiveLoss '
                       r'\(loss_proto_contrast\) needs pixel embeddings'):
        head.loss_by_feat(torch.randn(2, NUM_CLASSES, 8, 8), make_samples())


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
