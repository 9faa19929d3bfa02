"""Users' own patches: image paths and labels listed in a manifest."""
import os.path as osp
from typing import List, Optional

import mmengine.fileio as fileio
from mmseg.registry import DATASETS

from .histo_seg_dataset import HistoSegDataset
from .image_labels import bad_rows_error, read_label_manifest

# Fields of ``seg_map_pattern``, from the image path as the manifest writes
# it: ``{stem}`` base name without extension, ``{name}`` base name,
# ``{path}`` the whole path without extension.
PATTERN_FIELDS = ('stem', 'name', 'path')


def format_mask_path(pattern: str, image: str) -> str:
    """The mask path of ``image`` by ``pattern`` (see :data:`PATTERN_FIELDS`).

    Args:
        pattern (str): E.g. ``'masks/{stem}.png'``.
        image (str): The image path as written in the manifest.

    Returns:
        str: The formatted path.

    Raises:
        ValueError: If the pattern uses another field or is malformed.
    """
    name = osp.basename(image)
    try:
        return pattern.format(
            stem=osp.splitext(name)[0],
            name=name,
            path=osp.splitext(image)[0])
    except (KeyError, IndexError, ValueError) as error:
        raise ValueError(
            f'seg_map_pattern {pattern!r} is not a format string of the '
            f'fields {{{"}, {".join(PATTERN_FIELDS)}}} ({error!r})') from None


@DATASETS.register_module()
class HistoManifestDataset(HistoSegDataset):
    """Patches whose image-level labels come from a CSV or JSON manifest.

    ``ann_file`` lists the images and their labels, as class names or 0 / 1
    flags (formats: :func:`~protoprompt_mm.datasets.image_labels.
    read_label_manifest`), e.g. ``train.csv``::

        image,labels
        patches/slide1_0001.png,TUM;STR
        patches/slide1_0002.png,LYM

    The classes, any number of them, are ``metainfo['classes']`` in flag
    order. Image paths are relative to ``data_prefix['img_path']`` (itself
    relative to ``data_root``; without it, ``data_root``). Masks (val / test
    ground truth, or stage-2 pseudo masks) are optional: with
    ``seg_map_pattern`` every image has the mask at that pattern, relative
    to ``data_prefix['seg_map_path']``; a row without labels then gets them
    from its mask (``LoadImageLevelLabels``).

    Every data info gets ``img_labels``: int64 ``(N,)`` multi-hot, or None
    for a row without labels. The manifest is read in
    :meth:`collect_data_list`, so ``lazy_init=True`` does not touch the file
    system. Every image and mask is then checked readable and valid (see
    :class:`HistoSegDataset`).

    Args:
        ann_file (str): The manifest (``.csv`` / ``.json``), absolute or
            relative to ``data_root``.
        seg_map_pattern (str, optional): Mask path of an image, a format
            string of ``{stem}``, ``{name}`` and ``{path}`` of the image
            path as written (see :data:`PATTERN_FIELDS`), e.g.
            ``'masks/{stem}.png'``. Defaults to None
            (no masks).
        metainfo (dict): mmseg metainfo with the ``classes``.
        **kwargs: Other arguments of :class:`HistoSegDataset` and
            :class:`mmseg.datasets.BaseSegDataset` (``data_root``,
            ``data_prefix``, ``background_index``, ``skip_invalid``, ...).
    """

    def __init__(self,
                 ann_file: str,
                 seg_map_pattern: Optional[str] = None,
                 **kwargs) -> None:
        if not ann_file:
            raise ValueError('HistoManifestDataset needs ann_file, the CSV / '
                             'JSON manifest')
        if seg_map_pattern is not None:
            format_mask_path(seg_map_pattern, 'check.png')
        self.seg_map_pattern = seg_map_pattern
        super().__init__(ann_file=ann_file, **kwargs)

    def collect_data_list(self) -> List[dict]:
        """Read the manifest and check its rows.

        Returns:
            list[dict]: mmseg data infos (``img_path``, ``seg_map_path``
            with ``seg_map_pattern``) plus ``img_labels``.

        Raises:
            ValueError: Naming every bad row (file and row number): bad
                labels or unknown class names, a duplicate image, a missing
                image or mask, a row without labels and without a mask.
        """
        rows = read_label_manifest(self.ann_file, self.metainfo['classes'],
                                   self.backend_args)
        img_dir = self.data_prefix.get('img_path', self.data_root or '')
        mask_dir = self.data_prefix.get('seg_map_path', self.data_root or '')
        first_row = {}
        errors, data_list = [], []
        for row in rows:
            img_path = osp.join(img_dir, row.image)
            key = osp.normpath(img_path)
            if key in first_row:
                errors.append(f'{row.row}: duplicate image {row.image!r} '
                              f'(listed before in {first_row[key]})')
                continue
            first_row[key] = row.row
            if not fileio.exists(img_path, backend_args=self.backend_args):
                errors.append(f'{row.row}: image {img_path} does not exist')
                continue
            info = dict(
                img_path=img_path,
                img_labels=row.labels,
                label_map=self.label_map,
                reduce_zero_label=self.reduce_zero_label,
                seg_fields=[])
            if self.seg_map_pattern is not None:
                info['seg_map_path'] = osp.join(
                    mask_dir, format_mask_path(self.seg_map_pattern,
                                               row.image))
                if not fileio.exists(
                        info['seg_map_path'], backend_args=self.backend_args):
                    errors.append(
                        f'{row.row}: mask {info["seg_map_path"]} of '
                        f'{row.image!r} (seg_map_pattern '
                        f'{self.seg_map_pattern!r}) does not exist')
                    continue
            elif row.labels is None:
                errors.append(
                    f'{row.row}: {row.image!r} has no labels; give its class '
                    f'names or flags, or masks with seg_map_pattern')
                continue
            data_list.append(info)
        if errors:
            raise bad_rows_error(self.ann_file, errors)
        return data_list
