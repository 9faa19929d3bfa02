"""Random rotation by quarter turns (PBIP's ``A.RandomRotate90``)."""
import numpy as np
from mmcv.transforms import BaseTransform
from mmseg.registry import TRANSFORMS


@TRANSFORMS.register_module()
class RandomRotate90(BaseTransform):
    """Rotate the image and its maps by a random multiple of 90 degrees.

    With probability ``prob`` the sample is turned counter-clockwise by k
    quarter turns, k drawn uniformly from {0, 1, 2, 3}: albumentations'
    ``RandomRotate90`` (default p = 0.5), which PBIP's stage 1 applies after
    the flips. Quarter turns need no interpolation or padding, so labels
    stay exact and the ignore index never appears at the borders (mmseg's
    ``RandomRotate`` interpolates and pads; ``RandomRotFlip`` mixes
    arbitrary angles with flips).

    Required Keys:

    - img
    - seg_fields (optional)

    Modified Keys:

    - img
    - img_shape (height and width swap for an odd k)
    - every key in ``seg_fields`` (e.g. gt_seg_map)

    Args:
        prob (float): Probability of drawing a rotation (PBIP: 0.5).
    """

    def __init__(self, prob: float = 0.5) -> None:
        if not 0 <= prob <= 1:
            raise ValueError(f'RandomRotate90: prob must be in [0, 1], got '
                             f'{prob}')
        self.prob = prob

    def transform(self, results: dict) -> dict:
        """Rotate ``img`` and the ``seg_fields`` by the same quarter turns.

        Args:
            results (dict): Result dict; ``img`` (H, W[, C]), seg maps
                (H, W).

        Returns:
            dict: ``results`` with the rotated arrays.
        """
        if np.random.rand() >= self.prob:
            return results
        turns = np.random.randint(4)
        for key in ('img', *results.get('seg_fields', [])):
            results[key] = np.ascontiguousarray(
                np.rot90(results[key], turns, axes=(0, 1)))
        results['img_shape'] = results['img'].shape[:2]
        return results

    def __repr__(self) -> str:
        return f'{self.__class__.__name__}(prob={self.prob})'
