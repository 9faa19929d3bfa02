"""Models: backbone wrappers, the prototype neck, heads, segmentors, losses."""
from . import (backbones, decode_heads, losses, necks,  # noqa: F401
               segmentors, utils)
