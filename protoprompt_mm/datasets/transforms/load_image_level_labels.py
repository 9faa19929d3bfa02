"""Attach image-level (multi-hot) class labels to a sample."""
import numpy as np
from mmcv.transforms import BaseTransform
from mmseg.registry import TRANSFORMS

from ..image_labels import labels_from_mask, parse_image_labels
from .inference_samples import is_inference_sample


@TRANSFORMS.register_module()
class LoadImageLevelLabels(BaseTransform):
    """Provide ``img_labels``, the multi-hot vector of classes present.

    Sources, first available wins: the ``img_labels`` stored by the dataset
    (when not None), the class flags of the file name (see
    :func:`parse_image_labels`), the classes present in ``gt_seg_map``
    (place this transform after ``LoadHistoAnnotations`` for validation /
    test images whose names carry no flags). A sample of mmseg's inference
    API (no ``img_labels``, no ``seg_map_path``; see
    :func:`is_inference_sample`) whose file name has no flags passes
    through without ``img_labels``.

    Required Keys:

    - img_path (str, optional)
    - img_labels (np.ndarray | None, optional)
    - gt_seg_map (np.uint8, optional)

    Added Keys:

    - img_labels (np.int64): shape (num_classes,), values 0 / 1.

    Args:
        num_classes (int): Number of classes. Defaults to 4; in the pipeline
            of a ``HistoSegDataset`` leave it out to take the dataset's.
    """

    def __init__(self, num_classes: int = 4) -> None:
        if num_classes < 1:
            raise ValueError(f'num_classes must be >= 1, got {num_classes}')
        self.num_classes = num_classes

    def transform(self, results: dict) -> dict:
        """Set ``results['img_labels']``.

        Args:
            results (dict): Result dict.

        Returns:
            dict: ``results`` with ``img_labels``.

        Raises:
            ValueError: If the stored labels are malformed or no source
                provides labels for a dataset's sample.
        """
        path = results.get('img_path')
        labels = results.get('img_labels')
        if labels is not None:
            labels = np.asarray(labels)
            if labels.shape != (self.num_classes, ) or not np.isin(
                    labels, (0, 1)).all():
                raise ValueError(
                    f'{path}: img_labels must be {self.num_classes} flags '
                    f'of 0 / 1, got {labels.tolist()}')
        elif path is not None:
            labels = parse_image_labels(path, self.num_classes)
        if labels is None and 'gt_seg_map' in results:
            labels = labels_from_mask(results['gt_seg_map'], self.num_classes)
        if labels is None and is_inference_sample(results):
            return results
        if labels is None:
            raise ValueError(
                f'{path}: no image-level labels: the file name has no class '
                f'flags and no gt_seg_map is loaded (put LoadHistoAnnotations '
                f'before LoadImageLevelLabels for images without flags)')
        results['img_labels'] = labels.astype(np.int64)
        return results

    def __repr__(self) -> str:
        return f'{self.__class__.__name__}(num_classes={self.num_classes})'
