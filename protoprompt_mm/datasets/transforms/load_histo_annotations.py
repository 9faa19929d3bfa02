"""Load histology masks (palette PNGs); background mapped to ignore or kept."""
from typing import Optional

import mmcv
import mmengine.fileio as fileio
import numpy as np
from mmseg.datasets.transforms import LoadAnnotations
from mmseg.registry import TRANSFORMS

from .inference_samples import is_inference_sample


def check_label_ids(num_classes: int, **label_ids: int) -> None:
    """Check that non-class ids fit uint8 and are no class ids.

    Args:
        num_classes (int): Number of classes.
        **label_ids (int): The ids by name, e.g. ``ignore_index=255``.

    Raises:
        ValueError: If an id is outside ``[num_classes, 255]`` or
            ``num_classes`` is not positive.
    """
    if num_classes < 1:
        raise ValueError(f'num_classes must be >= 1, got {num_classes}')
    for name, value in label_ids.items():
        if not num_classes <= value <= 255:
            raise ValueError(f'{name} must be in [{num_classes}, 255] (not '
                             f'a class id, fits uint8), got {value}')


def to_training_label_map(label_map: np.ndarray,
                          num_classes: int,
                          background_index: int,
                          ignore_index: int,
                          source: str,
                          keep_background: bool = False) -> np.ndarray:
    """Validate a label map and map background to ``ignore_index``.

    Args:
        label_map (np.ndarray): Integer (H, W) map with values in
            ``0..num_classes-1``, ``background_index`` or ``ignore_index``.
        num_classes (int): Number of classes.
        background_index (int): Background value, mapped to
            ``ignore_index`` unless ``keep_background``.
        ignore_index (int): Ignored value.
        source (str): File the map comes from, for error messages.
        keep_background (bool): Keep ``background_index`` as it is (only
            validate). Defaults to False.

    Returns:
        np.ndarray: uint8 (H, W) map with values in ``0..num_classes-1``,
        ``ignore_index`` and, with ``keep_background``, ``background_index``.

    Raises:
        ValueError: If the map is not a 2-D integer array or holds other
            values.
    """
    if label_map.ndim != 2 or not np.issubdtype(label_map.dtype, np.integer):
        raise ValueError(
            f'{source}: expected a single-channel integer label map (a '
            f'palette or grayscale PNG), got dtype {label_map.dtype} and '
            f'shape {label_map.shape}')
    allowed = np.array(
        sorted({*range(num_classes), background_index, ignore_index}))
    values = np.unique(label_map)
    bad = values[~np.isin(values, allowed)]
    if bad.size:
        raise ValueError(
            f'{source}: label values must be class ids 0..{num_classes - 1}, '
            f'background {background_index} or ignore {ignore_index}; got '
            f'unexpected values {bad.tolist()}')
    out = label_map.astype(np.uint8)
    if not keep_background:
        out[label_map == background_index] = ignore_index
    return out


@TRANSFORMS.register_module()
class LoadHistoAnnotations(LoadAnnotations):
    """Load a histology mask; its background becomes ``ignore_index`` or is
    kept.

    Masks are palette PNGs whose indices are the classes ``0..N-1``,
    ``background_index`` (background / excluded tissue) and possibly
    ``ignore_index`` (uncertain pixels of pseudo masks). Decoding with
    pillow keeps the palette indices. By default background becomes
    ``ignore_index``, so that the loss only sees the ``N`` tissue classes
    (training on pseudo masks). Validation / test pipelines set
    ``keep_background=True``: background then stays ``background_index``,
    distinct from ignored pixels, which ``TissueIoUMetric`` needs for its
    ``'background_as_error'`` protocol (its default protocol ignores
    background either way). A sample of mmseg's inference API
    (``inference_model``, ``MMSegInferencer``: no ``seg_map_path``, no
    ``img_labels``; see :func:`is_inference_sample`) passes through
    unchanged, as mmseg drops its own ``LoadAnnotations`` there.

    Required Keys:

    - seg_map_path (str): Path of the mask (absent in an inference sample).

    Added Keys:

    - seg_fields (List)
    - gt_seg_map (np.uint8): (H, W) map, values in ``0..N-1``,
      ``ignore_index`` and, with ``keep_background``, ``background_index``.

    Args:
        num_classes (int): Number of tissue classes. Defaults to 4.
        background_index (int): Mask value of background. Defaults to 4.
        ignore_index (int): Value background is mapped to. Defaults to 255.
        keep_background (bool): Keep background as ``background_index``
            instead of mapping it to ``ignore_index``. Defaults to False.
        imdecode_backend (str): Backend of :func:`mmcv.imfrombytes`; must
            keep palette indices. Defaults to ``'pillow'``.
        backend_args (dict, optional): Arguments of the file backend.
            Defaults to None.
    """

    def __init__(self,
                 num_classes: int = 4,
                 background_index: int = 4,
                 ignore_index: int = 255,
                 keep_background: bool = False,
                 imdecode_backend: str = 'pillow',
                 backend_args: Optional[dict] = None) -> None:
        super().__init__(
            backend_args=backend_args, imdecode_backend=imdecode_backend)
        check_label_ids(
            num_classes,
            background_index=background_index,
            ignore_index=ignore_index)
        self.num_classes = num_classes
        self.background_index = background_index
        self.ignore_index = ignore_index
        self.keep_background = keep_background

    def transform(self, results: dict) -> dict:
        """Load the mask, unless ``results`` is an inference sample.

        Args:
            results (dict): Result dict.

        Returns:
            dict: ``results`` with ``gt_seg_map`` (not for an inference
            sample).
        """
        if is_inference_sample(results):
            return results
        return super().transform(results)

    def _load_seg_map(self, results: dict) -> None:
        """Read, validate and (unless ``keep_background``) remap the mask
        of ``results``.

        Args:
            results (dict): Result dict with ``seg_map_path``.

        Raises:
            ValueError: If the mask holds unexpected values, or the dataset
                asks for ``reduce_zero_label`` / a ``label_map``, which
                histology masks do not support.
        """
        path = results['seg_map_path']
        if results.get('reduce_zero_label') or results.get('label_map'):
            raise ValueError(f'{path}: LoadHistoAnnotations does not support '
                             f'reduce_zero_label or label_map')
        img_bytes = fileio.get(path, backend_args=self.backend_args)
        label_map = mmcv.imfrombytes(
            img_bytes, flag='unchanged', backend=self.imdecode_backend)
        results['gt_seg_map'] = to_training_label_map(
            label_map,
            self.num_classes,
            self.background_index,
            self.ignore_index,
            path,
            keep_background=self.keep_background)
        results.setdefault('seg_fields', []).append('gt_seg_map')

    def __repr__(self) -> str:
        return (f'{self.__class__.__name__}(num_classes={self.num_classes}, '
                f'background_index={self.background_index}, '
                f'ignore_index={self.ignore_index}, '
                f'keep_background={self.keep_background}, '
                f"imdecode_backend='{self.imdecode_backend}', "
                f'backend_args={self.backend_args})')
