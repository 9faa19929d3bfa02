"""Time the components of one training step separately.

Forward + backward of each, fed with detached copies of the real
intermediate tensors: backbone, neck, decode head, upsampling of the logits
to the label size, every loss of ``loss_decode``, the momentum update of a
``PrototypeBank`` and the optimizer step.
"""
from typing import Callable, Dict, Tuple

import torch
from mmengine.optim import OptimWrapper
from mmseg.models.utils import resize
from torch import Tensor, nn

from protoprompt_mm.benchmarks.timing import interleaved_times, summary
from protoprompt_mm.models.losses import PrototypeAwareLoss
from protoprompt_mm.models.necks import PrototypeBank, PromptedFeatures


def leaf(tensor: Tensor) -> Tensor:
    """Detached copy that records gradients when it is floating point."""
    out = tensor.detach().clone()
    return out.requires_grad_(out.is_floating_point())


def leaves(feats: object) -> object:
    """Detached leaves of a feature tuple (``PromptedFeatures`` kept)."""
    if isinstance(feats, PromptedFeatures):
        return PromptedFeatures([leaf(t) for t in feats.feats],
                                leaf(feats.embedding), leaf(feats.similarity),
                                leaf(feats.prototypes))
    return type(feats)(leaf(t) for t in feats)


def backward_sum(out: object) -> None:
    """Backpropagate the sum of every output tensor that has a graph."""
    tensors = [out] if isinstance(out, Tensor) else list(out)
    total = sum(t.float().sum() for t in tensors if t.requires_grad)
    if isinstance(total, Tensor):
        total.backward()


def component_fns(model: nn.Module, wrapper: OptimWrapper,
                  data: dict) -> Dict[str, Callable[[], object]]:
    """Forward + backward of each training-step component in isolation.

    Every component receives detached leaf copies of the real intermediate
    tensors of one forward pass (as the segmentor would hand them over).

    Args:
        model: An mmseg encoder-decoder in train mode.
        wrapper: Its optimizer wrapper (its ``step`` is a component).
        data: A batch of :func:`~.synthetic_batch.synthetic_batch`.

    Returns:
        dict: Component name -> function running it once.
    """
    batch = model.data_preprocessor(data, True)
    inputs, samples = batch['inputs'], batch['data_samples']
    head = model.decode_head
    with torch.no_grad():
        feats = model.backbone(inputs)
        neck_out = model.neck(feats) if model.with_neck else feats
        logits = head(neck_out)
    label = torch.stack([sample.gt_sem_seg.data for sample in samples])
    flat_label = label.squeeze(1)

    def forward_backward(fn: Callable[..., object],
                         *args: object) -> Callable[[], None]:
        """Run ``fn`` on fresh leaves of ``args`` and backpropagate."""

        def run() -> None:
            backward_sum(fn(*[leaves(a) if isinstance(a, tuple) else leaf(a)
                              for a in args]))

        return run

    # The image needs no gradient, as in a real step.
    fns = {'backbone': forward_backward(lambda: model.backbone(inputs))}
    if model.with_neck:
        fns[f'neck {type(model.neck).__name__}'] = forward_backward(
            model.neck, feats)
    fns[f'head {type(head).__name__}'] = forward_backward(head, neck_out)
    fns['logits upsampling'] = forward_backward(
        lambda x: resize(x, size=label.shape[2:], mode='bilinear',
                         align_corners=head.align_corners), logits)
    upsampled = resize(logits, size=label.shape[2:], mode='bilinear',
                       align_corners=head.align_corners)
    modules = head.loss_decode if isinstance(head.loss_decode,
                                             nn.ModuleList) \
        else [head.loss_decode]
    for loss in modules:
        if isinstance(loss, PrototypeAwareLoss):
            fns[f'loss {loss.loss_name}'] = forward_backward(
                lambda e, p, loss=loss: loss(
                    e, flat_label, prototypes=p,
                    ignore_index=head.ignore_index), neck_out.embedding,
                neck_out.prototypes)
        else:
            fns[f'loss {loss.loss_name}'] = forward_backward(
                lambda x, loss=loss: loss(
                    x, flat_label, ignore_index=head.ignore_index), upsampled)
    neck = model.neck if model.with_neck else None
    if isinstance(neck, PrototypeBank) and neck.update_mode == 'momentum':
        fns['momentum_update'] = lambda: neck.momentum_update(
            neck_out.embedding, label, ignore_index=head.ignore_index)
    fns['optimizer step'] = wrapper.step
    return fns


def time_breakdown(models: Dict[str, Tuple[nn.Module, OptimWrapper, dict]],
                   iters: int, warmup: int, device: str,
                   images: int) -> Dict[str, Dict[str, dict]]:
    """Time every component of every model, all interleaved.

    Args:
        models: Role -> (model, optimizer wrapper, batch).
        iters: Timed iterations.
        warmup: Untimed iterations first.
        device: ``'cpu'`` or ``'cuda'``.
        images: Images per batch (for images/s).

    Returns:
        dict: Role -> component name -> :func:`~.timing.summary`.
    """
    fns = {}
    for role, (model, wrapper, data) in models.items():
        # One real step first so that the optimizer state and the
        # gradients the optimizer step uses exist.
        wrapper.zero_grad()
        model.train_step(data, wrapper)
        for name, fn in component_fns(model, wrapper, data).items():
            fns[(role, name)] = fn
    times = interleaved_times(fns, iters, warmup, device)
    out: Dict[str, Dict[str, dict]] = {role: {} for role in models}
    for (role, name), values in times.items():
        out[role][name] = summary(values, images)
    return out
