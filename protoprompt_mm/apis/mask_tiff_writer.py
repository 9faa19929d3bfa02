"""Stream a whole-slide label mask into a pyramidal, tiled uint8 TIFF.

The mask arrives as horizontal strips, top to bottom, and is never held
whole (slides reach 150k x 150k pixels). Level 0 is written tile row by
tile row straight from the strips. While a level is written, its
next-coarser level (``level[::2, ::2]``, nearest sampling, so labels are
never averaged) is spooled as zlib-compressed row blocks into an anonymous
temporary file in the output folder; that spool then feeds the next level,
which spools the one after it. Anonymous temporary files vanish when closed
and, on Linux, even when the process dies. Peak memory is
O(``tile`` x ``width``) bytes: one tile row of the current level, the
tile row tifffile encodes at a time, and one spooled block.

The pyramid levels are consecutive top-level IFDs (reduced levels with
``subfiletype=1``), the layout OpenSlide reads as ``generic-tiff`` with
all levels and ``openslide.mpp-x`` / ``mpp-y`` from the resolution tags.
The file is BigTIFF (level 0 of a large slide may pass 4 GB) and is written
to ``path + '.part'``, renamed to ``path`` only once complete.
"""
import math
import os
import struct
import tempfile
import zlib
from contextlib import ExitStack
from typing import IO, Iterable, Iterator, List, Optional, Tuple

import numpy as np
import tifffile

from protoprompt_mm.utils.atomic_write import atomic_path

UM_PER_CM = 1e4
SPOOL_HEADER = struct.Struct('<QQ')  # rows, compressed bytes of one block


class _RowSpool:
    """Row blocks of one level, zlib-compressed in an anonymous temp file.

    Args:
        spool_file: Binary file opened for writing and reading.
    """

    def __init__(self, spool_file: IO[bytes]) -> None:
        self._file = spool_file

    def append(self, block: np.ndarray) -> None:
        """Append a uint8 block (rows, width) below the previous ones."""
        data = zlib.compress(np.ascontiguousarray(block).tobytes(), 1)
        self._file.write(SPOOL_HEADER.pack(block.shape[0], len(data)))
        self._file.write(data)

    def blocks(self, width: int) -> Iterator[np.ndarray]:
        """Yield the appended blocks, uint8 (rows, ``width``), in order."""
        self._file.flush()
        self._file.seek(0)
        while header := self._file.read(SPOOL_HEADER.size):
            rows, nbytes = SPOOL_HEADER.unpack(header)
            data = zlib.decompress(self._file.read(nbytes))
            yield np.frombuffer(data, np.uint8).reshape(rows, width)


def pyramid_level_sizes(width: int, height: int,
                        min_level_side: int) -> List[Tuple[int, int]]:
    """Sizes of the pyramid levels ``mask[::k, ::k]``, k = 1, 2, 4, ...

    Args:
        width: Level-0 width, pixels.
        height: Level-0 height, pixels.
        min_level_side: A reduced level is kept only while its longer side
            is at least this many pixels (>= 2); level 0 is always kept.

    Returns:
        List[Tuple[int, int]]: (width, height) per level, finest first.
    """
    sizes = [(width, height)]
    downsample = 2
    while max(math.ceil(width / downsample),
              math.ceil(height / downsample)) >= min_level_side:
        sizes.append((math.ceil(width / downsample),
                      math.ceil(height / downsample)))
        downsample *= 2
    return sizes


def _row_blocks(strips: Iterable[np.ndarray], width: int, height: int,
                rows: int, path: str) -> Iterator[np.ndarray]:
    """Regroup strips into blocks of ``rows`` rows, checking them.

    Every check runs before the last block is yielded, so a consumer that
    stops after it has still validated the whole input.

    Args:
        strips: uint8 arrays (h_i, ``width``), h_i >= 1, top to bottom.
        width: Expected strip width, pixels.
        height: Expected total of the strip heights, pixels.
        rows: Rows per yielded block (the last one may have fewer).
        path: Output file, named in errors.

    Yields:
        np.ndarray: uint8 (min(rows, rows left), ``width``) blocks.

    Raises:
        ValueError: A strip that is not uint8 (h, ``width``) with h >= 1,
            or strips that end before or run past row ``height``.
    """
    strip_iter = iter(strips)
    block = np.empty((min(rows, height), width), np.uint8)
    block_start = filled = 0
    row = 0
    while row < height:
        strip = next(strip_iter, None)
        if strip is None:
            raise ValueError(f'{path}: the strips end at row {row}, '
                             f'expected {height} rows')
        strip = np.asarray(strip)
        if strip.dtype != np.uint8 or strip.ndim != 2 or \
                strip.shape[0] < 1 or strip.shape[1] != width:
            raise ValueError(
                f'{path}: strip starting at row {row} is {strip.dtype} '
                f'{strip.shape}, expected uint8 (rows >= 1, {width})')
        if row + strip.shape[0] > height:
            raise ValueError(
                f'{path}: strip starting at row {row} has '
                f'{strip.shape[0]} rows, running past the mask height '
                f'{height}')
        if row + strip.shape[0] == height and \
                next(strip_iter, None) is not None:
            raise ValueError(f'{path}: more strips after row {height}, '
                             f'the mask height')
        taken = 0
        while taken < strip.shape[0]:
            count = min(strip.shape[0] - taken, block.shape[0] - filled)
            block[filled:filled + count] = strip[taken:taken + count]
            taken += count
            filled += count
            if filled == block.shape[0]:
                yield block
                block_start += filled
                block = np.empty((min(rows, height - block_start), width),
                                 np.uint8)
                filled = 0
        row += strip.shape[0]


def _level_tiles(blocks: Iterator[np.ndarray], tile: int,
                 coarser: Optional[_RowSpool]) -> Iterator[np.ndarray]:
    """Cut tile-row blocks into row-major tiles, spooling the next level.

    Args:
        blocks: uint8 (<= ``tile``, width) blocks of one level, in order;
            each starts at an even row (``tile`` is even).
        tile: Tile side, pixels.
        coarser: Receives ``block[::2, ::2]`` of every block, or None.

    Yields:
        np.ndarray: uint8 tiles (<= ``tile``, <= ``tile``); tifffile pads
        the ones on the right and bottom edges.
    """
    for block in blocks:
        if coarser is not None:
            coarser.append(block[::2, ::2])
        for left in range(0, block.shape[1], tile):
            yield block[:, left:left + tile]


def write_pyramidal_mask(path: str,
                         strips: Iterable[np.ndarray],
                         width: int,
                         height: int,
                         mpp: float,
                         tile: int = 512,
                         min_level_side: int = 512,
                         compression: str = 'zlib') -> dict:
    """Write a streamed label mask as a pyramidal tiled uint8 TIFF.

    Args:
        path: Output ``.tif``; written as ``path + '.part'`` and renamed.
        strips: uint8 arrays (h_i, ``width``), h_i >= 1, class ids (255 =
            not tissue), top to bottom, covering rows 0..``height``.
        width: Mask width, level-0 pixels.
        height: Mask height, level-0 pixels.
        mpp: Level-0 pixel size, micrometres per pixel.
        tile: Tile side in pixels, a positive multiple of 16.
        min_level_side: Reduced levels (downsample 2, 4, ...) are written
            while their longer side is at least this many pixels (>= 2).
        compression: tifffile compression of the tiles.

    Returns:
        dict: ``levels`` [(width, height), ...] finest first, ``mpp`` of
        level 0 (micrometres per pixel) and ``tile`` (pixels).

    Raises:
        ValueError: Bad sizes, or strips that are not uint8
            (h_i, ``width``) or do not add up to ``height`` rows.
    """
    if width < 1 or height < 1:
        raise ValueError(f'{path}: mask size {width} x {height}, expected '
                         'positive width and height')
    if tile < 16 or tile % 16:
        raise ValueError(f'{path}: tile {tile}, expected a positive '
                         'multiple of 16 (TIFF tiles)')
    if not mpp > 0:
        raise ValueError(f'{path}: mpp {mpp}, expected > 0 micrometres '
                         'per pixel')
    if min_level_side < 2:
        raise ValueError(f'{path}: min_level_side {min_level_side}, expected '
                         '>= 2 pixels')
    levels = pyramid_level_sizes(width, height, min_level_side)
    folder = os.path.dirname(os.path.abspath(path))
    with atomic_path(path) as part_path:
        with ExitStack() as spool_files, \
                tifffile.TiffWriter(part_path, bigtiff=True) as tif:
            blocks = _row_blocks(strips, width, height, tile, path)
            for index, (level_width, level_height) in enumerate(levels):
                coarser = None
                if index + 1 < len(levels):
                    coarser = _RowSpool(
                        spool_files.enter_context(
                            tempfile.TemporaryFile(dir=folder)))
                pixels_per_cm = UM_PER_CM / (mpp * 2**index)
                tif.write(_level_tiles(blocks, tile, coarser),
                          shape=(level_height, level_width),
                          dtype=np.uint8,
                          tile=(tile, tile),
                          compression=compression,
                          photometric='minisblack',
                          resolution=(pixels_per_cm, pixels_per_cm),
                          resolutionunit='CENTIMETER',
                          subfiletype=0 if index == 0 else 1,
                          buffersize=tile * level_width,
                          metadata=None)
                if coarser is not None:
                    next_width, next_height = levels[index + 1]
                    blocks = _row_blocks(coarser.blocks(next_width),
                                         next_width, next_height, tile,
                                         path)
    return {'levels': levels, 'mpp': mpp, 'tile': tile}
