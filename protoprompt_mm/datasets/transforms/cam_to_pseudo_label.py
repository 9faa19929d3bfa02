"""Turn class activation maps into a pseudo label map."""
from typing import Optional

import numpy as np
from mmcv.transforms import BaseTransform
from mmseg.registry import TRANSFORMS

from .load_histo_annotations import check_label_ids


THRESH_MODES = ('fixed', 'adaptive')


def _check_threshold(fg_thresh: float, thresh_mode: str) -> None:
    """Require ``0 <= fg_thresh <= 1`` and a known ``thresh_mode``."""
    if thresh_mode not in THRESH_MODES:
        raise ValueError(f'thresh_mode must be one of {THRESH_MODES}, got '
                         f'{thresh_mode!r}')
    if not 0.0 <= fg_thresh <= 1.0:
        raise ValueError(
            f'fg_thresh must satisfy 0 <= fg_thresh <= 1, got {fg_thresh}')


def cams_to_pseudo_label(cams: np.ndarray,
                         img_labels: np.ndarray,
                         fg_thresh: float,
                         thresh_mode: str = 'fixed',
                         ignore_index: int = 255) -> np.ndarray:
    """Pseudo label map from per-class CAMs gated by image-level labels.

    Classes absent from ``img_labels`` are excluded, so they can never be
    predicted (like zeroing their CAMs, without an absent class winning a
    tie at 0). With ``c`` the arg-max of a pixel among the kept classes and
    ``s = cams[c]`` there, the pixel gets ``c`` when ``s`` reaches the
    threshold of ``c``, else ``ignore_index`` (unsure; stage 2 does not
    train on it):

    - ``'fixed'``: ``s >= fg_thresh``;
    - ``'adaptive'`` (PBIP's ``MaskAdapter_DynamicThreshold``):
      ``s >= fg_thresh * max(cams[c])`` over this image and ``s > 0``, i.e.
      ``fg_thresh`` is a fraction alpha of each (image, class) map's peak;
      a map that is zero everywhere labels no pixel.

    The CAMs of ``CAMSegmentor`` are peak-normalised (every map peaks at
    about 1), so on them both modes agree; they differ on CAMs with lower
    peaks. A patch without any class is all ``ignore_index``.

    Args:
        cams (np.ndarray): (N, H, W) float scores in [0, 1].
        img_labels (np.ndarray): (N,) flags 0 / 1.
        fg_thresh (float): The threshold in [0, 1], a score (``'fixed'``)
            or a fraction of the map's peak (``'adaptive'``).
        thresh_mode (str): ``'fixed'`` or ``'adaptive'``. Defaults to
            ``'fixed'``.
        ignore_index (int): Value of unsure pixels. Defaults to 255.

    Returns:
        np.ndarray: uint8 (H, W) label map, class ids or ``ignore_index``.

    Raises:
        ValueError: On a bad threshold, mode or id, shapes that do not
            match, flags other than 0 / 1 or scores outside [0, 1].
    """
    _check_threshold(fg_thresh, thresh_mode)
    cams = np.asarray(cams)
    img_labels = np.asarray(img_labels)
    if cams.ndim != 3 or not np.issubdtype(cams.dtype, np.floating):
        raise ValueError(f'cams must be a float (N, H, W) array, got dtype '
                         f'{cams.dtype} and shape {cams.shape}')
    if img_labels.shape != cams.shape[:1]:
        raise ValueError(f'img_labels of shape {img_labels.shape} does not '
                         f'match the {cams.shape[0]} CAM channels')
    if not np.isin(img_labels, (0, 1)).all():
        raise ValueError(
            f'img_labels must be 0 / 1 flags, got {img_labels.tolist()}')
    check_label_ids(cams.shape[0], ignore_index=ignore_index)
    scores = cams.astype(np.float32)
    if not ((scores >= 0) & (scores <= 1)).all():
        raise ValueError(f'CAM scores must lie in [0, 1], got range '
                         f'[{np.nanmin(scores)}, {np.nanmax(scores)}] '
                         f'(or NaN)')
    present = img_labels.astype(bool)[:, None, None]
    scores = np.where(present, scores, -1.0)
    label_map = scores.argmax(axis=0)
    best = scores.max(axis=0)
    if thresh_mode == 'fixed':
        confident = best >= fg_thresh
    else:
        peaks = scores.reshape(len(scores), -1).max(axis=1)
        confident = (best >= fg_thresh * peaks[label_map]) & (best > 0)
    return np.where(confident, label_map, ignore_index).astype(np.uint8)


@TRANSFORMS.register_module()
class CAMToPseudoLabel(BaseTransform):
    """Threshold CAMs into a pseudo label map, see
    :func:`cams_to_pseudo_label`.

    Required Keys:

    - cams (np.ndarray): (N, H, W) float scores in [0, 1].
    - img_labels (np.ndarray): (N,) flags 0 / 1.

    Added Keys:

    - gt_seg_map (np.uint8): (H, W) with class ids and ``ignore_index``.
    - seg_fields (List)

    Args:
        fg_thresh (float): Threshold in [0, 1] of confident pixels.
        thresh_mode (str): ``'fixed'`` (a score) or ``'adaptive'`` (a
            fraction of each map's peak). Defaults to ``'fixed'``.
        ignore_index (int): Value of unsure pixels. Defaults to 255.
        gate_by_labels (bool): Exclude classes absent from ``img_labels``.
            Defaults to True.
    """

    def __init__(self,
                 fg_thresh: float,
                 thresh_mode: str = 'fixed',
                 ignore_index: int = 255,
                 gate_by_labels: bool = True) -> None:
        _check_threshold(fg_thresh, thresh_mode)
        self.fg_thresh = fg_thresh
        self.thresh_mode = thresh_mode
        self.ignore_index = ignore_index
        self.gate_by_labels = gate_by_labels

    def convert(self,
                cams: np.ndarray,
                img_labels: np.ndarray,
                source: Optional[str] = None) -> np.ndarray:
        """Pseudo label map of ``cams`` with this transform's settings.

        Args:
            cams (np.ndarray): (N, H, W) float scores in [0, 1].
            img_labels (np.ndarray): (N,) flags 0 / 1.
            source (str, optional): File the CAMs belong to, prefixed to
                error messages. Defaults to None.

        Returns:
            np.ndarray: uint8 (H, W) label map.
        """
        if not self.gate_by_labels:
            img_labels = np.ones(np.shape(cams)[:1], dtype=np.int64)
        try:
            return cams_to_pseudo_label(cams, img_labels, self.fg_thresh,
                                        self.thresh_mode, self.ignore_index)
        except ValueError as err:
            prefix = f'{source}: ' if source else ''
            raise ValueError(f'{prefix}{err}') from err

    def transform(self, results: dict) -> dict:
        """Set ``gt_seg_map`` from ``cams`` and ``img_labels``.

        Args:
            results (dict): Result dict.

        Returns:
            dict: ``results`` with ``gt_seg_map``.
        """
        results['gt_seg_map'] = self.convert(results['cams'],
                                             results['img_labels'],
                                             results.get('img_path'))
        results.setdefault('seg_fields', []).append('gt_seg_map')
        return results

    def __repr__(self) -> str:
        return (f'{self.__class__.__name__}(fg_thresh={self.fg_thresh}, '
                f"thresh_mode='{self.thresh_mode}', "
                f'ignore_index={self.ignore_index}, '
                f'gate_by_labels={self.gate_by_labels})')
