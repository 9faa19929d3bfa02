"""Whole-slide images (and ordinary images) behind one reading interface.

A :class:`SlideReader` is a pyramid of levels, level 0 the full
resolution; coordinates follow OpenSlide: a region's top-left ``(x, y)`` is
in level-0 pixels, its ``width`` / ``height`` in pixels of the level read.
Every read returns RGB uint8; whatever lies outside the slide (or is
transparent in it) is white glass (255).

- :class:`OpenSlideReader`: Aperio ``.svs``, pyramidal ``.tif``,
  ``.ndpi``, ``.mrxs``, ... through OpenSlide; nothing is held in memory.
- :class:`ImageReader`: PNG / JPEG / TIFF that OpenSlide does not open
  (e.g. a stripped TIFF), decoded whole into memory: region-sized images.
- :class:`ArrayReader`: an RGB array already in memory.

:func:`open_slide` picks the reader of a file. :class:`ResampledSlide`
shows a slide at a target resolution (µm per pixel): it reads the nearest
finer pyramid level and resamples it on the slide-global output grid, so
that any tile read from it is the same as the crop of the whole resampled
slide, whatever the tile grid.
"""
import math
import os.path as osp
from abc import ABCMeta, abstractmethod
from typing import List, Optional, Sequence, Tuple

import cv2
import numpy as np
import openslide
import tifffile

# Relative tolerance of "this level's downsample is at most the requested
# scale" (levels are picked with downsample <= scale * (1 + tolerance)).
LEVEL_PICK_TOLERANCE = 1e-3
# A level whose downsample equals the scale within this is read directly.
EXACT_SCALE_TOLERANCE = 1e-6
# Largest relative difference accepted between the x and y pixel sizes.
MAX_MPP_ANISOTROPY = 0.01
# Micrometres per TIFF resolution unit (ResolutionUnit 2: inch, 3: cm).
_MICRONS_PER_TIFF_UNIT = {2: 25400.0, 3: 10000.0}
_TIFF_SUFFIXES = ('.tif', '.tiff')
# Level pixels a thumbnail reads at a time (6 MiB of RGB; about 10x that
# while the RGBA band is read and composited on white).
THUMBNAIL_BAND_PIXELS = 2 * 1024 * 1024


def square_pixel_mpp(path: str, mpp_x: Optional[float],
                     mpp_y: Optional[float]) -> Optional[float]:
    """One pixel size from a slide's x and y pixel sizes.

    Args:
        path: The slide, for error messages.
        mpp_x: µm per pixel along x, or None if unknown.
        mpp_y: µm per pixel along y, or None if unknown.

    Returns:
        float or None: The mean of ``mpp_x`` and ``mpp_y``; None if either
        is unknown.

    Raises:
        ValueError: If a size is not positive and finite, or the two differ
            by more than :data:`MAX_MPP_ANISOTROPY` of their mean.
    """
    if mpp_x is None or mpp_y is None:
        return None
    for value in (mpp_x, mpp_y):
        if not (math.isfinite(value) and value > 0):
            raise ValueError(f'{path}: the pixel size must be a positive '
                             f'number of µm, got MPP x {mpp_x}, y {mpp_y}')
    mean = (mpp_x + mpp_y) / 2
    if abs(mpp_x - mpp_y) > MAX_MPP_ANISOTROPY * mean:
        raise ValueError(
            f'{path}: the pixels are not square: MPP x {mpp_x:g} and y '
            f'{mpp_y:g} µm differ by more than {MAX_MPP_ANISOTROPY:.0%}; '
            'pass --mpp to override')
    return mean


def composite_on_white(rgba: np.ndarray) -> np.ndarray:
    """Non-premultiplied RGBA over white glass.

    Args:
        rgba: uint8 (H, W, 4).

    Returns:
        np.ndarray: uint8 RGB (H, W, 3); opaque pixels unchanged, fully
        transparent ones 255.
    """
    # uint16 holds rgb * alpha + 255 * (255 - alpha) + 127 <= 65152.
    alpha = rgba[..., 3:].astype(np.uint16)
    rgb = rgba[..., :3].astype(np.uint16)
    return ((rgb * alpha + 255 * (255 - alpha) + 127) // 255).astype(np.uint8)


def level_for_scale(level_downsamples: Sequence[float], scale: float) -> int:
    """The pyramid level to read for a given level-0 px per output px.

    Args:
        level_downsamples: Downsample of each level, increasing.
        scale: Level-0 pixels per output pixel.

    Returns:
        int: The level with the largest downsample <= ``scale * (1 +
        LEVEL_PICK_TOLERANCE)`` (the nearest finer level); 0 if there is
        none (upsampling).
    """
    limit = scale * (1 + LEVEL_PICK_TOLERANCE)
    fitting = [i for i, down in enumerate(level_downsamples) if down <= limit]
    return max(fitting, key=lambda i: level_downsamples[i], default=0)


class SlideReader(metaclass=ABCMeta):
    """A pyramidal RGB image read region by region (a context manager).

    Attributes:
        path: The file (or a name for in-memory images).
        dimensions: Level-0 (width, height) in pixels.
        level_dimensions: (width, height) of every level.
        level_downsamples: Level-0 pixels per pixel of every level
            (1.0 first).
        mpp: Level-0 µm per pixel (mean of x and y), None if unknown.
    """

    def __init__(self, path: str, level_dimensions: List[Tuple[int, int]],
                 level_downsamples: List[float], mpp: Optional[float]):
        self.path = path
        self.level_dimensions = level_dimensions
        self.level_downsamples = level_downsamples
        self.dimensions = level_dimensions[0]
        self.mpp = mpp

    def read_region(self, x: int, y: int, level: int, width: int,
                    height: int) -> np.ndarray:
        """RGB pixels of a box of one level.

        Args:
            x: Left edge, in level-0 pixels (may be outside the slide).
            y: Top edge, in level-0 pixels.
            level: Pyramid level, in [0, len(level_dimensions)).
            width: Box width, in pixels of ``level``, >= 0.
            height: Box height, in pixels of ``level``, >= 0.

        Returns:
            np.ndarray: uint8 RGB (height, width, 3); white (255) outside
            the slide and where it is transparent.
        """
        if not 0 <= level < len(self.level_dimensions):
            raise ValueError(f'{self.path}: level {level} is not in [0, '
                             f'{len(self.level_dimensions)})')
        if width < 0 or height < 0:
            raise ValueError(f'{self.path}: region size must be >= 0, got '
                             f'{width} x {height}')
        if width == 0 or height == 0:
            return np.full((height, width, 3), 255, np.uint8)
        return self._read(int(x), int(y), level, int(width), int(height))

    @abstractmethod
    def _read(self, x: int, y: int, level: int, width: int,
              height: int) -> np.ndarray:
        """:meth:`read_region` of a valid, non-empty box."""

    def thumbnail(self, max_side: int) -> np.ndarray:
        """The whole slide, its longest side at most ``max_side``.

        Reads the smallest level at least as large as the thumbnail (see
        :func:`level_for_scale`) in bands of at most
        :data:`THUMBNAIL_BAND_PIXELS` pixels and shrinks each with
        ``cv2.INTER_AREA`` (a band's rows map to whole thumbnail rows, to a
        level pixel), so memory stays bounded on a pyramid whose smallest
        level is large; a slide smaller than ``max_side`` comes back at
        level-0 size.

        Args:
            max_side: Longest side of the thumbnail, >= 1.

        Returns:
            np.ndarray: uint8 RGB (h, w, 3), ``w / h`` the slide's aspect
            ratio (to the rounding of a pixel).
        """
        if max_side < 1:
            raise ValueError(f'{self.path}: thumbnail max_side must be >= 1, '
                             f'got {max_side}')
        width, height = self.dimensions
        scale = max(max(width, height) / max_side, 1.0)
        size = (max(1, round(width / scale)), max(1, round(height / scale)))
        level = level_for_scale(self.level_downsamples, scale)
        level_width, level_height = self.level_dimensions[level]
        down = self.level_downsamples[level]
        rows_per_level_row = size[1] / level_height
        band = max(1, math.floor(
            THUMBNAIL_BAND_PIXELS // level_width * rows_per_level_row))
        out = np.empty((size[1], size[0], 3), np.uint8)
        for top in range(0, size[1], band):
            bottom = min(top + band, size[1])
            first = round(top / rows_per_level_row)
            last = max(round(bottom / rows_per_level_row), first + 1)
            rows = self.read_region(0, round(first * down), level,
                                    level_width, last - first)
            out[top:bottom] = rows if rows.shape[1::-1] == (
                size[0], bottom - top) else cv2.resize(
                    rows, (size[0], bottom - top),
                    interpolation=cv2.INTER_AREA)
        return out

    def close(self) -> None:
        """Release the file; the reader is unusable afterwards."""

    def __enter__(self) -> 'SlideReader':
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()


def _float_property(slide: openslide.OpenSlide, path: str,
                    name: str) -> Optional[float]:
    """A numeric property of an OpenSlide slide, None if absent."""
    value = slide.properties.get(name)
    if value is None:
        return None
    try:
        return float(value)
    except ValueError as err:
        raise ValueError(f'{path}: property {name} is not a number: '
                         f'{value!r}') from err


class OpenSlideReader(SlideReader):
    """A whole-slide image through OpenSlide.

    MPP comes from the ``openslide.mpp-x`` / ``openslide.mpp-y``
    properties. Regions are composited on white (OpenSlide returns
    transparent pixels outside the scanned area).

    Note: OpenSlide interpolates a level > 0 read at a level-0 position
    that is not a whole number of that level's pixels; positions here are
    whole numbers of level-0 pixels, so levels with an integer downsample
    are read pixel for pixel.

    Args:
        path: The slide file.
        mpp: Level-0 µm per pixel, overriding the metadata.
    """

    def __init__(self, path: str, mpp: Optional[float] = None):
        try:
            self._slide = openslide.OpenSlide(path)
        except openslide.OpenSlideError as err:
            raise ValueError(f'{path}: OpenSlide cannot open it: {err}') \
                from err
        try:
            if mpp is None:
                mpp = square_pixel_mpp(
                    path,
                    *(_float_property(self._slide, path, name)
                      for name in (openslide.PROPERTY_NAME_MPP_X,
                                   openslide.PROPERTY_NAME_MPP_Y)))
            mpp = square_pixel_mpp(path, mpp, mpp)
        except ValueError:
            self._slide.close()
            raise
        super().__init__(path, list(self._slide.level_dimensions),
                         [float(d) for d in self._slide.level_downsamples],
                         mpp)

    def _read(self, x: int, y: int, level: int, width: int,
              height: int) -> np.ndarray:
        region = self._slide.read_region((x, y), level, (width, height))
        return composite_on_white(np.asarray(region))

    def close(self) -> None:
        self._slide.close()


class ArrayReader(SlideReader):
    """An in-memory RGB image as a one-level slide.

    Args:
        rgb: uint8 RGB (H, W, 3); kept by reference, not copied.
        mpp: µm per pixel, None if unknown.
        name: Stands for the path in messages.
    """

    def __init__(self,
                 rgb: np.ndarray,
                 mpp: Optional[float] = None,
                 name: str = 'array'):
        if not isinstance(rgb, np.ndarray) or rgb.dtype != np.uint8 \
                or rgb.ndim != 3 or rgb.shape[2] != 3:
            shape = getattr(rgb, 'shape', type(rgb).__name__)
            dtype = getattr(rgb, 'dtype', '')
            raise ValueError(f'{name}: expected a uint8 RGB image (H, W, 3), '
                             f'got {dtype} {shape}')
        self._rgb = rgb
        super().__init__(name, [(rgb.shape[1], rgb.shape[0])], [1.0],
                         square_pixel_mpp(name, mpp, mpp))

    def _read(self, x: int, y: int, level: int, width: int,
              height: int) -> np.ndarray:
        region = np.full((height, width, 3), 255, np.uint8)
        slide_height, slide_width = self._rgb.shape[:2]
        left, right = max(x, 0), min(x + width, slide_width)
        top, bottom = max(y, 0), min(y + height, slide_height)
        if left < right and top < bottom:
            region[top - y:bottom - y, left - x:right - x] = \
                self._rgb[top:bottom, left:right]
        return region


def tiff_mpp(path: str) -> Tuple[Optional[float], Optional[float]]:
    """µm per pixel along x and y from a TIFF's resolution tags.

    Args:
        path: A TIFF file.

    Returns:
        tuple: (mpp_x, mpp_y) of the first page; (None, None) unless the
        resolution unit is inch or centimetre and both resolutions are
        positive.
    """
    try:
        with tifffile.TiffFile(path) as tif:
            tags = tif.pages[0].tags
            unit = tags.get('ResolutionUnit')
            resolutions = [tags.get('XResolution'), tags.get('YResolution')]
    except tifffile.TiffFileError as err:
        raise ValueError(f'{path}: not a readable TIFF: {err}') from err
    microns = None if unit is None else _MICRONS_PER_TIFF_UNIT.get(
        int(unit.value))
    if microns is None or None in resolutions:
        return None, None
    mpps = []
    for tag in resolutions:
        numerator, denominator = tag.value
        if numerator <= 0 or denominator <= 0:
            return None, None
        mpps.append(microns * denominator / numerator)
    return mpps[0], mpps[1]


class ImageReader(ArrayReader):
    """A PNG / JPEG / TIFF decoded whole into memory (region-sized images).

    For images OpenSlide does not open. Pixels are decoded by OpenCV
    (colour; an alpha channel is dropped, grey is expanded to RGB); the
    MPP of a TIFF comes from its resolution tags when their unit is inch
    or centimetre (other files: no MPP unless given).

    Args:
        path: The image file.
        mpp: µm per pixel, overriding the metadata.
    """

    def __init__(self, path: str, mpp: Optional[float] = None):
        bgr = cv2.imread(path, cv2.IMREAD_COLOR)
        if bgr is None:
            raise ValueError(
                f'{path}: neither OpenSlide nor OpenCV can read it (expected '
                'a whole-slide image or a PNG / JPEG / TIFF image)')
        if mpp is None and path.lower().endswith(_TIFF_SUFFIXES):
            mpp = square_pixel_mpp(path, *tiff_mpp(path))
        super().__init__(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), mpp, path)


def open_slide(path: str, mpp: Optional[float] = None) -> SlideReader:
    """The reader of a slide or image file.

    Args:
        path: A whole-slide image (any format OpenSlide detects) or an
            ordinary image.
        mpp: Level-0 µm per pixel, overriding the file's metadata.

    Returns:
        SlideReader: An :class:`OpenSlideReader` if OpenSlide detects the
        format, else an :class:`ImageReader`.

    Raises:
        FileNotFoundError: If ``path`` is not a file.
        ValueError: If it cannot be read, or its metadata is unusable.
    """
    if not osp.isfile(path):
        raise FileNotFoundError(f'{path}: no such slide or image file')
    if openslide.OpenSlide.detect_format(path) is not None:
        return OpenSlideReader(path, mpp)
    return ImageReader(path, mpp)


def _axis_taps(start: int, count: int, ratio: float,
               length: int) -> Tuple[np.ndarray, np.ndarray]:
    """Source pixels and weights of output pixels along one axis.

    Output pixel ``u`` covers source coordinates ``[u, u + 1) * ratio``.
    Shrinking (``ratio > 1``) averages the source pixels over that span,
    weighted by their overlap (the filter of ``cv2.INTER_AREA``);
    enlarging interpolates linearly at the span's centre (that of
    ``cv2.INTER_LINEAR``). Source indices are clamped to ``[0, length)``:
    the border pixels repeat, as in cv2's resizing.

    Args:
        start: First output pixel.
        count: Number of output pixels.
        ratio: Source pixels per output pixel.
        length: Source size along the axis.

    Returns:
        tuple: int64 source indices and float32 weights, both (K, count);
        each column's weights sum to 1.
    """
    out = np.arange(start, start + count, dtype=np.float64)
    if ratio > 1:
        lower = out * ratio
        upper = lower + ratio
        first = np.floor(lower)
        taps = first + np.arange(math.ceil(ratio) + 1)[:, None]
        overlap = np.minimum(upper, taps + 1) - np.maximum(lower, taps)
        weights = np.clip(overlap, 0, None) / ratio
    else:
        centre = (out + 0.5) * ratio - 0.5
        first = np.floor(centre)
        taps = first + np.arange(2)[:, None]
        fraction = centre - first
        weights = np.stack([1 - fraction, fraction])
    indices = np.clip(taps, 0, length - 1).astype(np.int64)
    return indices, weights.astype(np.float32)


def _outside(start: int, count: int, length: int) -> np.ndarray:
    """Bool (count,): which of pixels ``start..start+count`` are outside
    ``[0, length)``."""
    pixels = np.arange(start, start + count)
    return (pixels < 0) | (pixels >= length)


class ResampledSlide:
    """A slide seen at a target resolution, read box by box.

    Output pixel ``(u, v)`` covers level-0 pixels ``[u, u + 1) * scale`` x
    ``[v, v + 1) * scale``, ``scale = target_mpp / reader.mpp``. A read
    takes the nearest finer pyramid level (:func:`level_for_scale`) and
    resamples it: by pixel-overlap averaging when shrinking (the filter of
    ``cv2.INTER_AREA``), bilinearly when enlarging (that of
    ``cv2.INTER_LINEAR``). The filter is evaluated on the slide-global
    output grid, not on the box read (``cv2.resize`` of a box would put
    the output grid at the box's corner, a fractional level position in
    general, shifting each tile by up to a pixel), so a box's pixels are
    those of the whole slide resampled at once: tiles agree where they
    overlap. Past the level's last row / column its border pixels repeat;
    output pixels outside ``dimensions`` are white.

    When the level's downsample equals ``scale`` (within
    :data:`EXACT_SCALE_TOLERANCE`) boxes are plain crops of that level,
    bit-identical to :meth:`SlideReader.read_region`, and ``dimensions``
    are the level's.

    Args:
        reader: The slide; its ``mpp`` must be known.
        target_mpp: µm per output pixel, > 0.

    Attributes:
        reader: The slide.
        target_mpp: µm per output pixel.
        scale: Level-0 pixels per output pixel.
        level: The pyramid level read.
        level_downsample: Its downsample (level-0 px per level px).
        dimensions: Output (width, height) in pixels: level-0 dimensions /
            ``scale``, rounded.
    """

    def __init__(self, reader: SlideReader, target_mpp: float):
        if reader.mpp is None:
            raise ValueError(f"{reader.path}: no MPP (µm per pixel) in the "
                             "slide's metadata; pass --mpp")
        if not (math.isfinite(target_mpp) and target_mpp > 0):
            raise ValueError(f'{reader.path}: target MPP must be a positive '
                             f'number of µm, got {target_mpp}')
        self.reader = reader
        self.target_mpp = target_mpp
        self.scale = target_mpp / reader.mpp
        self.level = level_for_scale(reader.level_downsamples, self.scale)
        self.level_downsample = reader.level_downsamples[self.level]
        self._exact = abs(self.level_downsample - self.scale) \
            <= EXACT_SCALE_TOLERANCE
        if self._exact:
            self.dimensions = reader.level_dimensions[self.level]
        else:
            self.dimensions = tuple(
                max(1, math.floor(side / self.scale + 0.5))
                for side in reader.dimensions)

    def to_level0(self, x: float, y: float) -> Tuple[float, float]:
        """Level-0 coordinates of output coordinates ``(x, y)``."""
        return x * self.scale, y * self.scale

    def read(self, x: int, y: int, width: int, height: int) -> np.ndarray:
        """The output pixels of the box ``[x, x + width) x [y, y + height)``.

        Args:
            x: Left edge, in output pixels (may be outside the slide).
            y: Top edge, in output pixels.
            width: Box width, >= 0.
            height: Box height, >= 0.

        Returns:
            np.ndarray: uint8 RGB (height, width, 3); white outside
            ``dimensions``. Resampling holds the level pixels under the
            box in float32, about ``12 * width * height * (scale /
            level_downsample) ** 2`` bytes, plus the box itself.
        """
        down = self.level_downsample
        if self._exact:
            return self.reader.read_region(round(x * down), round(y * down),
                                           self.level, width, height)
        if width < 0 or height < 0:
            raise ValueError(f'{self.reader.path}: box size must be >= 0, '
                             f'got {width} x {height}')
        if width == 0 or height == 0:
            return np.full((height, width, 3), 255, np.uint8)
        ratio = self.scale / down
        level_width, level_height = self.reader.level_dimensions[self.level]
        rows, row_weights = _axis_taps(y, height, ratio, level_height)
        cols, col_weights = _axis_taps(x, width, ratio, level_width)
        top, left = int(rows.min()), int(cols.min())
        source = self.reader.read_region(
            round(left * down), round(top * down), self.level,
            int(cols.max()) + 1 - left,
            int(rows.max()) + 1 - top).astype(np.float32)
        band = sum(weight[:, None, None] * source[index - top]
                   for index, weight in zip(rows, row_weights))
        box = sum(weight[None, :, None] * band[:, index - left]
                  for index, weight in zip(cols, col_weights))
        box = np.clip(np.rint(box), 0, 255).astype(np.uint8)
        out_width, out_height = self.dimensions
        box[_outside(y, height, out_height)] = 255
        box[:, _outside(x, width, out_width)] = 255
        return box
