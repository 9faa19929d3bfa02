"""Reusable inference code.

Nothing here registers a component, so the package is imported explicitly:
``from protoprompt_mm.apis import generate_pseudo_masks, init_segmentor``.
"""
from .geojson_export import (label_polygons, qupath_feature_collection,
                             write_geojson)
from .image_bank_encoding import (encode_image_bank, find_prototype_bank,
                                  prototype_embedder)
from .mask_tiff_writer import write_pyramidal_mask
from .model_loading import (config_dataset_meta, init_segmentor,
                            require_dataset_meta)
from .pipeline import (PRESETS, Pipeline, PipelineError, aggregate,
                       format_results_table, run_pipeline)
from .prototype_bank_building import (build_frozen_model, build_prototype_bank,
                                      build_prototype_bank_from_config,
                                      build_prototype_record,
                                      config_prototype_init_hook,
                                      save_prototype_file)
from .pseudo_masks import (METRICS_FILE, PseudoMaskScorer,
                           build_label_dataset, gating_mode,
                           generate_pseudo_masks, pseudo_label_params,
                           pseudo_mask_of, pseudo_mask_report)
from .region_inference import (CANVAS_DTYPES, ProbabilityBlock,
                               array_tile_reader, background_mask,
                               check_tiling, infer_region, label_map,
                               stream_probabilities, tile_grid, tile_starts)
from .region_segmentation import segment_region
from .sample_panels import draw_sample_panels
from .slide_inference import (infer_slide, infer_slides, is_finished,
                              output_paths, slides_in)
from .slide_overlay import blend_overlay
from .slide_reader import (ArrayReader, ImageReader, OpenSlideReader,
                           ResampledSlide, SlideReader, open_slide)
from .slide_segmentation import segment_slides, torchrun_placement
from .stain_shift import (stain_shift_table, stain_shift_test,
                          with_stain_normalization, with_stain_shift,
                          write_stain_shift_report)
from .tissue_detection import (detect_tissue, tile_has_tissue,
                               tissue_fraction_of_boxes, upsample_tissue)

__all__ = [
    'ArrayReader', 'CANVAS_DTYPES', 'ImageReader', 'METRICS_FILE',
    'OpenSlideReader', 'PRESETS', 'Pipeline', 'PipelineError',
    'ProbabilityBlock', 'PseudoMaskScorer',
    'ResampledSlide', 'SlideReader', 'array_tile_reader', 'background_mask',
    'aggregate', 'blend_overlay', 'build_frozen_model', 'build_label_dataset',
    'build_prototype_bank', 'build_prototype_bank_from_config',
    'build_prototype_record', 'config_dataset_meta',
    'config_prototype_init_hook', 'encode_image_bank', 'find_prototype_bank',
    'format_results_table',
    'prototype_embedder', 'save_prototype_file',
    'detect_tissue', 'gating_mode', 'generate_pseudo_masks', 'infer_region',
    'infer_slide', 'infer_slides', 'init_segmentor', 'is_finished',
    'require_dataset_meta',
    'label_map', 'label_polygons', 'open_slide', 'output_paths',
    'pseudo_label_params', 'pseudo_mask_of', 'pseudo_mask_report',
    'qupath_feature_collection', 'check_tiling', 'draw_sample_panels',
    'segment_region', 'segment_slides', 'torchrun_placement',
    'run_pipeline',
    'slides_in', 'stain_shift_table', 'stain_shift_test',
    'stream_probabilities', 'tile_grid', 'tile_has_tissue', 'tile_starts',
    'tissue_fraction_of_boxes', 'upsample_tissue', 'with_stain_normalization',
    'with_stain_shift', 'write_geojson', 'write_pyramidal_mask',
    'write_stain_shift_report'
]
