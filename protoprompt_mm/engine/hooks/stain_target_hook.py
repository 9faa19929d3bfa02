"""StainTargetHook: the training images' stain, carried by the checkpoint."""
import logging
from typing import List, Optional

import numpy as np
from mmengine.dist import broadcast_object_list, is_main_process
from mmengine.hooks import Hook
from mmengine.logging import print_log
from mmseg.registry import HOOKS

from ...datasets.stain import fit_stain_target
from ...utils.dist import failure_on_any_rank_raises_on_all


@HOOKS.register_module()
class StainTargetHook(Hook):
    """Fit a Macenko stain target on training images; store it in checkpoints.

    Before training, ``num_images`` images of ``train_dataloader.dataset``
    (evenly spaced over its data list, so the sample is deterministic) are
    pooled into one Macenko fit (:func:`~protoprompt_mm.datasets.stain.
    fit_stain_target`) on rank 0 and shared with every rank; each saved
    checkpoint carries it as ``meta['stain_target']`` (``stain_matrix``,
    ``max_concentrations``, ``num_images``). Stain normalisation at
    inference can then target the stain the model was trained on:
    ``tools/test.py --stain-norm CKPT``, ``tools/infer_region.py
    --stain-norm CKPT``, ``MacenkoStainNormalize(reference=CKPT)``.

    A resumed run keeps the target of the checkpoint it resumes from. A
    training set with too little tissue for a fit raises before training
    (on every rank) unless ``strict=False``, which logs a warning and
    stores no target.

    Example::

        default_hooks = dict(stain_target=dict(type='StainTargetHook',
                                               num_images=64))

    Args:
        num_images: Training images pooled at most.
        max_pixels_per_image: Pixels sampled from each image at most.
        strict: Raise when the fit fails (else warn and store nothing).
    """

    priority = 'LOW'

    def __init__(self,
                 num_images: int = 64,
                 max_pixels_per_image: int = 20_000,
                 strict: bool = True) -> None:
        if num_images < 1 or max_pixels_per_image < 1:
            raise ValueError('StainTargetHook: num_images and '
                             'max_pixels_per_image must be >= 1, got '
                             f'{num_images} and {max_pixels_per_image}')
        self.num_images = num_images
        self.max_pixels_per_image = max_pixels_per_image
        self.strict = strict
        self.target: Optional[dict] = None

    def sample_paths(self, dataset) -> List[str]:
        """``img_path`` of up to ``num_images`` evenly spaced samples."""
        count = len(dataset)
        indices = np.unique(
            np.linspace(0, count - 1, min(self.num_images, count)).astype(
                int)) if count else []
        return [dataset.get_data_info(int(i))['img_path'] for i in indices]

    def fit(self, runner) -> Optional[dict]:
        """The target of the runner's training images (rank 0's work)."""
        paths = self.sample_paths(runner.train_dataloader.dataset)
        try:
            return fit_stain_target(paths, self.max_pixels_per_image)
        except ValueError as error:
            if self.strict:
                raise ValueError(
                    f'StainTargetHook: {error}; the training images have '
                    'too little H&E tissue for a Macenko fit (set '
                    'default_hooks.stain_target.strict=False to train '
                    'without a stain target)') from error
            print_log(f'StainTargetHook: no stain target stored ({error})',
                      logger='current', level=logging.WARNING)
            return None

    def before_train(self, runner) -> None:
        """Fit the target unless a resumed checkpoint brought one."""
        if self.target is not None and runner.iter > 0:  # resumed
            return
        result = [None]
        with failure_on_any_rank_raises_on_all('StainTargetHook'):
            if is_main_process():
                result[0] = self.fit(runner)
        broadcast_object_list(result)
        self.target = result[0]
        if self.target is not None:
            print_log(
                f'StainTargetHook: stain target of {self.target["num_images"]}'
                f' training images: H and E vectors '
                f'{self.target["stain_matrix"]}, max concentrations '
                f'{self.target["max_concentrations"]}', logger='current')

    def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
        """Store the target as ``checkpoint['meta']['stain_target']``."""
        if self.target is not None:
            checkpoint.setdefault('meta', {})['stain_target'] = self.target

    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
        """Take a loaded checkpoint's target (kept only when resuming: a
        run that starts at iteration 0 from ``load_from`` fits its own)."""
        self.target = (checkpoint.get('meta') or {}).get('stain_target')
