"""MaskGuidedContrastiveLoss: PBIP's stage-1 foreground/background InfoNCE."""
import torch
import torch.nn.functional as F
from mmseg.registry import MODELS
from torch import Tensor

from .base_loss import BaseLoss


@MODELS.register_module()
class MaskGuidedContrastiveLoss(BaseLoss):
    """InfoNCE of CAM-masked foreground / background features vs prototypes.

    For every selected (image b, class n, sub-prototype k) -- a present class
    and, in PBIP, the sub-prototypes whose score beats the class's merged
    score -- the CAM of (n, k) is clipped at zero and scaled to peak 1, ``a``;
    the mask is ``a >= alpha`` (PBIP's dynamic threshold: a fraction of the
    map's maximum). The foreground feature is the mean of the pixel features
    weighted by ``a * mask``, the background feature the mean weighted by
    ``(1 - a) * (1 - mask)`` (PBIP weighs the image the same way before its
    frozen encoder; here the level's own features are pooled). With
    L2-normalised features f, b and prototypes q (N*K of them) and logits
    ``s(x, q) = <x, q> / temperature``:

    .. math::

        \\ell_{fg} = -\\log \\frac{e^{s(f, q_{n,k})}}
                          {\\sum_{j} e^{s(f, q_j)}}, \\qquad
        \\ell_{bg} = -\\log \\frac{\\overline{e^{s(b, q_{n'})}}}
                          {\\overline{e^{s(b, q_{n'})}} + e^{s(b, q_{n,k})}}

    where the bar is the mean over the sub-prototypes of the other classes
    n' != n. The foreground is pulled to its own sub-prototype and pushed
    from all others; the background is pulled to the other classes and
    pushed from (n, k). The CAM weights carry gradients, so the loss shapes
    the CAMs as well as the features and the prototype projections.

    Args:
        temperature: Softmax temperature (PBIP: 0.07).
        alpha: Foreground threshold as a fraction of the CAM's maximum
            (PBIP: 0.5).
        bg_weight: Weight of the background term (PBIP: 1); 0 keeps the
            foreground term only.
        loss_weight: Multiplier (PBIP: 0.1).
        reduction: ``'none'`` (per selected pair, ``l_fg + bg_weight *
            l_bg``),
            ``'mean'`` or ``'sum'`` over the pairs.
        loss_name: Key of the loss; must start with ``loss_``.
    """

    def __init__(self,
                 temperature: float = 0.07,
                 alpha: float = 0.5,
                 bg_weight: float = 1.0,
                 loss_weight: float = 0.1,
                 reduction: str = 'mean',
                 loss_name: str = 'loss_mask_contrast') -> None:
        super().__init__(loss_weight, reduction, loss_name)
        if temperature <= 0 or not 0 < alpha < 1:
            raise ValueError(
                'MaskGuidedContrastiveLoss: temperature > 0 and 0 < alpha < '
                f'1 are required, got {temperature}, {alpha}')
        self.temperature = temperature
        self.alpha = alpha
        self.bg_weight = bg_weight

    def forward(self, feats: Tensor, sub_cams: Tensor, prototypes: Tensor,
                selected: Tensor) -> Tensor:
        """Compute the loss.

        Args:
            feats: Pixel features (B, C, h, w).
            sub_cams: Raw sub-prototype CAMs (B, N, K, h, w).
            prototypes: Prototypes in the features' space (N, K, C).
            selected: Bool (B, N, K), the pairs to contrast.

        Returns:
            Tensor: Scalar (``'mean'`` / ``'sum'``) or (P,) per pair. With no
            selected pair, a zero attached to the graph (or an empty vector).

        Raises:
            ValueError: On inconsistent shapes.
        """
        batch, num_cls, num_k = sub_cams.shape[:3]
        if feats.dim() != 4 or sub_cams.dim() != 5 \
                or feats.shape[0] != batch \
                or feats.shape[2:] != sub_cams.shape[3:] \
                or prototypes.shape != (num_cls, num_k, feats.shape[1]) \
                or selected.shape != (batch, num_cls, num_k):
            raise ValueError(
                'MaskGuidedContrastiveLoss: expected feats (B, C, h, w), '
                'sub_cams (B, N, K, h, w), prototypes (N, K, C) and selected '
                f'(B, N, K); got {tuple(feats.shape)}, '
                f'{tuple(sub_cams.shape)}, {tuple(prototypes.shape)}, '
                f'{tuple(selected.shape)}')
        pairs = selected.nonzero(as_tuple=True)
        with torch.autocast(device_type=feats.device.type, enabled=False):
            cams = sub_cams[pairs].float().clamp(min=0)  # (P, h, w)
            act = cams / (cams.flatten(1).amax(dim=1)[:, None, None] + 1e-5)
            mask = (act >= self.alpha).to(act.dtype)
            fg_pixels = (act * mask).flatten(1)
            bg_pixels = ((1 - act) * (1 - mask)).flatten(1)
            pixels = feats[pairs[0]].float().flatten(2)  # (P, C, h*w)
            fg = F.normalize(torch.einsum('pcx,px->pc', pixels, fg_pixels),
                             dim=1)
            bg = F.normalize(torch.einsum('pcx,px->pc', pixels, bg_pixels),
                             dim=1)
            protos = F.normalize(prototypes.float(), dim=-1).flatten(0, 1)
            own = pairs[1] * num_k + pairs[2]  # (P,) flat index of (n, k)
            fg_logits = fg @ protos.t() / self.temperature
            loss_fg = F.cross_entropy(fg_logits, own, reduction='none')
            bg_logits = bg @ protos.t() / self.temperature
            owner = torch.arange(
                num_cls, device=own.device).repeat_interleave(num_k)
            other = owner[None] != pairs[1][:, None]  # (P, N*K)
            mean_other = bg_logits.masked_fill(
                ~other, float('-inf')).logsumexp(dim=1) - other.sum(
                    dim=1).clamp(min=1).log()
            own_logit = bg_logits.gather(1, own[:, None])[:, 0]
            loss_bg = torch.logaddexp(mean_other, own_logit) - mean_other
            # One class alone has no other class to pull the background to.
            loss = loss_fg + self.bg_weight * loss_bg if num_cls > 1 \
                else loss_fg
        if self.reduction != 'none':
            if loss.numel() == 0:
                loss = sub_cams.sum() * 0 + feats.sum() * 0
            else:
                loss = loss.mean() if self.reduction == 'mean' \
                    else loss.sum()
        return self.loss_weight * loss
