"""Small utilities shared by the tools."""
from .config import load_config
from .dist import init_cpu_process_group

__all__ = ['load_config', 'init_cpu_process_group']
