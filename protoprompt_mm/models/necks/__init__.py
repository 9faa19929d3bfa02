"""Necks: the prototype bank and the features it hands to heads."""
from .prompted_features import PromptedFeatures, as_prompted_features
from ..utils.prototype_state import load_prototype_file
from .prototype_bank import PrototypeBank

__all__ = [
    'PromptedFeatures', 'as_prompted_features', 'PrototypeBank',
    'load_prototype_file'
]
