"""Name the terms of a non-finite loss for the finite-loss optim wrappers."""
from typing import Dict, Tuple

from torch import Tensor

from ...utils import record_loss_terms


class FiniteLossMixin:
    """Mixin for ``BaseModel`` subclasses: ``parse_losses`` records the terms.

    ``train_step`` (``BaseModel``'s or ``MMDistributedDataParallel``'s)
    calls ``parse_losses`` between the forward pass and
    ``optim_wrapper.update_params``. The loss terms are kept (detached, no
    host read) for the ``FiniteLossOptimWrapper`` /
    ``FiniteLossAmpOptimWrapper`` of the configs, which agrees across ranks
    on a non-finite loss and then raises on every rank, naming these terms,
    before the optimizer step, or skips the step on every rank. A raise
    here, on one rank only, would leave the others waiting in DDP's gradient
    all-reduce.
    """

    def parse_losses(
        self, losses: Dict[str, Tensor]
    ) -> Tuple[Tensor, Dict[str, Tensor]]:
        """``BaseModel.parse_losses``, recording the terms for this step.

        Args:
            losses: Raw outputs of the ``loss`` forward.

        Returns:
            tuple[Tensor, dict]: The total loss and the logged variables.
        """
        loss, log_vars = super().parse_losses(losses)
        record_loss_terms(log_vars)
        return loss, log_vars
