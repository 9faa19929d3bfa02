"""ProtoPrompt-MM: prototype-prompted weakly supervised histology segmentation.

Importing this package registers every component into MMSegmentation's
registries (``MODELS``, ``DATASETS``, ``TRANSFORMS``, ``HOOKS``, ...), so
configs only need ``custom_imports=dict(imports=['protoprompt_mm'])``.
"""
from . import (datasets, engine, evaluation, models,  # noqa: F401
               visualization)

__version__ = '0.1.0'
