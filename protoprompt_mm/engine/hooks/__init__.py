"""Registered components; importing this module registers them."""
from .prototype_init_hook import PrototypeInitHook  # noqa: F401
from .stain_target_hook import StainTargetHook  # noqa: F401
