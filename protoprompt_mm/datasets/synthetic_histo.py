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

Masks are palette PNGs (:mod:`.palette_masks`): indices 0-3 are the classes,
4 is background.
``training_gt/`` is NOT part of the BCSS-WSSS layout: WSSS training never
reads it; it only serves to score pseudo masks made from the training set.

Every patch is drawn from its own generator seeded by ``(seed, split,
index)``, so the output is bit-for-bit reproducible and independent of how
the work is split among processes.
"""
import os
import os.path as osp
from multiprocessing import Pool
from typing import Callable, Dict, Optional, Sequence, Tuple

import cv2
import numpy as np

from .bcss_wsss_dataset import BCSSWSSSDataset
from .image_labels import labels_from_mask
from .palette_masks import save_palette_mask

NUM_CLASSES = len(BCSSWSSSDataset.METAINFO['classes'])
BACKGROUND_INDEX = NUM_CLASSES
MIN_CLASS_FRACTION = 0.05
# Generator settings per difficulty. ``standard`` is the default data set;
# ``hard`` is closer to real H&E: per-slide stains, classes that share
# texture, smaller regions and soft borders (see :func:`render_patch`).
DIFFICULTIES: Dict[str, Dict[str, object]] = dict(
    standard=dict(min_class_fraction=MIN_CLASS_FRACTION,
                  num_classes_p=(0.3, 0.4, 0.3), cells=(2, 5)),
    hard=dict(min_class_fraction=0.02, num_classes_p=(0.2, 0.4, 0.4),
              cells=(3, 7), patches_per_slide=20),
)
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


def sample_layout(rng: np.random.Generator,
                  size: int,
                  difficulty: str = 'standard') -> Tuple[np.ndarray,
                                                         np.ndarray,
                                                         np.ndarray]:
    """Random region layout of 1-3 classes, possibly with background holes.

    Regions are the argmax of smooth random fields with a little
    higher-frequency noise (wavy borders); holes are the top quantile of
    another smooth field. Layouts where a chosen class covers less than
    the difficulty's minimum fraction of the patch are re-sampled. ``hard``
    layouts have more, smaller regions (finer fields, 3 classes more often,
    2% minimum).

    Args:
        rng (np.random.Generator): Random generator.
        size (int): Side of the square patch.
        difficulty (str): A key of :data:`DIFFICULTIES`.

    Returns:
        tuple: uint8 (size, size) mask, values 0-3 and 4 (background); the
        float32 (C, size, size) fields of its C classes, whose argmax are
        the regions; the (C,) class of each field.

    Raises:
        RuntimeError: If no valid layout is found (tiny ``size``).
    """
    setting = DIFFICULTIES[difficulty]
    min_pixels = setting['min_class_fraction'] * size * size
    for _ in range(_MAX_LAYOUT_TRIES):
        classes = rng.choice(
            NUM_CLASSES,
            rng.choice([1, 2, 3], p=setting['num_classes_p']),
            replace=False)
        cells = int(rng.integers(*setting['cells']))
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
            return mask, fields, classes
    raise RuntimeError(f'No layout with every class >= '
                       f"{setting['min_class_fraction']:.0%} of a "
                       f'{size}x{size} patch after {_MAX_LAYOUT_TRIES} tries')


def slide_stain(seed: int, split_id: int, slide: int) -> Dict[str, object]:
    """The stain of one synthetic slide (``hard`` difficulty).

    Every slide has its own stain vectors, stain amounts and brightness,
    like a lab or scanner of its own; the patches of a slide share them.

    Args:
        seed (int): Data-set seed.
        split_id (int): Index of the split in ``('train', 'val', 'test')``;
            the splits have different slides.
        slide (int): Slide index within the split.

    Returns:
        dict: ``vectors`` (2, 3) unit optical densities of H and E,
        ``amounts`` (2,) multipliers and ``brightness``.
    """
    rng = np.random.default_rng([seed, split_id, slide, 1])
    vectors = []
    for reference in (_HEMATOXYLIN_OD, _EOSIN_OD):
        vector = reference + rng.normal(0.0, 0.12, 3)
        vectors.append(np.abs(vector) / np.linalg.norm(vector))
    return dict(
        vectors=np.stack(vectors),
        amounts=rng.uniform(0.6, 1.4, 2),
        brightness=rng.uniform(0.85, 1.04))


def render_patch(rng: np.random.Generator,
                 size: int,
                 difficulty: str = 'standard',
                 stain: Optional[Dict[str, object]] = None) -> Tuple[
                     np.ndarray, np.ndarray]:
    """Draw one synthetic H&E patch and its mask.

    ``standard``: each region shows its class's texture up to a hard
    border; stain vectors, amounts and brightness are jittered per patch.
    ``hard`` (see :data:`DIFFICULTIES`): the stain comes from the patch's
    slide (``stain``, :func:`slide_stain`) with little per-patch jitter;
    each region's texture is blended with that of another class (weight
    0.2-0.45, so classes share texture); textures cross-fade over a few
    pixels at borders (ambiguous borders); regions are smaller.

    Args:
        rng (np.random.Generator): Random generator.
        size (int): Side of the square patch.
        difficulty (str): A key of :data:`DIFFICULTIES`.
        stain (dict, optional): The slide's stain, required for ``hard``.

    Returns:
        tuple[np.ndarray, np.ndarray]: uint8 RGB image (size, size, 3) and
        uint8 mask (size, size) with classes 0-3 and background 4.
    """
    hard = difficulty == 'hard'
    if hard and stain is None:
        raise ValueError("render_patch: difficulty='hard' needs the slide's "
                         'stain (slide_stain)')
    mask, fields, field_classes = sample_layout(rng, size, difficulty)
    present = np.flatnonzero(labels_from_mask(mask, NUM_CLASSES))
    hema = np.zeros((size, size), np.float32)
    eosin = np.zeros((size, size), np.float32)
    if hard:
        # Soft region weights: textures cross-fade over ~3 px at borders.
        weights = np.exp(12.0 * (fields - fields.max(axis=0)))
        weights *= (mask != BACKGROUND_INDEX) / weights.sum(axis=0)
    for cls in present:
        region = mask == cls
        cls_hema, cls_eosin = _TEXTURES[cls](rng, size)
        if hard:
            other = int(rng.choice([c for c in range(NUM_CLASSES)
                                    if c != cls]))
            mix = rng.uniform(0.2, 0.45)
            other_hema, other_eosin = _TEXTURES[other](rng, size)
            cls_hema = (1 - mix) * cls_hema + mix * other_hema
            cls_eosin = (1 - mix) * cls_eosin + mix * other_eosin
            weight = weights[list(field_classes).index(cls)]
            hema += weight * cls_hema
            eosin += weight * cls_eosin
        else:
            hema[region] = cls_hema[region]
            eosin[region] = cls_eosin[region]
    stains = []
    for i, (reference, amount) in enumerate(
            ((_HEMATOXYLIN_OD, hema), (_EOSIN_OD, eosin))):
        if hard:
            vector = stain['vectors'][i] + rng.normal(0.0, 0.02, 3)
            vector /= np.linalg.norm(vector)
            scale = stain['amounts'][i] * rng.uniform(0.95, 1.05)
        else:
            vector = reference + rng.normal(0.0, 0.05, 3)
            vector /= np.linalg.norm(vector)
            scale = rng.uniform(0.7, 1.3)
        stains.append(
            np.maximum(amount, 0.0)[..., None] * scale *
            vector.astype(np.float32))
    brightness = stain['brightness'] * rng.uniform(0.98, 1.02) if hard \
        else rng.uniform(0.9, 1.04)
    rgb = 255.0 * np.exp(-(stains[0] + stains[1])) * brightness
    rgb = cv2.GaussianBlur(rgb, (0, 0), 0.6)
    rgb += rng.normal(0.0, 2.5, rgb.shape).astype(np.float32)
    return np.clip(np.rint(rgb), 0, 255).astype(np.uint8), mask


def save_rgb_png(path: str, rgb: np.ndarray) -> None:
    """Write a uint8 RGB image as PNG."""
    ok, buffer = cv2.imencode('.png', cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    if not ok:
        raise OSError(f'{path}: PNG encoding failed')
    buffer.tofile(path)


def _write_patch(task: Tuple[str, int, int, int, int, str]) -> None:
    """Render and write patch ``index`` of ``split`` (worker function)."""
    out_dir, seed, split_id, index, size, difficulty = task
    rng = np.random.default_rng([seed, split_id, index])
    stain = None
    if difficulty == 'hard':
        slide = index // DIFFICULTIES['hard']['patches_per_slide']
        stain = slide_stain(seed, split_id, slide)
    rgb, mask = render_patch(rng, size, difficulty, stain)
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
                             workers: int = 1,
                             difficulty: str = 'standard') -> Dict[str, int]:
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
        difficulty (str): ``'standard'`` or ``'hard'`` (per-slide stains of
            20 patches each, different slides per split, classes sharing
            texture, small regions, soft borders; see :func:`render_patch`).

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
    if difficulty not in DIFFICULTIES:
        raise ValueError(f'difficulty must be one of {sorted(DIFFICULTIES)}, '
                         f'got {difficulty!r}')
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
    tasks = [(out_dir, seed, split_id, index, size, difficulty)
             for split_id, split in enumerate(_SPLITS)
             for index in range(counts[split])]
    if workers == 1:
        for task in tasks:
            _write_patch(task)
    else:
        with Pool(workers) as pool:
            pool.map(_write_patch, tasks, chunksize=16)
    return counts
