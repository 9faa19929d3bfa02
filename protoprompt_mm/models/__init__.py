"""Models: backbone wrappers, the prototype neck, heads, segmentors, losses."""
from . import backbones, decode_heads, losses, necks, segmentors  # noqa: F401
