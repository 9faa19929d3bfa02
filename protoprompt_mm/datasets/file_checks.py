"""Check every image and mask of a dataset before training starts.

:func:`check_data_list` runs once per dataset build (from the datasets'
``load_data_list``, i.e. ``full_init``): each image must be readable (Pillow
opens its header and verifies its structure: for PNG every chunk and its
CRC, which catches truncated files, without decompressing the pixels) and
each mask (``seg_map_path``) must decode to a single-channel label map of
the image's size whose values are class ids, the background index or the
ignore index. All bad samples are reported together, in one error or, with
``skip_invalid``, one warning, and dropped.
"""
import io
import logging
from concurrent.futures import ThreadPoolExecutor
from typing import List, Optional, Tuple

import mmcv
import mmengine.fileio as fileio
from mmengine.dist import is_main_process
from mmengine.logging import print_log
from mmengine.utils import ProgressBar
from PIL import Image

from .transforms.load_histo_annotations import to_training_label_map

# A progress bar is shown from this many samples on.
PROGRESS_MIN_SAMPLES = 1000


def image_size(path: str,
               backend_args: Optional[dict] = None) -> Tuple[int, int]:
    """Height and width of an image, after checking that it is readable.

    Args:
        path (str): Image path (any mmengine file backend).
        backend_args (dict, optional): Arguments of the file backend.

    Returns:
        tuple[int, int]: ``(height, width)`` from the image header.

    Raises:
        ValueError: If the file is missing, not an image, or its structure
            is broken (e.g. a truncated PNG).
    """
    try:
        data = fileio.get(path, backend_args=backend_args)
        with Image.open(io.BytesIO(data)) as image:
            width, height = image.size
            image.verify()
    except Exception as error:  # noqa: BLE001 (any decoder error is bad input)
        raise ValueError(f'{path}: not a readable image '
                         f'({type(error).__name__}: {error})') from error
    return height, width


def check_sample(info: dict, num_classes: int, background_index: int,
                 ignore_index: int,
                 backend_args: Optional[dict] = None) -> Optional[str]:
    """What is wrong with the image and mask of one data info, if anything.

    Args:
        info (dict): Data info with ``img_path`` and, optionally,
            ``seg_map_path``.
        num_classes (int): Number of classes; mask values ``0..N-1`` are
            classes.
        background_index (int): Allowed mask value of background.
        ignore_index (int): Allowed mask value of ignored pixels.
        backend_args (dict, optional): Arguments of the file backend.

    Returns:
        str | None: A message naming the bad file, or None if both are
        fine.
    """
    try:
        height, width = image_size(info['img_path'], backend_args)
    except ValueError as error:
        return str(error)
    mask_path = info.get('seg_map_path')
    if not mask_path:
        return None
    try:
        label_map = mmcv.imfrombytes(
            fileio.get(mask_path, backend_args=backend_args),
            flag='unchanged',
            backend='pillow')
    except Exception as error:  # noqa: BLE001 (any decoder error is bad input)
        return (f'{mask_path}: not a readable mask '
                f'({type(error).__name__}: {error})')
    try:
        to_training_label_map(label_map, num_classes, background_index,
                              ignore_index, mask_path)
    except ValueError as error:
        return str(error)
    if label_map.shape != (height, width):
        return (f'{mask_path}: mask size {label_map.shape[0]}x'
                f'{label_map.shape[1]} (HxW) differs from its image '
                f'{info["img_path"]}, {height}x{width}')
    return None


def check_data_list(data_list: List[dict],
                    num_classes: int,
                    background_index: int,
                    ignore_index: int = 255,
                    skip_invalid: bool = False,
                    num_workers: int = 8,
                    backend_args: Optional[dict] = None,
                    name: str = 'dataset') -> List[dict]:
    """Check every sample with :func:`check_sample`, in parallel.

    Threads share the work (file reads and Pillow release the GIL); from
    :data:`PROGRESS_MIN_SAMPLES` samples on, the main process shows
    mmengine's progress bar.

    Args:
        data_list (list[dict]): Data infos (``img_path``, optional
            ``seg_map_path``).
        num_classes (int): Number of classes.
        background_index (int): Allowed mask value of background.
        ignore_index (int): Allowed mask value of ignored pixels. Defaults
            to 255.
        skip_invalid (bool): Drop the bad samples with a warning listing
            them instead of raising. Defaults to False.
        num_workers (int): Threads. Defaults to 8.
        backend_args (dict, optional): Arguments of the file backend.
        name (str): Dataset name for the messages. Defaults to
            ``'dataset'``.

    Returns:
        list[dict]: The good data infos, in their order.

    Raises:
        ValueError: If any sample is bad and ``skip_invalid`` is False,
            listing every bad file; or if ``skip_invalid`` leaves no sample.
    """
    if num_workers < 1:
        raise ValueError(f'num_workers must be >= 1, got {num_workers}')

    def check(info: dict) -> Optional[str]:
        return check_sample(info, num_classes, background_index,
                            ignore_index, backend_args)

    progress = (ProgressBar(len(data_list))
                if len(data_list) >= PROGRESS_MIN_SAMPLES
                and is_main_process() else None)
    problems = []
    with ThreadPoolExecutor(max_workers=num_workers) as pool:
        for problem in pool.map(check, data_list):
            problems.append(problem)
            if progress is not None:
                progress.update()
    bad = [problem for problem in problems if problem is not None]
    if not bad:
        return data_list
    listing = '\n'.join(f'  - {problem}' for problem in bad)
    if not skip_invalid:
        raise ValueError(
            f'{name}: {len(bad)} of {len(data_list)} samples have bad files '
            f'(fix or remove them, or set skip_invalid=True to skip them):'
            f'\n{listing}')
    if len(bad) == len(data_list):
        raise ValueError(f'{name}: all {len(data_list)} samples have bad '
                         f'files, nothing left to use:\n{listing}')
    print_log(
        f'{name}: skipping {len(bad)} of {len(data_list)} samples with bad '
        f'files (skip_invalid=True):\n{listing}',
        logger='current',
        level=logging.WARNING)
    return [info for info, problem in zip(data_list, problems)
            if problem is None]
