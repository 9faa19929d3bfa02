"""Runner hooks and optim wrappers."""
from . import hooks, optim_wrappers  # noqa: F401
