"""Reusable inference code (not imported by ``import protoprompt_mm``).

Nothing here registers a component, so the package is imported explicitly:
``from protoprompt_mm.apis import infer_region, load_segmentor``.
"""
from .region_inference import (CANVAS_DTYPES, background_mask,
                               config_dataset_meta, infer_region, label_map,
                               load_segmentor, tile_starts)

__all__ = [
    'CANVAS_DTYPES', 'background_mask', 'config_dataset_meta', 'infer_region',
    'label_map', 'load_segmentor', 'tile_starts'
]
