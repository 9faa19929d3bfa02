"""Segment an image file (a slide region) into a mask PNG and an overlay.

What ``tools/infer_region.py`` runs: :func:`~.region_inference.infer_region`
on the image, then

* the mask: a uint8 palette PNG of class indices ``0..N-1``; with
  ``background_thresh``, pixels brighter than that grey level (white glass)
  get index ``N`` (background, white), as in the pseudo masks;
* the overlay: the image with the class colours blended over it.

The colours are the model's ``dataset_meta`` palette (the checkpoint's
``meta['dataset_meta']``, else that of the config's test dataset).
"""
import time
from typing import Dict, Optional, Union

import cv2
import mmcv
import numpy as np
import torch
from mmengine.config import Config

from ..datasets.palette_masks import save_palette_mask
from ..datasets.stain import build_stain_normalizer
from ..visualization import colorize_labels
from ..visualization.overlays import BACKGROUND_COLOR
from .model_loading import init_segmentor, require_dataset_meta
from .region_inference import (background_mask, check_tiling, infer_region,
                               label_map)


def segment_region(config: Union[str, Config],
                   checkpoint: str,
                   image_path: str,
                   out_mask: str,
                   out_overlay: str,
                   tile: int = 224,
                   overlap: int = 32,
                   batch_size: int = 8,
                   device: str = 'cpu',
                   canvas_dtype: torch.dtype = torch.float32,
                   background_thresh: Optional[float] = None,
                   alpha: float = 0.5,
                   stain_norm: Optional[str] = None,
                   cfg_options: Optional[dict] = None,
                   progress: bool = True) -> Dict[str, object]:
    """Write the mask and the overlay of a large H&E image file.

    Args:
        config: Stage-2 config file or loaded config.
        checkpoint: Its local checkpoint.
        image_path: Image file of any size (read as BGR, like
            ``LoadImageFromFile``).
        out_mask: Palette mask PNG to write.
        out_overlay: Colour overlay image to write.
        tile: Tile side.
        overlap: Pixels shared by neighbouring tiles, in [0, tile).
        batch_size: Tiles per forward pass.
        device: Device of the model, e.g. ``'cpu'``, ``'cuda:0'``.
        canvas_dtype: ``torch.float32`` or ``torch.float16`` probability
            canvas (see :func:`~.region_inference.infer_region`).
        background_thresh: Grey level (0-255) above which a pixel is
            background; None: no background detection.
        alpha: Opacity of the colours in the overlay, in [0, 1].
        stain_norm: Macenko-normalise the image first, towards this
            reference image or the stain target a checkpoint carries.
        cfg_options: ``--cfg-options`` style config overrides.
        progress: Show a progress bar over the tiles.

    Returns:
        dict: ``width`` and ``height`` of the image, ``seconds`` from the
        first tile to the written outputs, and ``class_shares``: the
        fraction of the pixels of every class present (and of
        ``'background'``), in class order.

    Raises:
        ValueError: On tiling arguments or ``alpha`` out of range, or a
            palette with fewer colours than the model has classes.
        FileNotFoundError: If ``image_path`` is not a readable image, or
            ``stain_norm`` names no file.
        KeyError: If neither the checkpoint nor the config names the
            classes and their colours.
    """
    check_tiling(tile, overlap, batch_size)
    if not 0 <= alpha <= 1:
        raise ValueError(f'alpha (--alpha) must be in [0, 1], got {alpha}')
    image = mmcv.imread(image_path)  # BGR, like LoadImageFromFile
    if image is None:
        raise FileNotFoundError(f'{image_path}: not a readable image')
    normalizer = None if stain_norm is None else \
        build_stain_normalizer(stain_norm)
    model = init_segmentor(config, checkpoint, device, cfg_options)
    meta = require_dataset_meta(model, f'{checkpoint} / {model.cfg.filename}')
    start = time.perf_counter()
    probs = infer_region(
        model,
        image,
        tile=tile,
        overlap=overlap,
        batch_size=batch_size,
        canvas_dtype=canvas_dtype,
        progress=progress,
        stain_normalizer=normalizer)
    num_classes = probs.shape[0]
    palette = meta['palette']
    if len(palette) < num_classes:
        raise ValueError(f'{checkpoint} / {model.cfg.filename}: palette has '
                         f'{len(palette)} colours for {num_classes} classes')
    labels = label_map(probs)
    if background_thresh is not None:
        labels[background_mask(image, background_thresh)] = num_classes
    palette = [list(colour) for colour in palette[:num_classes]]
    save_palette_mask(out_mask, labels, [*palette, BACKGROUND_COLOR])
    colours = colorize_labels(labels, palette, background_index=num_classes)
    overlay = cv2.addWeighted(colours, alpha, mmcv.bgr2rgb(image), 1 - alpha,
                              0)
    mmcv.imwrite(mmcv.rgb2bgr(overlay), out_overlay)
    counts = np.bincount(labels.ravel(), minlength=num_classes + 1)
    names = [*meta['classes'][:num_classes], 'background']
    return dict(
        width=image.shape[1],
        height=image.shape[0],
        seconds=time.perf_counter() - start,
        class_shares={name: float(n / labels.size)
                      for name, n in zip(names, counts) if n})
