"""Tests of PrototypeContrastiveLoss, RegionConsistencyLoss, their bases."""
import math

import pytest
import torch
from mmseg.registry import MODELS

import protoprompt_mm.models.losses  # noqa: F401  (registers the losses)
from protoprompt_mm.models.losses import (BaseLoss,
                                          MaskGuidedContrastiveLoss,
                                          PrototypeAwareLoss,
                                          PrototypeContrastiveLoss,
                                          RegionConsistencyLoss)

DEVICES = ['cpu'] + (['cuda'] if torch.cuda.is_available() else [])


def kl(mean, p):
    """KL(mean || p) for explicit 2-class probability tuples."""
    return sum(m * (math.log(m) - math.log(q)) for m, q in zip(mean, p))


# --------------------------------------------------------------------------
# PrototypeContrastiveLoss
# --------------------------------------------------------------------------


def contrastive_case():
    """1x2x2x2 embeddings, 2 classes x 1 prototype, one ignored pixel.

    Pixels: (1, 0) -> class 0, (0, 3) -> class 1, (1, 1) -> class 0,
    (3, -4) -> ignored. Prototypes (2, 0) and (0, 5) (normalised inside).
    """
    pred = torch.tensor([[[[1., 0.], [1., 3.]],
                          [[0., 3.], [1., -4.]]]], requires_grad=True)
    target = torch.tensor([[[0, 1], [0, 255]]])
    prototypes = torch.tensor([[[2., 0.]], [[0., 5.]]], requires_grad=True)
    return pred, target, prototypes


def contrastive_expected(temperature=0.5):
    """Per-pixel InfoNCE of ``contrastive_case`` computed by hand."""
    s = 1 / temperature  # logit of a perfectly aligned pixel
    aligned = math.log(math.exp(s) + math.exp(0)) - s
    diagonal = math.log(2.0)  # cos = 1/sqrt(2) to both prototypes
    return aligned, aligned, diagonal


def test_contrastive_hand_computed():
    pred, target, prototypes = contrastive_case()
    loss_fn = PrototypeContrastiveLoss(temperature=0.5, reduction='none')
    per_pixel = loss_fn(pred, target, prototypes=prototypes)
    expected = sorted(contrastive_expected())
    assert per_pixel.shape == (3, )
    assert sorted(per_pixel.tolist()) == pytest.approx(expected, rel=1e-5)

    mean = PrototypeContrastiveLoss(temperature=0.5)(
        pred, target, prototypes=prototypes)
    assert mean.item() == pytest.approx(sum(expected) / 3, rel=1e-5)
    total = PrototypeContrastiveLoss(temperature=0.5, reduction='sum')(
        pred, target, prototypes=prototypes)
    assert total.item() == pytest.approx(sum(expected), rel=1e-5)


def test_contrastive_downsamples_target():
    pred, target, prototypes = contrastive_case()
    big_target = target.repeat_interleave(2, 1).repeat_interleave(2, 2)
    assert big_target.shape == (1, 4, 4)
    loss = PrototypeContrastiveLoss(temperature=0.5)(
        pred, big_target, prototypes=prototypes)
    assert loss.item() == pytest.approx(
        sum(contrastive_expected()) / 3, rel=1e-5)


def test_contrastive_sub_prototypes_are_all_positives():
    pred = torch.tensor([[[[1.]], [[0.]]]])  # one pixel, embedding (1, 0)
    target = torch.tensor([[[0]]])
    prototypes = torch.tensor([[[1., 0.], [0., 1.]],
                               [[-1., 0.], [0., -1.]]])
    loss = PrototypeContrastiveLoss(temperature=1.0)(
        pred, target, prototypes=prototypes)
    e = math.e
    expected = math.log(e + 1 + 1 / e + 1) - math.log(e + 1)
    assert loss.item() == pytest.approx(expected, rel=1e-5)


def test_contrastive_per_class_cap_reproducible_and_uniform():
    torch.manual_seed(0)
    pred = torch.randn(1, 4, 3, 4)
    target = torch.full((1, 3, 4), 255)
    target.view(-1)[:10] = 0  # 10 pixels of class 0
    target.view(-1)[10:] = 1  # 2 pixels of class 1
    prototypes = torch.randn(2, 1, 4)
    capped = PrototypeContrastiveLoss(
        max_pixels_per_class=3, reduction='none')
    full = PrototypeContrastiveLoss(reduction='none')

    all_losses = full(pred, target, prototypes=prototypes)
    assert all_losses.numel() == 12
    class0_pool = set(round(v, 5) for v in all_losses[:10].tolist())

    torch.manual_seed(1)
    first = capped(pred, target, prototypes=prototypes)
    torch.manual_seed(1)
    second = capped(pred, target, prototypes=prototypes)
    assert first.numel() == 3 + 2  # capped class 0 + all of class 1
    assert torch.equal(first, second)
    # Output is ordered by class: class 0 samples first.
    assert set(round(v, 5) for v in first[:3].tolist()) <= class0_pool
    assert sorted(first[3:].tolist()) == pytest.approx(
        sorted(all_losses[10:].tolist()), rel=1e-5)

    seen = set()
    for seed in range(40):
        torch.manual_seed(seed)
        seen |= set(round(v, 5) for v in capped(
            pred, target, prototypes=prototypes)[:3].tolist())
    assert seen == class0_pool  # every class-0 pixel gets sampled


def test_contrastive_excludes_ignore_and_out_of_range_labels():
    pred, target, prototypes = contrastive_case()
    reference = PrototypeContrastiveLoss(temperature=0.5)(
        pred, target, prototypes=prototypes)
    for bad in (2, 7, -1, 100):
        relabeled = target.clone()
        relabeled[0, 1, 1] = bad
        loss = PrototypeContrastiveLoss(temperature=0.5, reduction='none')(
            pred, relabeled, prototypes=prototypes)
        assert loss.numel() == 3
        assert loss.mean().item() == pytest.approx(reference.item())
    # A custom, in-range ignore_index drops the class-1 pixel.
    loss = PrototypeContrastiveLoss(temperature=0.5)(
        pred, target, prototypes=prototypes, ignore_index=1)
    aligned, _, diagonal = contrastive_expected()
    assert loss.item() == pytest.approx((aligned + diagonal) / 2, rel=1e-5)

@pytest.mark.parametrize('reduction', ['mean', 'sum', 'none'])
def test_contrastive_no_valid_pixel(reduction):
    pred, _, prototypes = contrastive_case()
    target = torch.full((1, 2, 2), 255)
    loss = PrototypeContrastiveLoss(reduction=reduction)(
        pred, target, prototypes=prototypes)
    assert loss.requires_grad
    assert torch.isfinite(loss).all()
    assert loss.sum().item() == 0
    loss.sum().backward()
    assert torch.equal(pred.grad, torch.zeros_like(pred))
    assert torch.equal(prototypes.grad, torch.zeros_like(prototypes))


def test_contrastive_gradients_flow():
    pred, target, prototypes = contrastive_case()
    PrototypeContrastiveLoss(temperature=0.5)(
        pred, target, prototypes=prototypes).backward()
    assert pred.grad.abs().sum() > 0
    assert prototypes.grad.abs().sum() > 0
    assert torch.isfinite(pred.grad).all()
    # The ignored pixel receives no gradient.
    assert torch.equal(pred.grad[0, :, 1, 1], torch.zeros(2))


def test_contrastive_weight_and_loss_weight():
    pred, target, prototypes = contrastive_case()
    weight = torch.tensor([[[1., 2.], [3., 4.]]])
    weighted = PrototypeContrastiveLoss(temperature=0.5, reduction='sum')(
        pred, target, prototypes=prototypes, weight=weight)
    aligned0, aligned1, diagonal = contrastive_expected()
    assert weighted.item() == pytest.approx(
        1 * aligned0 + 2 * aligned1 + 3 * diagonal, rel=1e-5)

    base = PrototypeContrastiveLoss(temperature=0.5)(
        pred, target, prototypes=prototypes)
    scaled = PrototypeContrastiveLoss(temperature=0.5, loss_weight=2.5)(
        pred, target, prototypes=prototypes)
    assert scaled.item() == pytest.approx(2.5 * base.item(), rel=1e-6)


def test_contrastive_zero_weight_pixels_are_not_sampled():
    pred, target, prototypes = contrastive_case()
    # The class-1 pixel weighs 0: only the two class-0 pixels are drawn.
    weight = torch.tensor([[[2., 0.], [1., 1.]]])
    per_pixel = PrototypeContrastiveLoss(temperature=0.5, reduction='none')(
        pred, target, prototypes=prototypes, weight=weight)
    aligned0, _, diagonal = contrastive_expected()
    assert sorted(per_pixel.tolist()) == pytest.approx(
        sorted([2 * aligned0, diagonal]), rel=1e-5)
    mean = PrototypeContrastiveLoss(temperature=0.5)(
        pred, target, prototypes=prototypes, weight=weight)
    assert mean.item() == pytest.approx((2 * aligned0 + diagonal) / 2,
                                        rel=1e-5)


def test_contrastive_weight_is_resized_with_the_labels():
    pred, target, prototypes = contrastive_case()
    weight = torch.tensor([[[1., 2.], [3., 4.]]])
    big = [t.repeat_interleave(2, 1).repeat_interleave(2, 2)
           for t in (target, weight)]
    loss_fn = PrototypeContrastiveLoss(temperature=0.5, reduction='sum')
    assert loss_fn(pred, big[0], prototypes=prototypes,
                   weight=big[1]).item() == pytest.approx(
                       loss_fn(pred, target, prototypes=prototypes,
                               weight=weight).item(), rel=1e-6)


def test_contrastive_owned_prototypes_fallback():
    torch.manual_seed(0)
    loss_fn = PrototypeContrastiveLoss(
        num_classes=3, embed_dim=3, num_prototypes=2)
    assert isinstance(loss_fn.prototypes, torch.nn.Parameter)
    assert loss_fn.prototypes.shape == (3, 2, 3)
    assert any(p is loss_fn.prototypes for p in loss_fn.parameters())

    seg_logits = torch.randn(2, 3, 8, 8, requires_grad=True)
    seg_label = torch.randint(0, 3, (2, 8, 8))
    seg_label[:, :2] = 255
    loss = loss_fn(seg_logits, seg_label, weight=None, ignore_index=255)
    assert loss.dim() == 0 and torch.isfinite(loss)
    loss.backward()
    assert seg_logits.grad.abs().sum() > 0
    assert loss_fn.prototypes.grad.abs().sum() > 0


def test_contrastive_errors():
    pred, target, prototypes = contrastive_case()
    with pytest.raises(ValueError, match='prototypes'):
        PrototypeContrastiveLoss()(pred, target, weight=None,
                                   ignore_index=255)
    with pytest.raises(ValueError, match='channel dim'):
        PrototypeContrastiveLoss()(
            pred, target, prototypes=torch.randn(2, 1, 5))
    with pytest.raises(ValueError, match='together'):
        PrototypeContrastiveLoss(num_classes=3)
    with pytest.raises(ValueError, match='reduction'):
        PrototypeContrastiveLoss(reduction='avg')


# --------------------------------------------------------------------------
# RegionConsistencyLoss
# --------------------------------------------------------------------------


def logits_from_probs(probs):
    """(H, W, 2) nested probability lists -> (1, 2, H, W) logits."""
    return torch.tensor(probs).log().permute(2, 0, 1)[None].requires_grad_()


def test_region_hand_computed_two_regions():
    probs = [[(0.9, 0.1), (0.5, 0.5), (0.2, 0.8)],
             [(0.4, 0.6), (0.2, 0.8), (0.2, 0.8)]]
    target = torch.tensor([[[0, 0, 1], [1, 1, 1]]])
    mean_a, mean_b = (0.7, 0.3), (0.25, 0.75)
    expected = [[kl(mean_a, probs[0][0]), kl(mean_a, probs[0][1]),
                 kl(mean_b, probs[0][2])],
                [kl(mean_b, probs[1][0]), kl(mean_b, probs[1][1]),
                 kl(mean_b, probs[1][2])]]
    pred = logits_from_probs(probs)

    loss_map = RegionConsistencyLoss(reduction='none')(pred, target)
    assert loss_map.shape == (1, 2, 3)
    assert loss_map[0].tolist() == [pytest.approx(row, abs=1e-6)
                                    for row in expected]
    mean = RegionConsistencyLoss()(pred, target)
    assert mean.item() == pytest.approx(sum(map(sum, expected)) / 6,
                                        abs=1e-6)
    total = RegionConsistencyLoss(reduction='sum')(pred, target)
    assert total.item() == pytest.approx(sum(map(sum, expected)), abs=1e-6)

    # min_region_size=3 drops region A (2 pixels).
    big_only = RegionConsistencyLoss(min_region_size=3, reduction='none')(
        pred, target)
    assert big_only[0, 0, :2].tolist() == [0, 0]
    assert big_only[0, 1].tolist() == pytest.approx(expected[1], abs=1e-6)


def test_region_unconnected_blobs_have_their_own_mean():
    probs = [[(0.9, 0.1), (0.4, 0.6), (0.3, 0.7)],
             [(0.7, 0.3), (0.6, 0.4), (0.1, 0.9)]]
    target = torch.tensor([[[0, 1, 0], [0, 1, 0]]])
    left, middle, right = (0.8, 0.2), (0.5, 0.5), (0.2, 0.8)
    expected = [[kl(left, probs[0][0]), kl(middle, probs[0][1]),
                 kl(right, probs[0][2])],
                [kl(left, probs[1][0]), kl(middle, probs[1][1]),
                 kl(right, probs[1][2])]]
    loss_map = RegionConsistencyLoss(reduction='none')(
        logits_from_probs(probs), target)
    assert loss_map[0].tolist() == [pytest.approx(row, abs=1e-6)
                                    for row in expected]
    # A merged class-0 mean of (0.5, 0.5) would give a different value.
    assert loss_map[0, 0, 0].item() != pytest.approx(
        kl((0.5, 0.5), probs[0][0]), abs=1e-3)


def test_region_connectivity_on_diagonal():
    probs = [[(0.9, 0.1), (0.3, 0.7)],
             [(0.1, 0.9), (0.5, 0.5)]]
    target = torch.tensor([[[0, 1], [1, 0]]])
    pred = logits_from_probs(probs)
    four = RegionConsistencyLoss(connectivity=4, reduction='none')(
        pred, target)
    assert torch.allclose(four, torch.zeros_like(four), atol=1e-6)
    eight = RegionConsistencyLoss(connectivity=8, reduction='none')(
        pred, target)
    zeros, ones = (0.7, 0.3), (0.2, 0.8)
    expected = [[kl(zeros, probs[0][0]), kl(ones, probs[0][1])],
                [kl(ones, probs[1][0]), kl(zeros, probs[1][1])]]
    assert eight[0].tolist() == [pytest.approx(row, abs=1e-6)
                                 for row in expected]
    with pytest.raises(ValueError, match='connectivity'):
        RegionConsistencyLoss(connectivity=6)


def test_region_excludes_ignore_and_out_of_range_and_splits_regions():
    probs = [[(0.9, 0.1), (0.1, 0.9), (0.5, 0.5)]]
    pred = logits_from_probs(probs)
    for bad in (255, 2, 7):
        target = torch.tensor([[[0, bad, 0]]])
        loss_map = RegionConsistencyLoss(reduction='none')(pred, target)
        # The excluded middle pixel splits class 0 into two singletons.
        assert torch.allclose(loss_map, torch.zeros(1, 1, 3), atol=1e-6)
    target = torch.tensor([[[0, 0, 255]]])
    loss_map = RegionConsistencyLoss(reduction='none')(pred, target)
    expected = [kl((0.5, 0.5), probs[0][0]), kl((0.5, 0.5), probs[0][1]), 0]
    assert loss_map[0, 0].tolist() == pytest.approx(expected, abs=1e-6)
    mean = RegionConsistencyLoss()(pred, target)
    assert mean.item() == pytest.approx(sum(expected) / 2, abs=1e-6)
    # A custom, in-range ignore_index behaves like 255 above.
    custom = RegionConsistencyLoss(reduction='none')(
        pred, torch.tensor([[[0, 0, 1]]]), ignore_index=1)
    assert custom[0, 0].tolist() == pytest.approx(expected, abs=1e-6)
    custom_mean = RegionConsistencyLoss()(
        pred, torch.tensor([[[0, 0, 1]]]), ignore_index=1)
    assert custom_mean.item() == pytest.approx(sum(expected) / 2, abs=1e-6)


def test_region_never_connects_across_batch():
    probs = torch.tensor([[0.9, 0.1], [0.1, 0.9]])  # image 0, image 1
    pred = probs.log()[:, :, None, None].expand(2, 2, 3, 3).contiguous()
    target = torch.zeros(2, 3, 3, dtype=torch.long)
    loss_map = RegionConsistencyLoss(reduction='none')(pred, target)
    assert torch.allclose(loss_map, torch.zeros(2, 3, 3), atol=1e-6)


@pytest.mark.parametrize('reduction', ['mean', 'sum', 'none'])
def test_region_no_valid_pixel(reduction):
    pred = torch.randn(1, 2, 2, 3, requires_grad=True)
    target = torch.full((1, 2, 3), 255)
    loss = RegionConsistencyLoss(reduction=reduction)(pred, target)
    assert loss.requires_grad
    assert torch.isfinite(loss).all()
    assert loss.sum().item() == 0
    loss.sum().backward()
    assert torch.equal(pred.grad, torch.zeros_like(pred))


@pytest.mark.parametrize('detach_target', [True, False])
def test_region_gradients_flow_and_resize(detach_target):
    torch.manual_seed(0)
    pred = torch.randn(2, 3, 4, 4, requires_grad=True)
    target = torch.randint(0, 3, (2, 8, 8))
    target[0, :3] = 255
    loss_fn = RegionConsistencyLoss(detach_target=detach_target)
    loss = loss_fn(pred, target)
    assert torch.isfinite(loss) and loss.item() > 0
    loss.backward()
    assert pred.grad.abs().sum() > 0
    assert torch.isfinite(pred.grad).all()
    loss_map = RegionConsistencyLoss(reduction='none')(pred, target)
    assert loss_map.shape == target.shape


def test_region_detach_target_gradient():
    probs = [[(0.9, 0.1), (0.5, 0.5), (0.2, 0.8)]]
    target = torch.tensor([[[0, 0, 0]]])
    detached = logits_from_probs(probs)
    attached = logits_from_probs(probs)
    loss_d = RegionConsistencyLoss(reduction='sum')(detached, target)
    loss_a = RegionConsistencyLoss(reduction='sum', detach_target=False)(
        attached, target)
    assert loss_d.item() == pytest.approx(loss_a.item(), abs=1e-6)
    loss_d.backward()
    loss_a.backward()
    # With a constant target, d KL(m || softmax(z_i)) / d z_i = p_i - m.
    p = torch.tensor(probs).permute(2, 0, 1)[None]
    mean = p.mean(dim=(2, 3), keepdim=True)
    assert torch.allclose(detached.grad, p - mean, atol=1e-6)
    assert not torch.allclose(attached.grad, detached.grad, atol=1e-4)


def test_region_saturated_logits_stay_finite():
    # Class 1 underflows to probability 0 in both pixels, so its region mean
    # is exactly 0 and must be clamped before the log.
    pred = torch.tensor([[[[80., 90.]], [[-80., -80.]]]], requires_grad=True)
    target = torch.tensor([[[0, 0]]])
    loss = RegionConsistencyLoss(detach_target=False)(pred, target)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(pred.grad).all()


def test_region_weight_and_loss_weight():
    probs = [[(0.9, 0.1), (0.5, 0.5), (0.2, 0.8)],
             [(0.4, 0.6), (0.2, 0.8), (0.2, 0.8)]]
    target = torch.tensor([[[0, 0, 1], [1, 1, 1]]])
    pred = logits_from_probs(probs)
    base_map = RegionConsistencyLoss(reduction='none')(pred, target)
    weight = torch.arange(6.).view(1, 2, 3)
    weighted = RegionConsistencyLoss(reduction='sum')(
        pred, target, weight=weight)
    assert weighted.item() == pytest.approx(
        (base_map * weight).sum().item(), rel=1e-6)
    base = RegionConsistencyLoss()(pred, target)
    scaled = RegionConsistencyLoss(loss_weight=0.3)(pred, target)
    assert scaled.item() == pytest.approx(0.3 * base.item(), rel=1e-6)
    with pytest.raises(ValueError, match='reduction'):
        RegionConsistencyLoss(reduction='mean_over_batch')


def scipy_region_loss_map(pred, target, connectivity, min_region_size):
    """Reference (B, H, W) loss map: regions from scipy.ndimage.label per
    image and class, KL(region mean || p) per pixel, zero elsewhere."""
    from scipy import ndimage
    log_probs = torch.log_softmax(pred.double(), dim=1).permute(0, 2, 3, 1)
    labels = target.numpy()
    structure = ndimage.generate_binary_structure(
        2, 1 if connectivity == 4 else 2)
    out = torch.zeros(target.shape, dtype=torch.float64)
    for b in range(labels.shape[0]):
        for cls in range(pred.shape[1]):
            components, count = ndimage.label(labels[b] == cls, structure)
            for region in range(1, count + 1):
                inside = torch.from_numpy(components == region)
                if inside.sum() < min_region_size:
                    continue
                region = log_probs[b][inside]
                mean = region.exp().mean(0)
                out[b][inside] = (mean * (mean.log() - region)).sum(1)
    return out


@pytest.mark.parametrize('device', DEVICES)
@pytest.mark.parametrize('connectivity', [4, 8])
def test_region_random_maps_match_a_scipy_reference(device, connectivity,
                                                    monkeypatch):
    gen = torch.Generator().manual_seed(connectivity)
    cases = []
    for shape in [(2, 6, 9), (3, 16, 16)]:
        pred = torch.randn(shape[0], 3, *shape[1:], generator=gen)
        target = torch.randint(0, 3, shape, generator=gen)
        target[torch.rand(shape, generator=gen) < 0.3] = 255
        cases.append((pred, target))
    references = [
        scipy_region_loss_map(pred, target, connectivity, 2)
        for pred, target in cases
    ]

    # The loss itself never calls scipy.
    import scipy.ndimage

    def no_scipy(*args, **kwargs):
        raise AssertionError('scipy.ndimage.label is not for the hot path')

    monkeypatch.setattr(scipy.ndimage, 'label', no_scipy)
    loss_fn = RegionConsistencyLoss(connectivity=connectivity,
                                    min_region_size=2, reduction='none')
    for (pred, target), reference in zip(cases, references):
        loss_map = loss_fn(pred.to(device), target.to(device))
        assert loss_map.device.type == device
        torch.testing.assert_close(loss_map.cpu().double(), reference,
                                   atol=1e-5, rtol=1e-5)


# --------------------------------------------------------------------------
# Registry / mmseg contract
# --------------------------------------------------------------------------


@pytest.mark.parametrize('cfg, cls, name', [
    (dict(type='PrototypeContrastiveLoss'), PrototypeContrastiveLoss,
     'loss_proto_contrast'),
    (dict(type='RegionConsistencyLoss'), RegionConsistencyLoss,
     'loss_region'),
])
def test_registry_build_and_loss_name(cfg, cls, name):
    loss = MODELS.build(cfg)
    assert isinstance(loss, cls)
    assert loss.loss_name == name
    custom = MODELS.build(dict(cfg, loss_name='loss_custom'))
    assert custom.loss_name == 'loss_custom'


def test_prototype_aware_contract():
    assert isinstance(PrototypeContrastiveLoss(), PrototypeAwareLoss)
    assert not isinstance(RegionConsistencyLoss(), PrototypeAwareLoss)
    with pytest.raises(TypeError, match='abstract'):
        PrototypeAwareLoss(1.0, 'mean', 'loss_x')


@pytest.mark.parametrize('cls', [
    PrototypeContrastiveLoss, RegionConsistencyLoss, MaskGuidedContrastiveLoss
])
def test_mmseg_loss_conventions(cls):
    loss = cls(loss_weight=0.3, reduction='sum', loss_name='loss_x')
    assert isinstance(loss, BaseLoss)
    assert (loss.loss_weight, loss.reduction, loss.loss_name) == (0.3, 'sum',
                                                                  'loss_x')
    with pytest.raises(ValueError,
                       match=f"{cls.__name__}: reduction must be one of "
                       r"\('none', 'mean', 'sum'\), got 'avg'"):
        cls(reduction='avg')


@pytest.mark.parametrize('device', DEVICES)
def test_both_losses_on_device(device):
    torch.manual_seed(0)
    pred = torch.randn(2, 4, 6, 6, device=device, requires_grad=True)
    target = torch.randint(0, 4, (2, 12, 12), device=device)
    prototypes = torch.randn(4, 2, 4, device=device, requires_grad=True)
    contrast = PrototypeContrastiveLoss()(pred, target, prototypes=prototypes)
    region = RegionConsistencyLoss()(pred, target)
    (contrast + region).backward()
    assert contrast.device.type == region.device.type == device
    assert torch.isfinite(pred.grad).all()
