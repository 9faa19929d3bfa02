"""Image-level (multi-hot) class labels of histology patches.

WSSS histology datasets encode the classes present in a training patch in
its file name, as the last bracket group before the extension:

- BCSS-WSSS: ``TCGA-A1-A0SK-DX1_xmin45749_ymin25055_MPP-0.2500+1[1101].png``
  (one digit per class, no separator);
- LUAD-HistoSeg: ``…-[1 0 0 1].png`` (digits separated by whitespace).

When a name carries no flags (some validation / test images), the labels
are the classes present in the ground-truth mask.
"""
import os.path as osp
import re
from typing import Optional

import numpy as np

_BRACKET_GROUP = re.compile(r'\[([^\[\]]*)\]')


def parse_image_labels(path: str, num_classes: int) -> Optional[np.ndarray]:
    """Parse the multi-hot class flags from a patch file name.

    The flags are the content of the last ``[...]`` group of the file name
    without its extension, either as contiguous digits (``[1101]``) or
    separated by whitespace or commas (``[1 0 0 1]``).

    Args:
        path (str): Image path; only its base name is parsed.
        num_classes (int): Expected number of flags.

    Returns:
        np.ndarray | None: int64 array of shape ``(num_classes,)`` with 1 for
        every class present, or None when the name has no bracket group.

    Raises:
        ValueError: If the last bracket group does not hold exactly
            ``num_classes`` flags, or a flag is not ``0`` / ``1``.
    """
    stem = osp.splitext(osp.basename(path))[0]
    groups = _BRACKET_GROUP.findall(stem)
    if not groups:
        return None
    body = groups[-1].strip()
    if re.search(r'[\s,]', body):
        flags = [flag for flag in re.split(r'[\s,]+', body) if flag]
    else:
        flags = list(body)
    if len(flags) != num_classes:
        raise ValueError(
            f'{path}: expected {num_classes} class flags in the last bracket '
            f'group of the file name, got {len(flags)} in "[{groups[-1]}]"')
    bad = [flag for flag in flags if flag not in ('0', '1')]
    if bad:
        raise ValueError(f'{path}: class flags must be 0 or 1, got {bad} in '
                         f'"[{groups[-1]}]"')
    return np.array([int(flag) for flag in flags], dtype=np.int64)


def labels_from_mask(mask: np.ndarray, num_classes: int) -> np.ndarray:
    """Multi-hot labels of the classes present in a label map.

    Values outside ``[0, num_classes)`` (background, ignore) are not
    classes and do not count.

    Args:
        mask (np.ndarray): Integer label map of any shape.
        num_classes (int): Number of classes.

    Returns:
        np.ndarray: int64 array of shape ``(num_classes,)``, 1 for every
        class with at least one pixel.

    Raises:
        TypeError: If ``mask`` is not an integer array.
    """
    mask = np.asarray(mask)
    if not np.issubdtype(mask.dtype, np.integer):
        raise TypeError(
            f'mask must be an integer label map, got dtype {mask.dtype}')
    values = mask[(mask >= 0) & (mask < num_classes)]
    counts = np.bincount(
        values.ravel().astype(np.int64), minlength=num_classes)
    return (counts > 0).astype(np.int64)
