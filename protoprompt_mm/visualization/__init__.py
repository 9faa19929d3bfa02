"""Overlays of CAMs, prototype similarities and masks."""
from .overlays import colorize_labels, heatmap_overlay, make_panel

__all__ = ['colorize_labels', 'heatmap_overlay', 'make_panel']
