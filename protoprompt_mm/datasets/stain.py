"""Stain maths of H&E images: colour deconvolution, stain shifts, Macenko.

Every function here takes and returns RGB images (H, W, 3); mmseg
pipelines load BGR (``LoadImageFromFile`` decodes with cv2 / mmcv's
default ``channel_order='bgr'``), so callers holding BGR arrays go through
:func:`apply_to_bgr`.

Optical density (Beer-Lambert) of an 8-bit intensity ``I`` per channel is
``OD = -ln((I + 1) / 256)``: white (255) is exactly 0, and the inverse
``I = 256 exp(-OD) - 1`` makes a round trip through OD exact. A pixel's
OD is the sum of its stains' unit OD vectors (rows of a stain matrix, RGB)
times their concentrations (natural-log OD units).

Colour deconvolution uses Ruifrok & Johnston's H / E / DAB vectors
(Anal. Quant. Cytol. Histol. 23(4), 2001), the matrix of scikit-image's
``rgb2hed``. Unlike ``rgb2hed`` nothing is clipped, so concentrations may
be negative for colours outside the stain cone and ``hed_to_rgb`` inverts
``rgb_to_hed`` exactly (scikit-image clips them at 0, and its units have
changed between releases, which would make a jitter range
version-dependent; the maths is one 3 x 3 matrix).

Macenko's normalisation (Macenko et al., ISBI 2009) estimates the H and E
vectors of an image from the extreme angles of its tissue ODs in the plane
of their two main eigenvectors, and each stain's 99th-percentile
concentration; a source image is re-rendered with the target's vectors and
its concentrations rescaled to the target's maxima. It is written here
rather than taken from ``torchstain``, whose normaliser fits and applies in
one call on the whole image in float64 (no subsampled fit and banded
application for large regions, RGB only, an obscure failure on a patch of
glass); it is tested against a known decomposition.
"""
import math
import os.path as osp
from typing import Callable, Dict, Optional, Sequence, Tuple

import mmcv
import numpy as np
import torch

# Unit OD vectors (RGB) of haematoxylin, eosin and DAB (Ruifrok & Johnston).
RGB_FROM_HED = np.array([[0.65, 0.70, 0.29], [0.07, 0.99, 0.11],
                         [0.27, 0.57, 0.78]])
RGB_FROM_HED /= np.linalg.norm(RGB_FROM_HED, axis=1, keepdims=True)
HED_FROM_RGB = np.linalg.inv(RGB_FROM_HED)

# The fixed re-stainings of the stain-shift evaluation: multiplicative
# factors of the (H, E) concentrations of Ruifrok-Johnston deconvolution;
# DAB and the residual are kept, nothing is added (white stays white).
STAIN_SHIFTS: Dict[str, Tuple[float, float]] = {
    'paler': (0.7, 0.7),
    'darker': (1.3, 1.3),
    'haematoxylin_heavy': (1.5, 1.0),
    'eosin_heavy': (1.0, 1.5),
}


def check_image(img: np.ndarray, where: str) -> None:
    """Raise a ValueError unless ``img`` is an (H, W, 3) colour image."""
    if not isinstance(img, np.ndarray) or img.ndim != 3 \
            or img.shape[2] != 3:
        shape = getattr(img, 'shape', type(img).__name__)
        raise ValueError(f'{where}: expected a colour image (H, W, 3), got '
                         f'{shape}; load it with color_type="color"')


def optical_density(rgb: np.ndarray) -> np.ndarray:
    """``-ln((I + 1) / 256)`` of intensities in [0, 255], as float32."""
    return -np.log((np.asarray(rgb, np.float32) + 1) / 256)


def intensity(od: np.ndarray) -> np.ndarray:
    """Inverse of :func:`optical_density`, clipped to [0, 255] (float32)."""
    return np.clip(256 * np.exp(-od) - 1, 0, 255).astype(np.float32)


def as_dtype_of(values: np.ndarray, like: np.ndarray) -> np.ndarray:
    """``values`` rounded to uint8 if ``like`` is uint8, else float32."""
    if like.dtype == np.uint8:
        return np.rint(values).astype(np.uint8)
    return values.astype(np.float32)


def rgb_to_hed(rgb: np.ndarray) -> np.ndarray:
    """H, E, DAB concentrations (..., 3) of an RGB image (float32)."""
    return optical_density(rgb) @ HED_FROM_RGB.astype(np.float32)


def hed_to_rgb(hed: np.ndarray) -> np.ndarray:
    """RGB intensities in [0, 255] (float32) of H, E, DAB concentrations."""
    return intensity(hed @ RGB_FROM_HED.astype(np.float32))


def scale_stains(rgb: np.ndarray,
                 scales: Sequence[float],
                 shifts: Sequence[float] = (0.0, 0.0, 0.0)) -> np.ndarray:
    """Re-stain an image in HED space: ``c' = scale * c + shift``.

    Args:
        rgb: RGB image (H, W, 3), uint8 or float in [0, 255].
        scales: Factors of the H, E, DAB concentrations (3 values; 2 leave
            DAB as it is).
        shifts: Added H, E, DAB concentrations (OD units).

    Returns:
        np.ndarray: The re-stained image, uint8 (rounded) for a uint8
        input, else float32.
    """
    factors = np.ones(3, np.float32)
    factors[:len(scales)] = scales
    hed = rgb_to_hed(rgb) * factors + np.asarray(shifts, np.float32)
    return as_dtype_of(hed_to_rgb(hed), rgb)


def apply_to_bgr(fn: Callable[[np.ndarray], np.ndarray],
                 bgr: np.ndarray) -> np.ndarray:
    """Run an RGB image function on a BGR image; contiguous BGR result."""
    return np.ascontiguousarray(fn(bgr[..., ::-1])[..., ::-1])


def _unit_positive(vector: np.ndarray) -> np.ndarray:
    """``vector`` scaled to unit length with a positive component sum."""
    return vector / np.linalg.norm(vector) * np.sign(vector.sum())


def macenko_stains(rgb: np.ndarray,
                   beta: float = 0.15,
                   alpha: float = 1.0,
                   max_pixels: int = 1_000_000,
                   min_pixels: int = 100,
                   where: str = 'macenko_stains') -> Tuple[np.ndarray,
                                                           np.ndarray]:
    """Macenko estimate of the H and E vectors of an RGB image.

    Tissue pixels are those with an OD of at least ``beta`` in every
    channel; a regular grid of at most ``max_pixels`` pixels of the image
    is used (every ``step``-th row and column; deterministic).

    Args:
        rgb: RGB image (H, W, 3), uint8 or float in [0, 255].
        beta: OD threshold of tissue pixels.
        alpha: Percentile of the extreme angles (robust min / max).
        max_pixels: Pixels sampled at most.
        min_pixels: Tissue pixels needed in the sample.
        where: Name of the image in the error message.

    Returns:
        tuple: ``stain_matrix`` (2, 3) unit OD vectors of H (the one with
        the larger red OD) and E, rows; ``max_concentrations`` (2,) their
        99th-percentile concentrations over the tissue pixels.

    Raises:
        ValueError: If fewer than ``min_pixels`` sampled pixels are tissue
            (e.g. a patch of glass).
    """
    check_image(rgb, where)
    step = math.ceil(math.sqrt(rgb.shape[0] * rgb.shape[1] / max_pixels))
    pixels = rgb[::step, ::step].reshape(-1, 3)
    od = optical_density(pixels).astype(np.float64)
    tissue = od[(od >= beta).all(axis=1)]
    if len(tissue) < min_pixels:
        raise ValueError(
            f'{where}: {len(tissue)} tissue pixels (OD >= {beta} in every '
            f'channel) of {len(pixels)} sampled, need {min_pixels}; is it '
            'an H&E image with tissue?')
    _, eigvecs = np.linalg.eigh(np.cov(tissue.T))
    plane = np.stack([_unit_positive(eigvecs[:, 2]), eigvecs[:, 1]], axis=1)
    projected = tissue @ plane
    angles = np.arctan2(projected[:, 1], projected[:, 0])
    extremes = [
        _unit_positive(plane @ [math.cos(angle), math.sin(angle)])
        for angle in np.percentile(angles, [alpha, 100 - alpha])
    ]
    stain_matrix = np.stack(sorted(extremes, key=lambda v: -v[0]))
    concentrations = tissue @ np.linalg.pinv(stain_matrix)
    return stain_matrix, np.percentile(concentrations, 99, axis=0)


class MacenkoNormalizer:
    """Macenko stain normalisation towards a target's stains.

    Args:
        stain_matrix: Target H and E unit OD vectors, rows (2, 3), RGB.
        max_concentrations: Target 99th-percentile H and E concentrations.
        beta: OD threshold of tissue pixels (source fit).
        alpha: Percentile of the extreme angles (source fit).
        band: Rows normalised at a time (bounds the float32 temporaries of
            a large region to ``band * W * 3`` values).
    """

    def __init__(self,
                 stain_matrix: Sequence[Sequence[float]],
                 max_concentrations: Sequence[float],
                 beta: float = 0.15,
                 alpha: float = 1.0,
                 band: int = 1024) -> None:
        matrix = np.asarray(stain_matrix, np.float64)
        maxima = np.asarray(max_concentrations, np.float64)
        if matrix.shape != (2, 3) or maxima.shape != (2, ) \
                or not (maxima > 0).all() or not np.isfinite(matrix).all():
            raise ValueError(
                'MacenkoNormalizer: need stain_matrix (2, 3): the H and E '
                'OD vectors (RGB) as rows, and max_concentrations: 2 '
                f'positive numbers; got {matrix.tolist()} and '
                f'{maxima.tolist()}')
        self.stain_matrix = matrix / np.linalg.norm(
            matrix, axis=1, keepdims=True)
        self.max_concentrations = maxima
        self.beta, self.alpha, self.band = beta, alpha, band

    @classmethod
    def from_image(cls, path: str, **kwargs) -> 'MacenkoNormalizer':
        """A normaliser towards the stains of a reference image file.

        Args:
            path: Image file with tissue (any size, subsampled).
            **kwargs: ``beta``, ``alpha``, ``band`` of the normaliser.

        Raises:
            FileNotFoundError: If ``path`` is not a readable image.
            ValueError: If the image has too little tissue.
        """
        bgr = mmcv.imread(path)  # None if missing or not an image
        if bgr is None:
            raise FileNotFoundError(f'{path}: not a readable image (the '
                                    'stain normalisation reference)')
        beta = kwargs.get('beta', 0.15)
        alpha = kwargs.get('alpha', 1.0)
        return cls(*macenko_stains(bgr[..., ::-1], beta, alpha, where=path),
                   **kwargs)

    def normalize(self, rgb: np.ndarray) -> np.ndarray:
        """The RGB image re-rendered with the target's stains.

        An image with too little tissue for a Macenko fit (see
        :func:`macenko_stains`) is returned as it is.

        Args:
            rgb: RGB image (H, W, 3), uint8 or float in [0, 255].

        Returns:
            np.ndarray: Normalised image, the dtype of ``rgb`` (uint8
            rounded, else float32).
        """
        check_image(rgb, 'MacenkoNormalizer')
        try:
            remix = self.fit(rgb)
        except ValueError:  # too little tissue
            return rgb.copy()
        return self.apply(rgb, remix)

    def fit(self, rgb: np.ndarray, where: str = 'MacenkoNormalizer'
            ) -> np.ndarray:
        """The OD transform taking the stains of ``rgb`` to the target's.

        Fit once on a sample of a slide and :meth:`apply` it to every tile,
        so all tiles of the slide get the same colour mapping.

        Args:
            rgb: RGB source image or pooled pixels (H, W, 3).
            where: Name of the source in the error message.

        Returns:
            np.ndarray: float32 (3, 3): source OD -> normalised OD.

        Raises:
            ValueError: If ``rgb`` has too little tissue for a fit.
        """
        matrix, maxima = macenko_stains(rgb, self.beta, self.alpha,
                                        where=where)
        unmix = np.linalg.pinv(matrix) * (self.max_concentrations / maxima)
        return (unmix @ self.stain_matrix).astype(np.float32)

    def apply(self, rgb: np.ndarray, remix: np.ndarray) -> np.ndarray:
        """``rgb`` re-rendered through an OD transform from :meth:`fit`.

        Args:
            rgb: RGB image (H, W, 3), uint8 or float in [0, 255].
            remix: (3, 3) transform.

        Returns:
            np.ndarray: The image in the dtype of ``rgb`` (uint8 rounded,
            else float32), ``band`` rows at a time.
        """
        check_image(rgb, 'MacenkoNormalizer')
        out = np.empty(rgb.shape, np.uint8 if rgb.dtype == np.uint8 else
                       np.float32)
        for y in range(0, rgb.shape[0], self.band):
            rows = optical_density(rgb[y:y + self.band]) @ remix
            out[y:y + self.band] = as_dtype_of(intensity(rows), rgb)
        return out


def fit_stain_target(paths: Sequence[str],
                     max_pixels_per_image: int = 20_000,
                     beta: float = 0.15,
                     alpha: float = 1.0) -> Dict[str, list]:
    """One Macenko target from the pooled tissue pixels of many images.

    A regular grid of at most ``max_pixels_per_image`` pixels of each image
    is pooled and fitted once (:func:`macenko_stains`), so the target
    describes the stain of the whole set rather than of one image.

    Args:
        paths: Image files (e.g. a sample of the training images).
        max_pixels_per_image: Pixels taken from each image at most.
        beta: OD threshold of tissue pixels.
        alpha: Percentile of the extreme angles.

    Returns:
        dict: ``stain_matrix`` (2 x 3 list, H and E unit OD vectors, RGB),
        ``max_concentrations`` (2 numbers) and ``num_images``: the keyword
        arguments of :class:`MacenkoNormalizer` (and of
        ``MacenkoStainNormalize``) plus the count.

    Raises:
        FileNotFoundError: If a file is not a readable image.
        ValueError: If ``paths`` is empty or the pooled pixels hold too
            little tissue.
    """
    if not paths:
        raise ValueError('fit_stain_target: no images given')
    samples = []
    for path in paths:
        bgr = mmcv.imread(path)
        if bgr is None:
            raise FileNotFoundError(f'{path}: not a readable image (fitting '
                                    'the stain target)')
        check_image(bgr, path)
        step = math.ceil(math.sqrt(bgr.shape[0] * bgr.shape[1] /
                                   max_pixels_per_image))
        samples.append(bgr[::step, ::step, ::-1].reshape(-1, 3))
    pooled = np.concatenate(samples)[:, None, :]  # (N, 1, 3) RGB
    matrix, maxima = macenko_stains(
        pooled, beta, alpha, max_pixels=len(pooled),
        where=f'the pooled pixels of {len(paths)} images')
    return dict(stain_matrix=matrix.round(6).tolist(),
                max_concentrations=maxima.round(6).tolist(),
                num_images=len(paths))


def stain_target_from_checkpoint(path: str) -> Dict[str, list]:
    """The stain target a training run stored in its checkpoint.

    ``StainTargetHook`` writes it to ``checkpoint['meta']['stain_target']``.

    Args:
        path: A local ``.pth`` checkpoint.

    Returns:
        dict: ``stain_matrix`` and ``max_concentrations`` (see
        :func:`fit_stain_target`).

    Raises:
        FileNotFoundError: If ``path`` is not a file.
        KeyError: If the checkpoint carries no stain target.
    """
    if not osp.isfile(path):
        raise FileNotFoundError(f'{path}: no such checkpoint')
    meta = torch.load(path, map_location='cpu',
                      weights_only=False).get('meta') or {}
    target = meta.get('stain_target')
    if target is None:
        raise KeyError(
            f'{path}: the checkpoint carries no stain target '
            "(meta['stain_target']); it is written by StainTargetHook "
            '(default_hooks.stain_target of the schedules in '
            'configs/_base_/schedules); give a reference image instead')
    return {key: target[key]
            for key in ('stain_matrix', 'max_concentrations')}


def is_checkpoint_path(path: str) -> bool:
    """Whether ``path`` names a PyTorch checkpoint (``.pth`` / ``.pt``)."""
    return path.lower().endswith(('.pth', '.pt'))


def build_stain_normalizer(reference: Optional[str] = None,
                           stain_matrix: Optional[Sequence] = None,
                           max_concentrations: Optional[Sequence] = None,
                           **kwargs) -> MacenkoNormalizer:
    """A :class:`MacenkoNormalizer` from a reference image or statistics.

    Args:
        reference: Reference image path, or a checkpoint (``.pth`` / ``.pt``)
            whose training run stored the stain target of its training
            images (:func:`stain_target_from_checkpoint`); or
        stain_matrix: Target H and E OD vectors (2, 3), with
        max_concentrations: their 2 maximal concentrations.
        **kwargs: ``beta``, ``alpha``, ``band`` of the normaliser.

    Raises:
        ValueError: Unless exactly one of ``reference`` and the pair
            (``stain_matrix``, ``max_concentrations``) is given.
    """
    given = [s is not None for s in (stain_matrix, max_concentrations)]
    if (reference is None) != all(given) or any(given) != all(given):
        raise ValueError(
            'stain normalisation: give either reference=<image path> or '
            'both stain_matrix=[[H r, g, b], [E r, g, b]] and '
            'max_concentrations=[H, E], not both')
    if reference is not None and is_checkpoint_path(reference):
        return MacenkoNormalizer(
            **stain_target_from_checkpoint(reference), **kwargs)
    if reference is not None:
        return MacenkoNormalizer.from_image(reference, **kwargs)
    return MacenkoNormalizer(stain_matrix, max_concentrations, **kwargs)
