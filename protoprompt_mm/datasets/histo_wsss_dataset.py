"""Shared dataset logic of the WSSS histology benchmarks."""
import os.path as osp
from typing import Dict, List, Optional, Tuple

import mmengine.fileio as fileio
from mmseg.registry import DATASETS

from .histo_seg_dataset import HistoSegDataset
from .image_labels import parse_image_labels

# Candidate (image folder, mask folder) pairs per split, first existing wins.
_SPLIT_FOLDERS: Dict[str, Tuple[Tuple[str, Optional[str]], ...]] = {
    'train': (('training', None), ('train/img', None), ('train', None)),
    'val': (('val/img', 'val/mask'), ('valid/img', 'valid/mask')),
    'test': (('test/img', 'test/mask'), ),
}


@DATASETS.register_module()
class HistoWSSSDataset(HistoSegDataset):
    """Histology patches with image-level labels (WSSS benchmarks).

    Folder layout under ``data_root`` (BCSS-WSSS / LUAD-HistoSeg)::

        training/<name>[1101].png     # or train/img/, train/
        val/img/<name>.png            # or valid/img/
        val/mask/<name>.png           # or valid/mask/
        test/img/<name>.png
        test/mask/<name>.png

    Masks are palette PNGs whose indices ``0..N-1`` are the classes and
    ``N`` is background; load them with ``LoadHistoAnnotations``, which
    maps background to ``ignore_index``.

    Every data info gets ``img_labels``: the int64 multi-hot vector parsed
    from the file name (see :func:`parse_image_labels`), or None when the
    name carries no flags and a mask folder is in use (the labels are then
    derived from the mask by ``LoadImageLevelLabels``). Names without flags
    are an error for the training split and whenever no mask folder is
    used.

    Folders are resolved and checked in :meth:`collect_data_list`, so
    ``lazy_init=True`` does not touch the file system. Every image and mask
    is then checked readable and valid (see :class:`HistoSegDataset`).

    Args:
        split (str, optional): ``'train'``, ``'val'`` or ``'test'``; picks
            the folders above when ``data_prefix`` is not given. Defaults to
            None.
        pseudo_mask_dir (str, optional): Folder (absolute or relative to
            ``data_root``) of pseudo masks for the training images, same
            base name with ``seg_map_suffix`` (stage 2). Not allowed with the
            val / test splits. Defaults to None.
        data_prefix (dict, optional): mmseg's ``img_path`` /
            ``seg_map_path`` folders; when given it overrides the folders of
            ``split``. Either ``split`` or ``data_prefix`` is required.
            Defaults to None.
        img_suffix (str): Image suffix. Defaults to ``'.png'``.
        seg_map_suffix (str): Mask suffix. Defaults to ``'.png'``.
        **kwargs: Other arguments of :class:`HistoSegDataset` (``metainfo``,
            ``background_index``, ``skip_invalid``, ...) and
            :class:`mmseg.datasets.BaseSegDataset`.
    """

    def __init__(self,
                 split: Optional[str] = None,
                 pseudo_mask_dir: Optional[str] = None,
                 data_prefix: Optional[dict] = None,
                 img_suffix: str = '.png',
                 seg_map_suffix: str = '.png',
                 **kwargs) -> None:
        if split is not None and split not in _SPLIT_FOLDERS:
            raise ValueError(f'split must be one of {list(_SPLIT_FOLDERS)} '
                             f'or None, got {split!r}')
        if split is None and data_prefix is None:
            raise ValueError('Either `split` or `data_prefix` must be given')
        if pseudo_mask_dir is not None and split not in ('train', None):
            raise ValueError(f'pseudo_mask_dir is only for the training '
                             f'split, got split={split!r}')
        self.split = split
        self.pseudo_mask_dir = pseudo_mask_dir
        self._explicit_prefix = data_prefix is not None
        super().__init__(
            data_prefix=dict(data_prefix or {}),
            img_suffix=img_suffix,
            seg_map_suffix=seg_map_suffix,
            **kwargs)

    def _resolve_path(self, path: str) -> str:
        """Join a relative path with ``data_root``."""
        if self.data_root and not osp.isabs(path):
            return osp.join(self.data_root, path)
        return path

    def _resolve_split_prefix(self) -> dict:
        """Pick the first existing folders of ``self.split``.

        Returns:
            dict: ``img_path`` and, for val / test, ``seg_map_path``.

        Raises:
            FileNotFoundError: If none of the candidate folders exists.
        """
        candidates = _SPLIT_FOLDERS[self.split]
        for img_dir, mask_dir in candidates:
            if fileio.isdir(
                    self._resolve_path(img_dir),
                    backend_args=self.backend_args):
                prefix = dict(img_path=self._resolve_path(img_dir))
                if mask_dir is not None:
                    prefix['seg_map_path'] = self._resolve_path(mask_dir)
                return prefix
        tried = [self._resolve_path(img_dir) for img_dir, _ in candidates]
        raise FileNotFoundError(
            f'No image folder for split {self.split!r}: none of {tried} '
            f'exists')

    def _check_masks(self, ann_dir: str, data_list: List[dict]) -> None:
        """Require the mask of every image to exist in ``ann_dir``.

        Raises:
            FileNotFoundError: If ``ann_dir`` is missing, naming the first
                images without a mask otherwise.
        """
        if not fileio.isdir(ann_dir, backend_args=self.backend_args):
            raise FileNotFoundError(f'Mask folder {ann_dir} does not exist')
        masks = {
            osp.join(ann_dir, name)
            for name in fileio.list_dir_or_file(
                ann_dir,
                list_dir=False,
                suffix=self.seg_map_suffix,
                recursive=True,
                backend_args=self.backend_args)
        }
        missing = [(info['img_path'], info['seg_map_path'])
                   for info in data_list if info['seg_map_path'] not in masks]
        if missing:
            shown = '; '.join(f'{img} (expected {mask})'
                              for img, mask in missing[:5])
            raise FileNotFoundError(
                f'{len(missing)} image(s) have no mask in {ann_dir}: {shown}')

    def collect_data_list(self) -> List[dict]:
        """Resolve folders, check them and attach ``img_labels``.

        Returns:
            list[dict]: Data infos of mmseg plus ``img_labels``.

        Raises:
            FileNotFoundError: Missing image / mask folder or a missing
                mask.
            ValueError: No image found, or an image name without valid
                class flags where they are required.
        """
        if not self._explicit_prefix:
            self.data_prefix = self._resolve_split_prefix()
        if self.pseudo_mask_dir is not None:
            self.data_prefix['seg_map_path'] = self._resolve_path(
                self.pseudo_mask_dir)
        img_dir = self.data_prefix.get('img_path', '')
        ann_dir = self.data_prefix.get('seg_map_path')
        if not fileio.isdir(img_dir, backend_args=self.backend_args):
            raise FileNotFoundError(f'Image folder {img_dir} does not exist')
        # mmseg's listing of the folder (or of ann_file), unchecked.
        data_list = super(HistoSegDataset, self).load_data_list()
        if not data_list:
            raise ValueError(f'No {self.img_suffix!r} image found in '
                             f'{self.ann_file or img_dir}')
        if ann_dir is not None:
            self._check_masks(ann_dir, data_list)
        num_classes = len(self.metainfo['classes'])
        require_labels = self.split == 'train' or ann_dir is None
        for info in data_list:
            labels = parse_image_labels(info['img_path'], num_classes)
            if labels is None and require_labels:
                raise ValueError(
                    f'{info["img_path"]}: image names must carry '
                    f'{num_classes} class flags in brackets for the '
                    f'training split and without a mask folder, e.g. '
                    f'"name[{"1" * num_classes}].png" or '
                    f'"name-[{" ".join("1" * num_classes)}].png"')
            info['img_labels'] = labels
        return data_list
