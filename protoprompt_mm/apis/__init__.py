"""Reusable inference code.

Nothing here registers a component, so the package is imported explicitly:
``from protoprompt_mm.apis import generate_pseudo_masks, init_segmentor``.
"""
from .model_loading import config_dataset_meta, init_segmentor
from .pseudo_masks import (METRICS_FILE, PseudoMaskScorer,
                           build_label_dataset, gating_mode,
                           generate_pseudo_masks, pseudo_label_params,
                           pseudo_mask_of)
from .region_inference import (CANVAS_DTYPES, background_mask, infer_region,
                               label_map, tile_starts)
from .stain_shift import (stain_shift_table, stain_shift_test,
                          with_stain_normalization, with_stain_shift,
                          write_stain_shift_report)

__all__ = [
    'CANVAS_DTYPES', 'METRICS_FILE', 'PseudoMaskScorer', 'background_mask',
    'build_label_dataset', 'config_dataset_meta', 'gating_mode',
    'generate_pseudo_masks', 'infer_region', 'init_segmentor', 'label_map',
    'pseudo_label_params', 'pseudo_mask_of', 'stain_shift_table',
    'stain_shift_test', 'tile_starts', 'with_stain_normalization',
    'with_stain_shift',
    'write_stain_shift_report'
]
