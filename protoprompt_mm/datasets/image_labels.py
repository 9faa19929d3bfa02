"""Image-level (multi-hot) class labels of histology patches.

WSSS histology datasets encode the classes present in a training patch in
its file name, as the last bracket group before the extension:

- BCSS-WSSS: ``TCGA-A1-A0SK-DX1_xmin45749_ymin25055_MPP-0.2500+1[1101].png``
  (one digit per class, no separator);
- LUAD-HistoSeg: ``…-[1 0 0 1].png`` (digits separated by whitespace).

When a name carries no flags (some validation / test images), the labels
are the classes present in the ground-truth mask.

Users' own data can list the labels in a manifest instead
(:func:`read_label_manifest`, CSV or JSON, class names or 0 / 1 flags).
"""
import csv
import io
import json
import os.path as osp
import re
from typing import List, NamedTuple, Optional, Sequence, Tuple

import mmengine.fileio as fileio
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
    try:
        return labels_from_flags(flags, num_classes)
    except ValueError as error:
        raise ValueError(f'{path}: {error} in the last bracket group of the '
                         f'file name, "[{groups[-1]}]"') from None


def labels_from_flags(flags: Sequence, num_classes: int) -> np.ndarray:
    """Multi-hot labels of 0 / 1 flags in class order.

    Args:
        flags (Sequence): ``num_classes`` flags, ``0`` / ``1`` as ints or
            strings.
        num_classes (int): Number of classes.

    Returns:
        np.ndarray: int64 array of shape ``(num_classes,)``.

    Raises:
        ValueError: On a wrong number of flags or a flag other than 0 / 1.
    """
    if len(flags) != num_classes:
        raise ValueError(
            f'expected {num_classes} class flags, got {len(flags)}')
    bad = [flag for flag in flags if str(flag).strip() not in ('0', '1')]
    if bad:
        raise ValueError(f'class flags must be 0 or 1, got {bad}')
    return np.array([int(str(flag).strip()) for flag in flags], np.int64)


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


# Column / key of the image path and of the class names in a manifest.
IMAGE_KEY = 'image'
LABELS_KEY = 'labels'
# Separator of the class names in a CSV ``labels`` cell.
NAME_SEPARATOR = ';'


class ManifestRow(NamedTuple):
    """One image of a label manifest.

    Attributes:
        row (str): Where it is, for messages: ``'<manifest>, row 3'`` (CSV,
            spreadsheet numbering: the header is row 1) or
            ``'<manifest>, entry 3'`` (JSON, 1-based).
        image (str): The image path as written.
        labels (np.ndarray | None): int64 ``(num_classes,)`` multi-hot
            labels, or None when the row gives none.
    """
    row: str
    image: str
    labels: Optional[np.ndarray]


def _labels_from_names(names: Sequence[str],
                       classes: Sequence[str]) -> np.ndarray:
    """Multi-hot labels of class names.

    Raises:
        ValueError: On a name that is not in ``classes``.
    """
    index = {name: i for i, name in enumerate(classes)}
    unknown = [name for name in names if name not in index]
    if unknown:
        raise ValueError(f'unknown class name(s) {unknown}; the classes are '
                         f'{list(classes)}')
    labels = np.zeros(len(classes), np.int64)
    labels[[index[name] for name in names]] = 1
    return labels


def _csv_records(path: str, text: str,
                 classes: Sequence[str]) -> List[Tuple[str, object]]:
    """``(where, record)`` of every data row of a CSV manifest.

    Raises:
        ValueError: If the header has no image column, or neither a labels
            column nor exactly one column per class.
    """
    reader = csv.DictReader(io.StringIO(text, newline=''))
    header = [name.strip() for name in reader.fieldnames or []]
    reader.fieldnames = header
    if IMAGE_KEY not in header:
        raise ValueError(f'{path}, row 1: the header needs an {IMAGE_KEY!r} '
                         f'column, got {header}')
    if LABELS_KEY not in header:
        flag_columns = [name for name in header if name != IMAGE_KEY]
        unknown = [name for name in flag_columns if name not in classes]
        missing = [name for name in classes if name not in flag_columns]
        if unknown or missing:
            raise ValueError(
                f'{path}, row 1: expected a {LABELS_KEY!r} column (class '
                f'names separated by {NAME_SEPARATOR!r}) or one 0 / 1 '
                f'column per class of {list(classes)}; got unknown class '
                f'name(s) {unknown} and missing class column(s) {missing}')
    return [(f'{path}, row {reader.line_num}', record) for record in reader]


def _csv_row(record: dict,
             classes: Sequence[str]) -> Tuple[str, Optional[np.ndarray]]:
    """Image path and labels of a CSV record (see :func:`_csv_records`).

    Raises:
        ValueError: On extra cells or bad labels.
    """
    if None in record:
        raise ValueError(f'more cells than header columns: {record[None]}')
    image = (record[IMAGE_KEY] or '').strip()
    if LABELS_KEY in record:
        names = [name.strip() for name in
                 (record[LABELS_KEY] or '').split(NAME_SEPARATOR)]
        names = [name for name in names if name]
        return image, _labels_from_names(names, classes) if names else None
    flags = [(record[name] or '').strip() for name in classes]
    if not any(flags):
        return image, None
    return image, labels_from_flags(flags, len(classes))


def _json_records(path: str, text: str) -> List[Tuple[str, object]]:
    """``(where, entry)`` of every entry of a JSON manifest.

    Raises:
        ValueError: If the text is not a JSON list.
    """
    try:
        entries = json.loads(text)
    except json.JSONDecodeError as error:
        raise ValueError(f'{path}: not valid JSON ({error})') from error
    if not isinstance(entries, list):
        raise ValueError(f'{path}: expected a JSON list of objects with '
                         f'{IMAGE_KEY!r} and {LABELS_KEY!r}, got a '
                         f'{type(entries).__name__}')
    return [(f'{path}, entry {number}', entry)
            for number, entry in enumerate(entries, 1)]


def _json_row(entry: object,
              classes: Sequence[str]) -> Tuple[str, Optional[np.ndarray]]:
    """Image path and labels of a JSON entry (see :func:`_json_records`).

    Raises:
        ValueError: If the entry is not an object with a string image path
            and, optionally, a list of class names or of 0 / 1 flags.
    """
    if not isinstance(entry, dict) or not isinstance(
            entry.get(IMAGE_KEY), str):
        raise ValueError(f'expected an object with a string {IMAGE_KEY!r}, '
                         f'got {entry!r}')
    value = entry.get(LABELS_KEY)
    if value is None:
        return entry[IMAGE_KEY].strip(), None
    if not isinstance(value, list):
        raise ValueError(f'{LABELS_KEY!r} must be a list of class names or '
                         f'of 0 / 1 flags, got {value!r}')
    if all(isinstance(item, str) for item in value):
        return entry[IMAGE_KEY].strip(), _labels_from_names(value, classes)
    return entry[IMAGE_KEY].strip(), labels_from_flags(value, len(classes))


def bad_rows_error(path: str, errors: Sequence[str]) -> ValueError:
    """One error listing the bad rows of a manifest.

    Args:
        path (str): The manifest.
        errors (Sequence[str]): One message per bad row, each naming it.

    Returns:
        ValueError: The error to raise.
    """
    listing = '\n'.join(f'  - {error}' for error in errors)
    return ValueError(f'{path}: {len(errors)} bad row(s):\n{listing}')


def read_label_manifest(path: str,
                        classes: Sequence[str],
                        backend_args: Optional[dict] = None
                        ) -> List[ManifestRow]:
    """Read the image paths and image-level labels of a manifest.

    Formats, by extension:

    - ``.csv`` with a header row and an ``image`` column, plus either a
      ``labels`` column of class names separated by ``;`` (``TUM;LYM``) or
      one column per class holding 0 / 1 (``image,TUM,STR,LYM,NEC``). Other
      columns are allowed next to ``labels``.
    - ``.json``: a list of objects ``{"image": "a.png", "labels": ["TUM"]}``
      whose ``labels`` are class names or 0 / 1 flags in class order
      (``[1, 0, 0, 1]``).

    An empty labels cell (all flag cells empty) or a missing / null
    ``labels`` gives no labels (None): the dataset then needs masks.

    Args:
        path (str): The manifest.
        classes (Sequence[str]): Class names, in flag order.
        backend_args (dict, optional): Arguments of the file backend.

    Returns:
        list[ManifestRow]: One per data row, in file order.

    Raises:
        ValueError: On an unsupported extension, a malformed header, an
            empty manifest, or bad rows (unknown class name, bad flags, an
            empty image path); every bad row is named in one error.
    """
    text = fileio.get_text(path, backend_args=backend_args)
    extension = osp.splitext(path)[1].lower()
    if extension == '.csv':
        records, parse = _csv_records(path, text, classes), _csv_row
    elif extension == '.json':
        records, parse = _json_records(path, text), _json_row
    else:
        raise ValueError(f'{path}: a label manifest must be a .csv or .json '
                         f'file')
    rows, errors = [], []
    for where, record in records:
        try:
            image, labels = parse(record, classes)
            if not image:
                raise ValueError('empty image path')
        except ValueError as error:
            errors.append(f'{where}: {error}')
            continue
        rows.append(ManifestRow(where, image, labels))
    if errors:
        raise bad_rows_error(path, errors)
    if not rows:
        raise ValueError(f'{path}: the manifest lists no image')
    return rows
