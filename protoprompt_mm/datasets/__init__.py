"""Histology WSSS datasets and their transforms."""
from . import transforms  # noqa: F401
