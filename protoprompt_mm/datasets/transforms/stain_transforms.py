"""Stain augmentation, fixed stain shifts and stain normalisation.

The image of an mmseg pipeline is BGR (``LoadImageFromFile``: cv2
decoding, mmcv's ``channel_order='bgr'``), uint8, or float32 in [0, 255]
with ``to_float32=True``; these transforms convert to RGB for the stain
maths of :mod:`protoprompt_mm.datasets.stain`, return BGR of the input's
dtype and leave every other key (masks, labels) untouched.
"""
from typing import Optional, Sequence

import numpy as np
from mmcv.transforms import BaseTransform
from mmseg.registry import TRANSFORMS

from ..stain import (STAIN_SHIFTS, apply_to_bgr, build_stain_normalizer,
                     check_image, scale_stains)


@TRANSFORMS.register_module()
class RandomHEDJitter(BaseTransform):
    """Random per-stain scale and shift in HED space (stain augmentation).

    The image is deconvolved into haematoxylin, eosin and DAB
    concentrations with Ruifrok & Johnston's matrix; each stain's
    concentration ``c`` becomes ``a * c + b`` with ``a ~ U(1 - scale_sigma,
    1 + scale_sigma)`` and ``b ~ U(-shift_sigma, shift_sigma)`` (OD units),
    drawn per image and stain, and the image is recomposed. This is the
    HED augmentation of Tellez et al. (Whole-slide mitosis detection in H&E
    breast histology using PHH3 as a reference to train distilled
    stain-invariant CNNs, IEEE TMI 2018; and Quantifying the effects of data
    augmentation and stain color normalization in convolutional neural
    networks for computational pathology, MedIA 2019: "HED-light"
    sigma = 0.05, "HED-strong" 0.2). Draws come from NumPy's global RNG
    (seeded per worker by mmengine), so a seed fixes them.

    Required Keys:

    - img (BGR, uint8 or float in [0, 255])

    Modified Keys:

    - img

    Args:
        scale_sigma (float): Half-width of the multiplicative range, in
            [0, 1).
        shift_sigma (float): Half-width of the additive range (OD), >= 0.
        prob (float): Probability of jittering an image.
    """

    def __init__(self,
                 scale_sigma: float = 0.05,
                 shift_sigma: float = 0.05,
                 prob: float = 1.0) -> None:
        if not 0 <= scale_sigma < 1 or shift_sigma < 0 or not 0 <= prob <= 1:
            raise ValueError(
                f'RandomHEDJitter: need 0 <= scale_sigma < 1, shift_sigma '
                f'>= 0 and prob in [0, 1], got {scale_sigma}, {shift_sigma}, '
                f'{prob}')
        self.scale_sigma, self.shift_sigma, self.prob = (scale_sigma,
                                                         shift_sigma, prob)

    def transform(self, results: dict) -> dict:
        """Jitter ``results['img']``.

        Args:
            results (dict): Result dict with ``img`` (H, W, 3), BGR.

        Returns:
            dict: ``results`` with the re-stained ``img``.
        """
        check_image(results['img'], 'RandomHEDJitter')
        if np.random.rand() >= self.prob:
            return results
        scales = np.random.uniform(1 - self.scale_sigma,
                                   1 + self.scale_sigma, 3)
        shifts = np.random.uniform(-self.shift_sigma, self.shift_sigma, 3)
        results['img'] = apply_to_bgr(
            lambda rgb: scale_stains(rgb, scales, shifts), results['img'])
        return results

    def __repr__(self) -> str:
        return (f'{self.__class__.__name__}(scale_sigma={self.scale_sigma}, '
                f'shift_sigma={self.shift_sigma}, prob={self.prob})')


@TRANSFORMS.register_module()
class FixedStainShift(BaseTransform):
    """Re-stain every image by one fixed HED shift (stain-shift test).

    The H and E concentrations are multiplied by the factors of
    ``STAIN_SHIFTS[condition]`` (:mod:`protoprompt_mm.datasets.stain`):
    ``paler`` 0.7 / 0.7, ``darker`` 1.3 / 1.3, ``haematoxylin_heavy``
    1.5 / 1.0, ``eosin_heavy`` 1.0 / 1.5. Insert it right after
    ``LoadImageFromFile`` of a test pipeline.

    Required Keys:

    - img (BGR, uint8 or float in [0, 255])

    Modified Keys:

    - img

    Args:
        condition (str): A key of ``STAIN_SHIFTS``.
    """

    def __init__(self, condition: str) -> None:
        if condition not in STAIN_SHIFTS:
            raise ValueError(f'FixedStainShift: condition must be one of '
                             f'{sorted(STAIN_SHIFTS)}, got {condition!r}')
        self.condition = condition

    def transform(self, results: dict) -> dict:
        """Re-stain ``results['img']``.

        Args:
            results (dict): Result dict with ``img`` (H, W, 3), BGR.

        Returns:
            dict: ``results`` with the re-stained ``img``.
        """
        check_image(results['img'], 'FixedStainShift')
        scales = STAIN_SHIFTS[self.condition]
        results['img'] = apply_to_bgr(lambda rgb: scale_stains(rgb, scales),
                                      results['img'])
        return results

    def __repr__(self) -> str:
        return f'{self.__class__.__name__}(condition={self.condition!r})'


@TRANSFORMS.register_module()
class MacenkoStainNormalize(BaseTransform):
    """Macenko stain normalisation towards a reference.

    The target is a reference image (``reference``, its stains estimated
    once when the transform is built), a checkpoint whose training run
    stored the stains of its training images (``reference='....pth'``,
    written by ``StainTargetHook``) or stored statistics:
    ``stain_matrix`` (the H and E unit OD vectors, RGB, as 2 rows of 3
    numbers) and ``max_concentrations`` (2 numbers), e.g. Macenko's
    reference values ``stain_matrix=[[0.5626, 0.7201, 0.4062], [0.2159,
    0.8012, 0.5581]], max_concentrations=[1.9705, 1.0308]``. Images with
    too little tissue for a fit pass unchanged (see
    :class:`~protoprompt_mm.datasets.stain.MacenkoNormalizer`).

    Required Keys:

    - img (BGR, uint8 or float in [0, 255])

    Modified Keys:

    - img

    Args:
        reference (str, optional): Reference image or checkpoint path.
        stain_matrix (list, optional): Target (2, 3) H and E OD vectors.
        max_concentrations (list, optional): Target H and E maxima.
        beta (float): OD threshold of tissue pixels.
        alpha (float): Percentile of the extreme stain angles.
    """

    def __init__(self,
                 reference: Optional[str] = None,
                 stain_matrix: Optional[Sequence[Sequence[float]]] = None,
                 max_concentrations: Optional[Sequence[float]] = None,
                 beta: float = 0.15,
                 alpha: float = 1.0) -> None:
        self.reference = reference
        self.normalizer = build_stain_normalizer(
            reference, stain_matrix, max_concentrations, beta=beta,
            alpha=alpha)

    def transform(self, results: dict) -> dict:
        """Normalise ``results['img']``.

        Args:
            results (dict): Result dict with ``img`` (H, W, 3), BGR.

        Returns:
            dict: ``results`` with the normalised ``img``.
        """
        check_image(results['img'], 'MacenkoStainNormalize')
        results['img'] = apply_to_bgr(self.normalizer.normalize,
                                      results['img'])
        return results

    def __repr__(self) -> str:
        target = f'reference={self.reference!r}' if self.reference else \
            (f'stain_matrix={self.normalizer.stain_matrix.round(4).tolist()}'
             f', max_concentrations='
             f'{self.normalizer.max_concentrations.round(4).tolist()}')
        return f'{self.__class__.__name__}({target})'
