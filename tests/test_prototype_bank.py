"""PrototypeBank: shapes, similarity, EMA math, file init, checkpoints."""
import torch
import torch.nn.functional as F
import pytest
from mmengine.runner import load_checkpoint, save_checkpoint
from mmseg.registry import MODELS

from protoprompt_mm.models.necks import (PromptedFeatures, PrototypeBank,
                                         as_prompted_features)


def make_bank(**kwargs) -> PrototypeBank:
    cfg = dict(type='PrototypeBank', in_channels=[8, 16], num_classes=3,
               embed_dim=6, num_prototypes=2)
    cfg.update(kwargs)
    return MODELS.build(cfg)


def test_forward_layout_and_shapes():
    bank = make_bank()
    feats = (torch.randn(2, 8, 16, 16), torch.randn(2, 16, 8, 8))
    out = bank(feats)
    assert isinstance(out, PromptedFeatures)
    assert len(out) == 5
    assert out[0] is feats[0] and out[1] is feats[1]
    assert out.embedding.shape == (2, 6, 16, 16)
    assert torch.allclose(out.embedding.norm(dim=1), torch.ones(2, 16, 16),
                          atol=1e-5)
    assert out.similarity.shape == (2, 3, 16, 16)
    assert out.prototypes.shape == (3, 2, 6)


@pytest.mark.parametrize('rebuild', [tuple, lambda x: [t for t in x]])
def test_rebuilt_output_is_recognised(rebuild):
    bank = make_bank()
    out = bank((torch.randn(2, 8, 16, 16), torch.randn(2, 16, 8, 8)))
    again = as_prompted_features(rebuild(out), 'SomeHead')
    assert isinstance(again, PromptedFeatures)
    assert all(a is b for a, b in zip(again, out)) and len(again) == len(out)
    assert again.embedding is out.embedding
    assert again.prototypes is out.prototypes


def test_other_inputs_are_refused_with_what_was_got():
    bank = make_bank()
    out = bank((torch.randn(2, 8, 16, 16), torch.randn(2, 16, 8, 8)))
    # Prototypes of the wrong dim: not the neck's layout.
    wrong = (*out[:-1], torch.randn(3, 2, 5))
    with pytest.raises(TypeError, match=r'SomeHead needs the PromptedFeatures'
                       r'.*got a tuple of 5 entries of shapes .*\(3, 2, 5\)'):
        as_prompted_features(wrong, 'SomeHead')
    with pytest.raises(TypeError, match=r'got a single Tensor of shape '
                       r'\(2, 8, 16, 16\)'):
        as_prompted_features(out[0], 'SomeHead')
    with pytest.raises(TypeError, match='got a dict'):
        as_prompted_features(dict(a=out[0]), 'SomeHead')


def test_similarity_is_max_cosine_over_sub_prototypes():
    bank = make_bank()
    feats = (torch.randn(1, 8, 4, 4), torch.randn(1, 16, 2, 2))
    out = bank(feats)
    emb = out.embedding[0, :, 1, 2]
    protos = F.normalize(bank.prototypes, dim=-1)
    expected = (protos @ emb).max(dim=1).values
    assert torch.allclose(out.similarity[0, :, 1, 2], expected, atol=1e-5)


def test_in_index_selects_levels_and_validates():
    bank = make_bank(in_index=[1])
    out = bank((torch.randn(1, 8, 16, 16), torch.randn(1, 16, 8, 8)))
    assert out.embedding.shape[2:] == (8, 8)
    with pytest.raises(ValueError, match='in_index'):
        make_bank(in_index=[2])
    with pytest.raises(ValueError, match='feature levels'):
        bank((torch.randn(1, 8, 16, 16), ))


def test_learned_prototypes_get_gradients():
    bank = make_bank(update_mode='learned')
    assert isinstance(bank.prototypes, torch.nn.Parameter)
    out = bank((torch.randn(1, 8, 4, 4), torch.randn(1, 16, 2, 2)))
    out.similarity.sum().backward()
    assert bank.prototypes.grad is not None
    assert bank.prototypes.grad.abs().sum() > 0


def test_bad_mode_and_momentum_rejected():
    with pytest.raises(ValueError, match='update_mode'):
        make_bank(update_mode='ema')
    with pytest.raises(ValueError, match='momentum'):
        make_bank(update_mode='momentum', momentum=1.0)
    with pytest.raises(RuntimeError, match='momentum'):
        make_bank(update_mode='learned').momentum_update(
            torch.randn(1, 6, 2, 2), torch.zeros(1, 2, 2, dtype=torch.long))


def test_momentum_update_matches_hand_computation():
    bank = make_bank(in_channels=[2], num_classes=2, embed_dim=2,
                     num_prototypes=2, update_mode='momentum', momentum=0.5)
    assert 'prototypes' in dict(bank.named_buffers())
    bank.load_prototypes(torch.tensor([[[1., 0.], [0., 1.]],
                                       [[-1., 0.], [0., -1.]]]))
    s = 2 ** -0.5
    # Pixels (labels): a=(1,0) class 0, b=(s,s) class 0 (tie -> k=0),
    # c=(0,1) class 0 -> k=1, d=(-1,0) class 1 -> k=0, e ignored (255).
    emb = torch.tensor([[1., 0.], [s, s], [0., 1.], [-1., 0.], [0., 1.]])
    embedding = emb.t().reshape(1, 2, 1, 5)
    labels = torch.tensor([[[0, 0, 0, 1, 255]]])
    bank.momentum_update(embedding, labels)

    def ema(old, mean):
        return F.normalize(0.5 * old + 0.5 * F.normalize(mean, dim=0), dim=0)

    expected = torch.stack([
        torch.stack([ema(torch.tensor([1., 0.]), torch.tensor([1 + s, s])),
                     ema(torch.tensor([0., 1.]), torch.tensor([0., 1.]))]),
        torch.stack([ema(torch.tensor([-1., 0.]), torch.tensor([-1., 0.])),
                     torch.tensor([0., -1.])]),  # no pixel: unchanged
    ])
    assert torch.allclose(bank.prototypes, expected, atol=1e-5)
    assert int(bank.num_updates) == 1


def test_momentum_update_resizes_labels_and_skips_unconfident():
    bank = make_bank(update_mode='momentum', min_similarity=1.1)
    before = bank.prototypes.clone()
    emb = F.normalize(torch.randn(2, 6, 4, 4), dim=1)
    bank.momentum_update(emb, torch.zeros(2, 1, 16, 16, dtype=torch.long))
    # Cosine can't reach 1.1: nothing is confident, nothing changes.
    assert torch.equal(bank.prototypes, before)


def test_momentum_update_takes_labels_with_or_without_channel_dim():
    emb = F.normalize(torch.randn(2, 6, 4, 4), dim=1)
    labels = torch.randint(0, 3, (2, 4, 4))
    labels[0, 0] = 255
    big = labels.repeat_interleave(4, 1).repeat_interleave(4, 2)
    results = []
    for label in (labels, big, big[:, None]):
        torch.manual_seed(0)
        bank = make_bank(update_mode='momentum', momentum=0.5)
        bank.momentum_update(emb, label)
        results.append(bank.prototypes)
    torch.manual_seed(0)
    before = make_bank(update_mode='momentum').prototypes
    assert not torch.equal(results[0], before)
    assert torch.equal(results[0], results[1])
    assert torch.equal(results[0], results[2])


def test_momentum_update_does_not_break_backward():
    bank = make_bank(update_mode='momentum')
    feats = (torch.randn(1, 8, 4, 4, requires_grad=True),
             torch.randn(1, 16, 2, 2))
    out = bank(feats)
    loss = out.similarity.sum()
    bank.momentum_update(out.embedding, torch.zeros(1, 4, 4, dtype=torch.long))
    loss.backward()  # the buffer was replaced, not modified in place
    assert feats[0].grad is not None


def test_prototype_file_init_and_shape_check(tmp_path):
    protos = torch.randn(3, 2, 6)
    path = tmp_path / 'bank.pth'
    torch.save({'prototypes': protos}, path)
    bank = make_bank(init_prototypes=str(path))
    bank.init_weights()
    assert torch.allclose(bank.prototypes, F.normalize(protos, dim=-1))

    torch.save({'prototypes': torch.randn(3, 5, 6)}, path)
    bank = make_bank(init_prototypes=str(path))
    with pytest.raises(ValueError, match=r'\(3, 2, 6\)'):
        bank.init_weights()
    torch.save({'centres': protos}, path)
    with pytest.raises(KeyError, match='bank.pth'):
        make_bank(init_prototypes=str(path)).init_weights()


@pytest.mark.parametrize('update', ['learned', 'momentum'])
def test_checkpoint_round_trip(tmp_path, update):
    bank = make_bank(update_mode=update)
    if update == 'momentum':
        bank.momentum_update(
            F.normalize(torch.randn(1, 6, 4, 4), dim=1),
            torch.randint(0, 3, (1, 4, 4)))
    path = str(tmp_path / 'ckpt.pth')
    save_checkpoint({'state_dict': bank.state_dict()}, path)
    fresh = make_bank(update_mode=update)
    assert not torch.equal(fresh.prototypes, bank.prototypes)
    load_checkpoint(fresh, path, map_location='cpu', strict=True)
    assert torch.equal(fresh.prototypes, bank.prototypes)
    assert torch.equal(fresh.num_updates, bank.num_updates)
