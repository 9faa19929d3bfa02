"""MultiLevelFeatureCapture: read feature maps from any named submodules."""
from typing import Dict, List, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn
from mmengine.model import BaseModule
from mmseg.registry import MODELS
from torch import Tensor


class _AllLevelsCaptured(Exception):
    """Raised by the last capture hook to skip the rest of the backbone."""


@MODELS.register_module()
class MultiLevelFeatureCapture(BaseModule):
    """Wrap a backbone and return the outputs of named submodules.

    Use it when the wanted levels are not exposed by the backbone's
    ``out_indices``, e.g. an inner block of a stage. Forward hooks are put
    on the submodules for the duration of one forward and removed
    afterwards (also when the forward fails), so nothing leaks across
    forwards, copies or DDP wrapping. A submodule called several times in
    one forward yields its first output. As soon as every layer has fired,
    the rest of the backbone is skipped; its parameters then get no
    gradient (set ``find_unused_parameters=True`` under DDP, or freeze).

    Only feature maps are captured: an output that is not a (B, C, H, W)
    tensor (e.g. transformer tokens (B, L, C), or a tuple) raises an error;
    capture the backbone's own map outputs for such models (mmseg's
    ``VisionTransformer`` reshapes tokens itself through ``out_indices``).

    The backbone's parameters live under ``backbone.`` (checkpoint keys
    ``backbone.backbone.*`` inside a segmentor).

    Args:
        backbone: Config of any registered backbone; other scopes are
            reachable by prefix, e.g. ``dict(type='mmpretrain.ResNet', ...)``.
        layers: Dotted submodule names (as in ``named_modules()``), e.g.
            ``['layer2', 'layer3.1.conv2']``; the outputs come in this order.
        frozen: Freeze the backbone: no gradients, always in eval mode, run
            under ``torch.no_grad``.
        init_cfg: mmengine init config.
    """

    def __init__(self,
                 backbone: dict,
                 layers: Sequence[str],
                 frozen: bool = False,
                 init_cfg: Optional[Union[dict, List[dict]]] = None) -> None:
        super().__init__(init_cfg=init_cfg)
        self.backbone = MODELS.build(backbone)
        self.layers = list(layers)
        self.frozen = frozen
        if not self.layers:
            raise ValueError('MultiLevelFeatureCapture: layers is empty')
        duplicates = sorted(
            {name for name in self.layers if self.layers.count(name) > 1})
        if duplicates:
            raise ValueError(
                f'MultiLevelFeatureCapture: duplicate layers {duplicates}')
        modules = dict(self.backbone.named_modules())
        missing = [name for name in self.layers if name not in modules]
        if missing:
            available = [name for name in modules if name]
            raise ValueError(
                f'MultiLevelFeatureCapture: {type(self.backbone).__name__} '
                f'has no submodule(s) {missing}; available names: '
                f'{", ".join(available)}')
        if frozen:
            self.backbone.requires_grad_(False)
            self.backbone.eval()

    def train(self, mode: bool = True) -> 'MultiLevelFeatureCapture':
        """Set the mode; a frozen backbone stays in eval mode."""
        super().train(mode)
        if self.frozen:
            self.backbone.eval()
        return self

    def forward(self, x: Tensor) -> Tuple[Tensor, ...]:
        """Run the backbone and collect the named outputs.

        Args:
            x: Images (B, 3, H, W).

        Returns:
            tuple[Tensor]: One (B, C_l, H_l, W_l) map per entry of
            ``layers``, in that order.

        Raises:
            RuntimeError: If a layer did not run or its output is not a
                (B, C, H, W) tensor.
        """
        captured: Dict[str, Tensor] = {}

        def make_hook(name: str):

            def hook(module: nn.Module, args: tuple, output) -> None:
                if name in captured:
                    return
                if not isinstance(output, Tensor) or output.dim() != 4:
                    shape = tuple(output.shape) if isinstance(
                        output, Tensor) else type(output).__name__
                    raise RuntimeError(
                        f'MultiLevelFeatureCapture: layer {name!r} returned '
                        f'{shape}, expected a (B, C, H, W) feature map')
                captured[name] = output
                if len(captured) == len(self.layers):
                    raise _AllLevelsCaptured

            return hook

        modules = dict(self.backbone.named_modules())
        handles = [
            modules[name].register_forward_hook(make_hook(name))
            for name in self.layers
        ]
        try:
            with torch.set_grad_enabled(torch.is_grad_enabled()
                                        and not self.frozen):
                self.backbone(x)
        except _AllLevelsCaptured:
            pass
        finally:
            for handle in handles:
                handle.remove()
        not_run = [name for name in self.layers if name not in captured]
        if not_run:
            raise RuntimeError(
                f'MultiLevelFeatureCapture: layer(s) {not_run} did not run '
                f'in the forward of {type(self.backbone).__name__}')
        return tuple(captured[name] for name in self.layers)
