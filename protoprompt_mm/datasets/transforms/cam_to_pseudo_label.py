"""Turn class activation maps into a pseudo label map."""
from typing import Optional

import numpy as np
from mmcv.transforms import BaseTransform
from mmseg.registry import TRANSFORMS

from .load_histo_annotations import check_label_ids


def _check_thresholds(bg_thresh: float, fg_thresh: float) -> None:
    """Require ``0 <= bg_thresh <= fg_thresh <= 1``."""
    if not 0.0 <= bg_thresh <= fg_thresh <= 1.0:
        raise ValueError(f'thresholds must satisfy 0 <= bg_thresh <= '
                         f'fg_thresh <= 1, got bg_thresh={bg_thresh}, '
                         f'fg_thresh={fg_thresh}')


def cams_to_pseudo_label(cams: np.ndarray,
                         img_labels: np.ndarray,
                         bg_thresh: float,
                         fg_thresh: float,
                         ignore_index: int = 255,
                         background_index: int = 4) -> np.ndarray:
    """Pseudo label map from per-class CAMs gated by image-level labels.

    Classes absent from ``img_labels`` are excluded, so they can never be
    predicted (like zeroing their CAMs, without an absent class winning a
    tie at 0). With ``s`` the highest remaining score of a pixel and ``c``
    its class: ``s < bg_thresh`` gives ``background_index``,
    ``bg_thresh <= s < fg_thresh`` gives ``ignore_index`` and
    ``s >= fg_thresh`` gives ``c``. A patch without any class is all
    background.

    Args:
        cams (np.ndarray): (N, H, W) float scores in [0, 1].
        img_labels (np.ndarray): (N,) flags 0 / 1.
        bg_thresh (float): Scores below are background.
        fg_thresh (float): Scores at or above are confident foreground.
        ignore_index (int): Value of uncertain pixels. Defaults to 255.
        background_index (int): Value of background pixels. Defaults to 4.

    Returns:
        np.ndarray: uint8 (H, W) label map.

    Raises:
        ValueError: On bad thresholds / ids, shapes that do not match, flags
            other than 0 / 1 or scores outside [0, 1].
    """
    _check_thresholds(bg_thresh, fg_thresh)
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
    check_label_ids(cams.shape[0], background_index, ignore_index)
    scores = cams.astype(np.float32)
    if not ((scores >= 0) & (scores <= 1)).all():
        raise ValueError(f'CAM scores must lie in [0, 1], got range '
                         f'[{np.nanmin(scores)}, {np.nanmax(scores)}] '
                         f'(or NaN)')
    present = img_labels.astype(bool)[:, None, None]
    scores = np.where(present, scores, -1.0)
    label_map = scores.argmax(axis=0).astype(np.uint8)
    best = scores.max(axis=0)
    label_map[best < fg_thresh] = ignore_index
    label_map[best < bg_thresh] = background_index
    return label_map


@TRANSFORMS.register_module()
class CAMToPseudoLabel(BaseTransform):
    """Threshold CAMs into a pseudo label map, see
    :func:`cams_to_pseudo_label`.

    Required Keys:

    - cams (np.ndarray): (N, H, W) float scores in [0, 1].
    - img_labels (np.ndarray): (N,) flags 0 / 1.

    Added Keys:

    - gt_seg_map (np.uint8): (H, W) with class ids, ``background_index``
      and ``ignore_index``.
    - seg_fields (List)

    Args:
        bg_thresh (float): Scores below are background.
        fg_thresh (float): Scores at or above are confident foreground.
        ignore_index (int): Value of uncertain pixels. Defaults to 255.
        background_index (int): Value of background pixels. Defaults to 4.
        gate_by_labels (bool): Exclude classes absent from ``img_labels``.
            Defaults to True.
    """

    def __init__(self,
                 bg_thresh: float,
                 fg_thresh: float,
                 ignore_index: int = 255,
                 background_index: int = 4,
                 gate_by_labels: bool = True) -> None:
        _check_thresholds(bg_thresh, fg_thresh)
        self.bg_thresh = bg_thresh
        self.fg_thresh = fg_thresh
        self.ignore_index = ignore_index
        self.background_index = background_index
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
            return cams_to_pseudo_label(cams, img_labels, self.bg_thresh,
                                        self.fg_thresh, self.ignore_index,
                                        self.background_index)
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
        return (f'{self.__class__.__name__}(bg_thresh={self.bg_thresh}, '
                f'fg_thresh={self.fg_thresh}, '
                f'ignore_index={self.ignore_index}, '
                f'background_index={self.background_index}, '
                f'gate_by_labels={self.gate_by_labels})')
