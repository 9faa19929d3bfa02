"""Small utilities shared by the tools."""
from .config import load_config

__all__ = ['load_config']
