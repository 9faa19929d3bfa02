"""Small utilities shared by the tools."""
from .config import load_config, load_runner_config, set_training_start
from .dist import init_cpu_process_group

__all__ = [
    'load_config', 'load_runner_config', 'set_training_start',
    'init_cpu_process_group'
]
