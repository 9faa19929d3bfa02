"""BaseLoss: the loss conventions of mmseg shared by every loss here."""
import torch.nn as nn

REDUCTIONS = ('none', 'mean', 'sum')


class BaseLoss(nn.Module):
    """Holds ``loss_weight``, ``reduction`` and ``loss_name`` as mmseg does.

    mmseg's heads read ``loss_name`` to key the loss in the losses dict (only
    keys starting with ``loss_`` are summed into the total loss); every loss
    multiplies its value by ``loss_weight`` and reduces it as ``reduction``
    says (what ``'none'`` returns is documented by each loss).

    Args:
        loss_weight: Multiplier of the loss.
        reduction: One of :data:`REDUCTIONS`: ``'none'``, ``'mean'`` or
            ``'sum'``.
        loss_name: Key of the loss; must start with ``loss_`` to be summed.

    Raises:
        ValueError: If ``reduction`` is not one of :data:`REDUCTIONS`.
    """

    def __init__(self, loss_weight: float, reduction: str,
                 loss_name: str) -> None:
        super().__init__()
        if reduction not in REDUCTIONS:
            raise ValueError(f'{type(self).__name__}: reduction must be one '
                             f'of {REDUCTIONS}, got {reduction!r}')
        self.loss_weight = loss_weight
        self.reduction = reduction
        self._loss_name = loss_name

    @property
    def loss_name(self) -> str:
        """str: Name of the loss item (``loss_`` prefixed to be summed)."""
        return self._loss_name
