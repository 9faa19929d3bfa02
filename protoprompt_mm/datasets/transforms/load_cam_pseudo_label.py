"""Load a pseudo label map saved as a PNG or as raw CAMs."""
import io
import os.path as osp
from typing import Optional

import mmengine.fileio as fileio
import numpy as np
from mmcv.transforms import BaseTransform
from mmseg.registry import TRANSFORMS

from .cam_to_pseudo_label import CAMToPseudoLabel
from .load_histo_annotations import LoadHistoAnnotations


@TRANSFORMS.register_module()
class LoadCAMPseudoLabel(BaseTransform):
    """Load the pseudo label map of a training image.

    ``seg_map_path`` may point to

    - a ``.png`` label map (classes, ignore, possibly background), read
      like :class:`LoadHistoAnnotations` (background becomes
      ``ignore_index``);
    - a ``.npy`` array or a ``.npz`` archive (key ``cams``, or its only
      array) of float CAMs (N, H, W) in [0, 1], typically float16,
      converted with :class:`CAMToPseudoLabel` built from ``converter``.

    In both cases the map holds class ids and ``ignore_index`` only, so it
    is ready for the loss; it must have the image size when ``img_shape``
    is known.

    Required Keys:

    - seg_map_path (str)
    - img_labels (np.ndarray): needed for CAM arrays.
    - img_shape (tuple, optional)

    Added Keys:

    - gt_seg_map (np.uint8): (H, W), class ids or ``ignore_index``.
    - seg_fields (List)

    Args:
        converter (dict, optional): Arguments of :class:`CAMToPseudoLabel`;
            required for CAM arrays. Its ``ignore_index`` also applies to
            PNGs. Defaults to None.
        num_classes (int): Number of classes of PNG label maps. Defaults to
            4.
        background_index (int): Background value of PNG label maps.
            Defaults to 4.
        backend_args (dict, optional): Arguments of the file backend.
            Defaults to None.
    """

    def __init__(self,
                 converter: Optional[dict] = None,
                 num_classes: int = 4,
                 background_index: int = 4,
                 backend_args: Optional[dict] = None) -> None:
        self.converter = (None if converter is None else CAMToPseudoLabel(
            **converter))
        ignore = {} if self.converter is None else dict(
            ignore_index=self.converter.ignore_index)
        self.png_loader = LoadHistoAnnotations(
            num_classes=num_classes,
            background_index=background_index,
            backend_args=backend_args,
            **ignore)
        self.backend_args = backend_args

    def _load_cams(self, path: str) -> np.ndarray:
        """Read a CAM array from a ``.npy`` or ``.npz`` file.

        Raises:
            ValueError: If the ``.npz`` has no single / ``cams`` array.
        """
        data = np.load(
            io.BytesIO(fileio.get(path, backend_args=self.backend_args)),
            allow_pickle=False)
        if isinstance(data, np.ndarray):
            return data
        with data:
            if 'cams' in data.files:
                return data['cams']
            if len(data.files) == 1:
                return data[data.files[0]]
            raise ValueError(f'{path}: expected a "cams" array or a single '
                             f'array, found {data.files}')

    def transform(self, results: dict) -> dict:
        """Set ``gt_seg_map`` from the file at ``seg_map_path``.

        Args:
            results (dict): Result dict.

        Returns:
            dict: ``results`` with ``gt_seg_map``.

        Raises:
            ValueError: On an unsupported suffix, CAMs without ``converter``
                or ``img_labels``, bad content or a size mismatch.
        """
        path = results['seg_map_path']
        suffix = osp.splitext(path)[1].lower()
        if suffix == '.png':
            results = self.png_loader.transform(results)
        elif suffix in ('.npy', '.npz'):
            if self.converter is None:
                raise ValueError(f'{path}: CAM arrays need a `converter` '
                                 f'(CAMToPseudoLabel arguments)')
            if results.get('img_labels') is None:
                raise ValueError(f'{path}: converting CAMs needs img_labels '
                                 f'(put LoadImageLevelLabels first)')
            results['gt_seg_map'] = self.converter.convert(
                self._load_cams(path), results['img_labels'], path)
            results.setdefault('seg_fields', []).append('gt_seg_map')
        else:
            raise ValueError(f'{path}: pseudo labels must be .png, .npy or '
                             f'.npz files')
        img_shape = results.get('img_shape')
        if img_shape is not None and results['gt_seg_map'].shape != tuple(
                img_shape[:2]):
            raise ValueError(
                f'{path}: pseudo label size {results["gt_seg_map"].shape} '
                f'differs from the image size {tuple(img_shape[:2])}')
        return results

    def __repr__(self) -> str:
        return (f'{self.__class__.__name__}(converter={self.converter!r}, '
                f'png_loader={self.png_loader!r})')
