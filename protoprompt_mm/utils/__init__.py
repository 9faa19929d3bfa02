"""Small utilities shared by the tools."""
from .atomic_write import atomic_path
from .config import (load_config, load_runner_config, set_test_options,
                     set_training_start)
from .dist import (failure_on_any_rank_raises_on_all, init_cpu_process_group,
                   rank_flags, record_loss_terms, take_loss_terms)

__all__ = [
    'atomic_path', 'load_config', 'load_runner_config', 'set_test_options',
    'set_training_start',
    'init_cpu_process_group', 'rank_flags',
    'failure_on_any_rank_raises_on_all', 'record_loss_terms', 'take_loss_terms'
]
