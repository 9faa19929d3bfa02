"""Registered optim wrappers; importing this module registers them."""
from .finite_loss_optim_wrapper import (FiniteLossAmpOptimWrapper,
                                        FiniteLossCheckMixin,
                                        FiniteLossOptimWrapper,
                                        NonFiniteLossError)

__all__ = [
    'FiniteLossCheckMixin', 'FiniteLossOptimWrapper',
    'FiniteLossAmpOptimWrapper', 'NonFiniteLossError'
]
