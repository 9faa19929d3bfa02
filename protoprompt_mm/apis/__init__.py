"""Reusable inference code.

Nothing here registers a component, so the package is imported explicitly:
``from protoprompt_mm.apis import infer_region, init_segmentor``.
"""
from .model_loading import config_dataset_meta, init_segmentor
from .region_inference import (CANVAS_DTYPES, background_mask, infer_region,
                               label_map, tile_starts)

__all__ = [
    'CANVAS_DTYPES', 'background_mask', 'config_dataset_meta', 'infer_region',
    'init_segmentor', 'label_map', 'tile_starts'
]
