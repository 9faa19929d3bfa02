"""Base of the histology datasets: classes from metainfo, files checked."""
import copy
import inspect
from typing import List, Optional, Sequence

from mmseg.datasets import BaseSegDataset
from mmseg.registry import TRANSFORMS

from .file_checks import check_data_list
from .transforms.load_histo_annotations import check_label_ids


def complete_pipeline(pipeline: Sequence, dataset: str, **values: int) -> list:
    """Give the pipeline's transforms the dataset's class count.

    Every transform config (nested ones of wrappers such as
    ``TestTimeAug`` included) whose class takes one of the arguments in
    ``values`` (``num_classes``, ``background_index``) gets the dataset's
    value when it does not set it, and must equal it when it does.
    Transforms already built are left as they are.

    Args:
        pipeline (Sequence): Transform configs (dicts) or transforms.
        dataset (str): Dataset name for the error message.
        **values (int): The dataset's values by argument name.

    Returns:
        list: The completed configs (copies; ``pipeline`` is unchanged).

    Raises:
        ValueError: If a transform sets a value that differs from the
            dataset's.
    """

    def complete(cfg):
        if isinstance(cfg, (list, tuple)):
            return [complete(item) for item in cfg]
        if not isinstance(cfg, dict) or 'type' not in cfg:
            return cfg
        cfg = copy.copy(cfg)
        if 'transforms' in cfg:
            cfg['transforms'] = complete(cfg['transforms'])
        cls = TRANSFORMS.get(cfg['type']) if isinstance(cfg['type'],
                                                        str) else cfg['type']
        if not inspect.isclass(cls):
            return cfg  # unknown types are left to Compose's error
        params = inspect.signature(cls).parameters
        for name, value in values.items():
            if name not in params:
                continue
            if name not in cfg:
                cfg[name] = value
            elif cfg[name] != value:
                raise ValueError(
                    f'{dataset}: pipeline transform {cfg["type"]} has '
                    f'{name}={cfg[name]}, but the dataset has {name}={value} '
                    f'(from its metainfo classes); drop {name} from the '
                    f'transform to use the dataset\'s')
        return cfg

    return complete(list(pipeline))


class HistoSegDataset(BaseSegDataset):
    """Histology patches with image-level labels; shared base.

    The classes come from ``metainfo['classes']`` (or the class's
    ``METAINFO``), any number of them. Masks hold the classes as
    ``0..N-1``, ``background_index`` (default ``N``) and possibly
    ``ignore_index``. Transforms of the pipeline that take ``num_classes``
    or ``background_index`` (``LoadImageLevelLabels``,
    ``LoadHistoAnnotations``, ...) get the dataset's values, or must match
    them (:func:`complete_pipeline`).

    :meth:`load_data_list` (run by ``full_init``, i.e. at the build unless
    ``lazy_init``) lists the samples with :meth:`collect_data_list` and
    checks every image and mask with
    :func:`~protoprompt_mm.datasets.file_checks.check_data_list`: a bad
    file stops the build, before training starts, with one error naming
    every bad file, or, with ``skip_invalid``, is logged and skipped.

    Args:
        metainfo (dict, optional): mmseg metainfo; ``classes`` is required
            unless the class defines them, and must then equal them (no
            class subsets: image labels are stored per original class).
            Defaults to None.
        background_index (int, optional): Mask value of background. Defaults
            to None, the number of classes.
        ignore_index (int): Mask value of ignored pixels. Defaults to 255.
        skip_invalid (bool): Skip bad samples (with a warning listing them)
            instead of raising. Defaults to False.
        check_workers (int): Threads of the file check. Defaults to 8.
        pipeline (Sequence): Transform configs. Defaults to ().
        **kwargs: Other arguments of :class:`mmseg.datasets.BaseSegDataset`.
    """

    def __init__(self,
                 metainfo: Optional[dict] = None,
                 background_index: Optional[int] = None,
                 ignore_index: int = 255,
                 skip_invalid: bool = False,
                 check_workers: int = 8,
                 pipeline: Sequence = (),
                 **kwargs) -> None:
        name = type(self).__name__
        classes = (metainfo or {}).get('classes')
        if self.get_label_map(classes) is not None:
            raise ValueError(
                f'{name} does not support class subsets: metainfo classes '
                f'{classes} must equal {self.METAINFO["classes"]} (image '
                f'labels are stored per original class)')
        classes = classes or self.METAINFO.get('classes')
        if not classes:
            raise ValueError(f'{name} needs metainfo classes, e.g. '
                             f"metainfo=dict(classes=('TUM', 'STR'))")
        self.background_index = (
            len(classes) if background_index is None else background_index)
        check_label_ids(
            len(classes),
            background_index=self.background_index,
            ignore_index=ignore_index)
        if check_workers < 1:
            raise ValueError(
                f'check_workers must be >= 1, got {check_workers}')
        self.skip_invalid = skip_invalid
        self.check_workers = check_workers
        super().__init__(
            metainfo=metainfo,
            ignore_index=ignore_index,
            pipeline=complete_pipeline(
                pipeline,
                name,
                num_classes=len(classes),
                background_index=self.background_index),
            **kwargs)

    def collect_data_list(self) -> List[dict]:
        """The data infos before the file check; implemented by subclasses.

        Returns:
            list[dict]: mmseg data infos (``img_path``, optional
            ``seg_map_path``) plus ``img_labels``.
        """
        raise NotImplementedError

    def load_data_list(self) -> List[dict]:
        """:meth:`collect_data_list`, with the bad samples checked out.

        Returns:
            list[dict]: The data infos.

        Raises:
            ValueError: If a sample has a bad image or mask (see
                :func:`~protoprompt_mm.datasets.file_checks.check_data_list`).
        """
        return check_data_list(
            self.collect_data_list(),
            num_classes=len(self.metainfo['classes']),
            background_index=self.background_index,
            ignore_index=self.ignore_index,
            skip_invalid=self.skip_invalid,
            num_workers=self.check_workers,
            backend_args=self.backend_args,
            name=type(self).__name__)
