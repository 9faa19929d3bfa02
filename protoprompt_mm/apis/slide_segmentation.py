"""Segment slide files with a config and a checkpoint, rank by rank.

What ``tools/infer_slide.py`` runs: the model is built once, read at its
training resolution, and :func:`~.slide_inference.infer_slides` segments
this rank's share of the slides (skipping finished ones); under torchrun
every process finds its rank and GPU with :func:`torchrun_placement`.
"""
import os
from typing import Dict, Optional, Sequence, Tuple, Union

from mmengine.config import Config

from ..datasets.stain import build_stain_normalizer
from .model_loading import init_segmentor
from .region_inference import check_tiling
from .slide_inference import infer_slides, slides_in


def torchrun_placement(device: str) -> Tuple[int, int, str]:
    """This process's rank, world size and device under torchrun.

    Args:
        device: ``'cpu'``, ``'cuda'`` or ``'cuda:N'``; ``'cuda'`` becomes
            this process's GPU, ``cuda:LOCAL_RANK``.

    Returns:
        tuple: ``RANK``, ``WORLD_SIZE`` (0 and 1 outside torchrun) and the
        device.
    """
    if device == 'cuda':
        device = f'cuda:{os.environ.get("LOCAL_RANK", 0)}'
    return (int(os.environ.get('RANK', 0)),
            int(os.environ.get('WORLD_SIZE', 1)), device)


def segment_slides(config: Union[str, Config],
                   checkpoint: str,
                   inputs: Sequence[str],
                   out_dir: str,
                   device: str = 'cpu',
                   rank: int = 0,
                   world_size: int = 1,
                   force: bool = False,
                   model_mpp: Optional[float] = None,
                   slide_mpp: Optional[float] = None,
                   tile: int = 224,
                   overlap: int = 32,
                   batch_size: int = 8,
                   stain_norm: Optional[str] = None,
                   cfg_options: Optional[dict] = None) -> Dict[str, dict]:
    """Segment this rank's share of the slides named by ``inputs``.

    The inputs and the stain reference are checked before the model is
    built.

    Args:
        config: Stage-2 config file or loaded config.
        checkpoint: Its local checkpoint.
        inputs: Slide files or folders of slides (see
            :func:`~.slide_inference.slides_in`).
        out_dir: Output folder of the four files per slide.
        device: Device of the model.
        rank: This process's rank; it takes ``slides[rank::world_size]``.
        world_size: Number of processes.
        force: Redo slides whose outputs are complete.
        model_mpp: µm per pixel of the training images (default: the
            config's ``train_mpp``).
        slide_mpp: The slides' level-0 µm per pixel, overriding their
            metadata.
        tile: Tile side, in pixels at ``model_mpp``.
        overlap: Pixels shared by neighbouring tiles, in [0, tile).
        batch_size: Tiles per forward pass.
        stain_norm: Macenko-normalise each slide (one mapping per slide)
            towards this reference image or the stain target a checkpoint
            carries.
        cfg_options: ``--cfg-options`` style config overrides.

    Returns:
        dict: Slide path -> its stats, or ``{'skipped': True}`` for a slide
        finished before (see :func:`~.slide_inference.infer_slides`).

    Raises:
        ValueError: On tiling arguments out of range, a ``model_mpp`` or
            ``slide_mpp`` not above 0, or without ``model_mpp`` when the
            config has no ``train_mpp``.
        FileNotFoundError: If an input or ``stain_norm`` does not exist.
        RuntimeError: After the others ran, naming every slide that failed.
    """
    check_tiling(tile, overlap, batch_size)
    for name, flag, value in (('model_mpp', '--model-mpp', model_mpp),
                              ('slide_mpp', '--mpp', slide_mpp)):
        if value is not None and not value > 0:
            raise ValueError(f'{name} ({flag}) must be > 0, got {value}')
    slides = slides_in(inputs)
    normalizer = None if stain_norm is None else \
        build_stain_normalizer(stain_norm)
    model = init_segmentor(config, checkpoint, device, cfg_options)
    if model_mpp is None:
        model_mpp = model.cfg.get('train_mpp')
    if model_mpp is None:
        raise ValueError(
            f'{model.cfg.filename}: no train_mpp (µm per pixel of the '
            'training images); pass model_mpp (--model-mpp)')
    return infer_slides(
        model, slides, out_dir, rank=rank, world_size=world_size,
        force=force, model_mpp=model_mpp, slide_mpp=slide_mpp, tile=tile,
        overlap=overlap, batch_size=batch_size, stain_normalizer=normalizer)
