"""Synthetic H&E patches in the BCSS-WSSS layout (the embedded default data).

Every patch is a random layout of 1-3 of the BCSS-WSSS classes (TUM, STR,
LYM, NEC) with smooth, wavy region borders and, often, white background
holes. The classes are told apart by texture, not by colour:

- TUM: crowded, large, pleomorphic purple nuclei with coarse chromatin;
- STR: pink wavy fibres with sparse elongated spindle nuclei;
- LYM: dense small dark round nuclei;
- NEC: pale pink granular debris with small nuclear fragments.

Each texture is rendered as hematoxylin / eosin concentration maps and
turned into RGB with the Beer-Lambert law, with per-patch jitter of the
stain vectors, stain amounts, cell densities and brightness, so the colour
ranges of the classes overlap.

Layout written by :func:`generate_synthetic_histo`::

    out_dir/
        training/synth_00042[1011].png     # RGB, flags = classes present
        training_gt/synth_00042[1011].png  # hidden mask of the same patch
        val/img/val_00000.png   val/mask/val_00000.png
        test/img/test_00000.png test/mask/test_00000.png

Masks are palette PNGs: indices 0-3 are the classes, 4 is background.
``training_gt/`` is NOT part of the BCSS-WSSS layout: WSSS training never
reads it; it only serves to score pseudo masks made from the training set.

Every patch is drawn from its own generator seeded by ``(seed, split,
index)``, so the output is bit-for-bit reproducible and independent of how
the work is split among processes.
"""
import os
import os.path as osp
from multiprocessing import Pool
from typing import Callable, Dict, List, Sequence, Tuple

import cv2
import numpy as np
from PIL import Image

from .bcss_wsss_dataset import BCSSWSSSDataset
from .image_labels import labels_from_mask

NUM_CLASSES = len(BCSSWSSSDataset.METAINFO['classes'])
BACKGROUND_INDEX = NUM_CLASSES
MASK_PALETTE: List[List[int]] = [
    *BCSSWSSSDataset.METAINFO['palette'], [255, 255, 255]
]
MIN_CLASS_FRACTION = 0.05
# Optical density of hematoxylin and eosin per RGB channel (unit vectors).
_HEMATOXYLIN_OD = np.array([0.5626, 0.7201, 0.4062])
_EOSIN_OD = np.array([0.2159, 0.8012, 0.5581])
_SPLITS = ('train', 'val', 'test')
_MAX_LAYOUT_TRIES = 200
Range = Tuple[float, float]
Texture = Callable[[np.random.Generator, int], Tuple[np.ndarray, np.ndarray]]


def _smooth_field(rng: np.random.Generator, size: int,
                  cells: int) -> np.ndarray:
    """Low-frequency noise: a ``cells`` x ``cells`` grid upsampled."""
    grid = rng.standard_normal((cells, cells)).astype(np.float32)
    return cv2.resize(grid, (size, size), interpolation=cv2.INTER_CUBIC)


def _blurred_noise(rng: np.random.Generator, size: int,
                   sigma: float) -> np.ndarray:
    """White noise blurred with ``sigma`` and scaled to unit variance."""
    noise = rng.standard_normal((size, size)).astype(np.float32)
    noise = cv2.GaussianBlur(noise, (0, 0), sigma)
    return noise / (noise.std() + 1e-6)


def _draw_nuclei(rng: np.random.Generator, size: int, count: int, major: Range,
                 ratio: Range, angle: Range, value: Range) -> np.ndarray:
    """Filled ellipses with random centre, size, angle and darkness.

    Args:
        rng (np.random.Generator): Random generator.
        size (int): Side of the square canvas.
        count (int): Number of nuclei.
        major (tuple[float, float]): Range of the major semi-axis (px).
        ratio (tuple[float, float]): Range of minor / major.
        angle (tuple[float, float]): Mean and spread (std, degrees) of the
            orientation; a spread >= 180 means isotropic.
        value (tuple[float, float]): Range of the hematoxylin amount.

    Returns:
        np.ndarray: float32 (size, size) map, 0 outside the nuclei.
    """
    canvas = np.zeros((size, size), np.float32)
    centres = rng.integers(0, size, (count, 2))
    majors = rng.uniform(*major, count)
    minors = np.maximum(majors * rng.uniform(*ratio, count), 1.0)
    angles = angle[0] + angle[1] * rng.standard_normal(count)
    values = rng.uniform(*value, count)
    for (x, y), a, b, theta, v in zip(centres.tolist(),
                                      np.rint(majors).tolist(),
                                      np.rint(minors).tolist(),
                                      angles.tolist(), values.tolist()):
        cv2.ellipse(canvas, (x, y), (int(a), int(b)), theta, 0, 360, v, -1,
                    cv2.LINE_AA)
    return canvas


def _tumour(rng: np.random.Generator,
            size: int) -> Tuple[np.ndarray, np.ndarray]:
    """TUM: crowded large pleomorphic nuclei on purplish cytoplasm."""
    density = rng.uniform(0.7, 1.3)
    nuclei = _draw_nuclei(rng, size, int(density * size * size / 230),
                          (5.0, 10.0), (0.55, 1.0), (0.0, 180.0), (0.6, 1.1))
    chromatin = 1.0 + 0.35 * _blurred_noise(rng, size, 0.8)
    cytoplasm = _blurred_noise(rng, size, 2.0)
    hema = 0.22 + 0.05 * cytoplasm + 1.3 * nuclei * chromatin
    eosin = (0.38 + 0.08 * cytoplasm) * (1.0 - 0.5 * (nuclei > 0))
    return hema, eosin


def _stroma(rng: np.random.Generator,
            size: int) -> Tuple[np.ndarray, np.ndarray]:
    """STR: pink wavy fibres with sparse elongated spindle nuclei."""
    theta = rng.uniform(0.0, 180.0)
    length = 21
    kernel = np.zeros((length, length), np.float32)
    radians = np.radians(theta)
    direction = (length // 2) * np.array([np.cos(radians), -np.sin(radians)])
    centre = np.array([length // 2, length // 2])
    cv2.line(kernel, tuple(np.rint(centre - direction).astype(int).tolist()),
             tuple(np.rint(centre + direction).astype(int).tolist()), 1.0)
    fibres = cv2.filter2D(
        rng.standard_normal((size, size)).astype(np.float32), -1,
        kernel / kernel.sum())
    # Bend the fibres with a smooth displacement field.
    grid = np.mgrid[0:size, 0:size].astype(np.float32)
    shift = 4.0 * np.stack([_smooth_field(rng, size, 4) for _ in range(2)])
    fibres = cv2.remap(
        fibres,
        grid[1] + shift[0],
        grid[0] + shift[1],
        cv2.INTER_LINEAR,
        borderMode=cv2.BORDER_REFLECT)
    fibres /= fibres.std() + 1e-6
    density = rng.uniform(0.6, 1.5)
    nuclei = _draw_nuclei(rng, size, int(density * size * size / 1400),
                          (7.0, 13.0), (0.15, 0.3), (-theta, 12.0), (0.9, 1.4))
    hema = 0.08 + 0.03 * _blurred_noise(rng, size, 1.0) + 1.2 * nuclei
    eosin = (0.46 + 0.16 * np.tanh(fibres)) * (1.0 - 0.6 * (nuclei > 0))
    return hema, eosin


def _lymphocytes(rng: np.random.Generator,
                 size: int) -> Tuple[np.ndarray, np.ndarray]:
    """LYM: dense small dark round nuclei."""
    density = rng.uniform(0.5, 1.1)
    nuclei = _draw_nuclei(rng, size, int(density * size * size / 55),
                          (2.2, 3.8), (0.8, 1.0), (0.0, 180.0), (1.3, 1.9))
    background = _blurred_noise(rng, size, 1.5)
    hema = 0.18 + 0.04 * background + nuclei
    eosin = (0.3 + 0.06 * background) * (1.0 - 0.7 * (nuclei > 0))
    return hema, eosin


def _necrosis(rng: np.random.Generator,
              size: int) -> Tuple[np.ndarray, np.ndarray]:
    """NEC: pale pink granular debris with nuclear fragments."""
    granules = _blurred_noise(rng, size, 1.2)
    mottling = _smooth_field(rng, size, 6)
    density = rng.uniform(0.6, 1.4)
    fragments = _draw_nuclei(rng, size, int(density * size * size / 300),
                             (1.0, 2.4), (0.4, 1.0), (0.0, 180.0), (0.7, 1.5))
    hema = (0.14 + 0.06 * _blurred_noise(rng, size, 3.0) + 0.04 * mottling +
            fragments)
    eosin = 0.32 + 0.12 * granules + 0.06 * mottling
    return hema, eosin


# Class index -> texture renderer, in BCSS-WSSS class order.
_TEXTURES: Sequence[Texture] = (_tumour, _stroma, _lymphocytes, _necrosis)


def sample_layout(rng: np.random.Generator, size: int) -> np.ndarray:
    """Random region layout of 1-3 classes, possibly with background holes.

    Regions are the argmax of smooth random fields with a little
    higher-frequency noise (wavy borders); holes are the top quantile of
    another smooth field. Layouts where a chosen class covers less than
    :data:`MIN_CLASS_FRACTION` of the patch are re-sampled.

    Args:
        rng (np.random.Generator): Random generator.
        size (int): Side of the square patch.

    Returns:
        np.ndarray: uint8 (size, size) mask, values 0-3 and 4 (background).

    Raises:
        RuntimeError: If no valid layout is found (tiny ``size``).
    """
    min_pixels = MIN_CLASS_FRACTION * size * size
    for _ in range(_MAX_LAYOUT_TRIES):
        classes = rng.choice(
            NUM_CLASSES,
            rng.choice([1, 2, 3], p=[0.3, 0.4, 0.3]),
            replace=False)
        cells = int(rng.integers(2, 5))
        fields = np.stack([
            _smooth_field(rng, size, cells) +
            0.15 * _blurred_noise(rng, size, size / 40) for _ in classes
        ])
        mask = classes[fields.argmax(axis=0)].astype(np.uint8)
        if rng.random() < 0.6:
            holes = _smooth_field(rng, size, int(rng.integers(3, 7)))
            holes += 0.15 * _blurred_noise(rng, size, size / 40)
            mask[holes > np.quantile(holes, 1.0 - rng.uniform(0.03, 0.25))] \
                = BACKGROUND_INDEX
        counts = np.bincount(mask.ravel(), minlength=NUM_CLASSES + 1)
        if (counts[classes] >= min_pixels).all():
            return mask
    raise RuntimeError(f'No layout with every class >= '
                       f'{MIN_CLASS_FRACTION:.0%} of a {size}x{size} patch '
                       f'after {_MAX_LAYOUT_TRIES} tries')


def render_patch(rng: np.random.Generator,
                 size: int) -> Tuple[np.ndarray, np.ndarray]:
    """Draw one synthetic H&E patch and its mask.

    Args:
        rng (np.random.Generator): Random generator.
        size (int): Side of the square patch.

    Returns:
        tuple[np.ndarray, np.ndarray]: uint8 RGB image (size, size, 3) and
        uint8 mask (size, size) with classes 0-3 and background 4.
    """
    mask = sample_layout(rng, size)
    hema = np.zeros((size, size), np.float32)
    eosin = np.zeros((size, size), np.float32)
    for cls in np.flatnonzero(labels_from_mask(mask, NUM_CLASSES)):
        region = mask == cls
        cls_hema, cls_eosin = _TEXTURES[cls](rng, size)
        hema[region] = cls_hema[region]
        eosin[region] = cls_eosin[region]
    stains = []
    for reference, amount in ((_HEMATOXYLIN_OD, hema), (_EOSIN_OD, eosin)):
        vector = reference + rng.normal(0.0, 0.05, 3)
        vector /= np.linalg.norm(vector)
        stains.append(
            np.maximum(amount, 0.0)[..., None] * rng.uniform(0.7, 1.3) *
            vector.astype(np.float32))
    rgb = 255.0 * np.exp(-(stains[0] + stains[1])) * rng.uniform(0.9, 1.04)
    rgb = cv2.GaussianBlur(rgb, (0, 0), 0.6)
    rgb += rng.normal(0.0, 2.5, rgb.shape).astype(np.float32)
    return np.clip(np.rint(rgb), 0, 255).astype(np.uint8), mask


def save_rgb_png(path: str, rgb: np.ndarray) -> None:
    """Write a uint8 RGB image as PNG."""
    ok, buffer = cv2.imencode('.png', cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    if not ok:
        raise OSError(f'{path}: PNG encoding failed')
    buffer.tofile(path)


def save_palette_mask(path: str,
                      mask: np.ndarray,
                      palette: Sequence[Sequence[int]] = MASK_PALETTE) -> None:
    """Write a uint8 label map as an 8-bit palette ('P' mode) PNG.

    The palette is padded to 256 entries so that every index, including
    255 (ignore), survives; a shorter palette would make PIL write fewer
    bits per pixel.

    Args:
        path (str): Output path.
        mask (np.ndarray): uint8 (H, W) label map.
        palette (Sequence[Sequence[int]]): RGB colour of the first indices.
            Defaults to the BCSS-WSSS classes plus white background.
    """
    colours = [*palette, *([[0, 0, 0]] * (256 - len(palette)))]
    image = Image.fromarray(np.ascontiguousarray(mask, np.uint8))
    image.putpalette([c for colour in colours for c in colour])
    image.save(path)


def _write_patch(task: Tuple[str, int, int, int, int]) -> None:
    """Render and write patch ``index`` of ``split`` (worker function)."""
    out_dir, seed, split_id, index, size = task
    rng = np.random.default_rng([seed, split_id, index])
    rgb, mask = render_patch(rng, size)
    split = _SPLITS[split_id]
    if split == 'train':
        flags = ''.join(map(str, labels_from_mask(mask, NUM_CLASSES)))
        name = f'synth_{index:05d}[{flags}].png'
        save_rgb_png(osp.join(out_dir, 'training', name), rgb)
        save_palette_mask(osp.join(out_dir, 'training_gt', name), mask)
    else:
        name = f'{split}_{index:05d}.png'
        save_rgb_png(osp.join(out_dir, split, 'img', name), rgb)
        save_palette_mask(osp.join(out_dir, split, 'mask', name), mask)


def generate_synthetic_histo(out_dir: str,
                             seed: int,
                             num_train: int = 400,
                             num_val: int = 60,
                             num_test: int = 60,
                             size: int = 224,
                             workers: int = 1) -> Dict[str, int]:
    """Write a synthetic data set in the BCSS-WSSS layout.

    Args:
        out_dir (str): Output folder; its data sub-folders must not hold
            files yet.
        seed (int): Non-negative seed; equal seeds give identical files.
        num_train (int): Number of training patches. Defaults to 400.
        num_val (int): Number of validation patches. Defaults to 60.
        num_test (int): Number of test patches. Defaults to 60.
        size (int): Patch side in pixels (>= 32). Defaults to 224.
        workers (int): Processes to render with; does not change the
            output. Defaults to 1.

    Returns:
        dict[str, int]: Number of patches per split.

    Raises:
        ValueError: On a negative seed or count, a too small size or fewer
            than one worker.
        FileExistsError: If an output sub-folder already holds files.
    """
    counts = dict(train=num_train, val=num_val, test=num_test)
    if seed < 0 or min(counts.values()) < 0:
        raise ValueError(f'seed and patch counts must be >= 0, got '
                         f'seed={seed}, counts={counts}')
    if size < 32:
        raise ValueError(f'size must be >= 32, got {size}')
    if workers < 1:
        raise ValueError(f'workers must be >= 1, got {workers}')
    folders = [
        'training', 'training_gt', 'val/img', 'val/mask', 'test/img',
        'test/mask'
    ]
    for folder in folders:
        path = osp.join(out_dir, folder)
        if osp.isdir(path) and os.listdir(path):
            raise FileExistsError(
                f'{path} already holds files; remove it or choose another '
                f'--out so that splits are not mixed')
    for folder in folders:
        os.makedirs(osp.join(out_dir, folder), exist_ok=True)
    tasks = [(out_dir, seed, split_id, index, size)
             for split_id, split in enumerate(_SPLITS)
             for index in range(counts[split])]
    if workers == 1:
        for task in tasks:
            _write_patch(task)
    else:
        with Pool(workers) as pool:
            pool.map(_write_patch, tasks, chunksize=16)
    return counts
