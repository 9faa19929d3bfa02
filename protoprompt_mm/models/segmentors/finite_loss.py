"""Stop a training step before a non-finite loss reaches the optimizer."""
from typing import Dict, Tuple

import torch
from torch import Tensor


class FiniteLossMixin:
    """Mixin for ``BaseModel`` subclasses: ``parse_losses`` refuses NaN/Inf.

    ``BaseModel.train_step`` calls ``parse_losses`` between the forward pass
    and ``optim_wrapper.update_params``, so raising here guarantees that no
    NaN gradient is ever applied to the weights.
    """

    def parse_losses(
        self, losses: Dict[str, Tensor]
    ) -> Tuple[Tensor, Dict[str, Tensor]]:
        loss, log_vars = super().parse_losses(losses)
        if not torch.isfinite(loss):
            bad = sorted(
                name for name, value in losses.items() if 'loss' in name
                and not all(torch.isfinite(v).all() for v in (
                    value if isinstance(value, (list, tuple)) else [value])))
            raise FloatingPointError(
                f'{type(self).__name__}: non-finite training loss '
                f'({float(loss)}) from {bad or "the total"}; the optimizer '
                'step was not taken. Check the learning rate, the inputs and '
                'the pseudo-labels of this batch.')
        return loss, log_vars
