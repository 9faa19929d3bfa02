"""Streamed pyramidal label TIFF: OpenSlide / tifffile read-back, errors,
memory flat in the slide height."""
import os
import tracemalloc

import numpy as np
import openslide
import pytest
import tifffile

from protoprompt_mm.apis.mask_tiff_writer import write_pyramidal_mask


def _uneven_strips(labels, heights):
    """Strips of ``labels`` with the given heights, cycled to the end."""
    row = index = 0
    while row < labels.shape[0]:
        height = heights[index % len(heights)]
        yield labels[row:row + height]
        row += height
        index += 1


def _random_labels(height, width, seed=0):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 5, (height, width)).astype(np.uint8)
    labels[:40, :300] = 255  # not tissue
    return labels


def test_pyramid_reads_back_through_openslide_and_tifffile(tmp_path):
    height, width = 701, 1101  # odd: reduced levels round up
    labels = _random_labels(height, width)
    path = str(tmp_path / 'mask.tif')
    info = write_pyramidal_mask(path, _uneven_strips(labels, [1, 7, 300, 45]),
                                width, height, mpp=0.25, tile=256,
                                min_level_side=256)
    expected_levels = [(1101, 701), (551, 351), (276, 176)]
    assert info == {'levels': expected_levels, 'mpp': 0.25, 'tile': 256}
    assert os.listdir(tmp_path) == ['mask.tif']

    slide = openslide.OpenSlide(path)
    assert slide.properties['openslide.vendor'] == 'generic-tiff'
    assert list(slide.level_dimensions) == expected_levels
    assert float(slide.properties['openslide.mpp-x']) == pytest.approx(0.25)
    assert float(slide.properties['openslide.mpp-y']) == pytest.approx(0.25)
    for level, (level_width, level_height) in enumerate(expected_levels):
        rgba = np.asarray(slide.read_region((0, 0), level,
                                            (level_width, level_height)))
        step = 2**level
        expected = labels[::step, ::step]  # nearest, never averaged
        for channel in range(3):
            np.testing.assert_array_equal(rgba[..., channel], expected)
    slide.close()

    np.testing.assert_array_equal(tifffile.imread(path, key=0), labels)
    np.testing.assert_array_equal(tifffile.imread(path, key=1),
                                  labels[::2, ::2])
    with tifffile.TiffFile(path) as tif:
        assert len(tif.pages) == 3
        assert tif.pages[0].is_tiled and tif.pages[0].tilewidth == 256
        assert tif.pages[1].subfiletype == 1


def test_single_level_when_the_mask_is_small(tmp_path):
    labels = _random_labels(100, 300)
    path = str(tmp_path / 'small.tif')
    info = write_pyramidal_mask(path, [labels], 300, 100, mpp=1.0, tile=64,
                                min_level_side=200)
    assert info['levels'] == [(300, 100)]
    np.testing.assert_array_equal(tifffile.imread(path), labels)


@pytest.mark.parametrize('strips, message', [
    ([np.zeros((10, 64), np.uint8),
      np.zeros((10, 63), np.uint8)], 'starting at row 10'),
    ([np.zeros((10, 64), np.int32)], 'starting at row 0 is int32'),
    ([np.zeros((10, 64), np.uint8)] * 2, 'strips end at row 20'),
    ([np.zeros((30, 64), np.uint8),
      np.zeros((20, 64), np.uint8)], 'starting at row 30 has 20 rows'),
    ([np.zeros((40, 64), np.uint8),
      np.zeros((1, 64), np.uint8)], 'more strips after row 40'),
])
def test_bad_strips_raise_and_leave_no_file(tmp_path, strips, message):
    path = tmp_path / 'mask.tif'
    path.write_bytes(b'previous result')
    with pytest.raises(ValueError, match=message):
        write_pyramidal_mask(str(path), iter(strips), 64, 40, mpp=0.5,
                             tile=16, min_level_side=8)
    assert os.listdir(tmp_path) == ['mask.tif']
    assert path.read_bytes() == b'previous result'


def test_bad_sizes_raise(tmp_path):
    path = str(tmp_path / 'mask.tif')
    with pytest.raises(ValueError, match='multiple of 16'):
        write_pyramidal_mask(path, [], 64, 40, mpp=0.5, tile=100)
    with pytest.raises(ValueError, match='mpp'):
        write_pyramidal_mask(path, [], 64, 40, mpp=0.0)
    with pytest.raises(ValueError, match='min_level_side 1'):
        write_pyramidal_mask(path, [], 64, 40, mpp=0.5, min_level_side=1)
    with pytest.raises(ValueError, match='0 x 40'):
        write_pyramidal_mask(path, [], 0, 40, mpp=0.5)


def _generated_strips(width, height, strip_height=96):
    """Label stripes made on the fly, never the whole mask."""
    columns = np.arange(width)[None] // 53
    for top in range(0, height, strip_height):
        rows = np.arange(top, min(height, top + strip_height))[:, None]
        yield ((rows // 37 + columns) % 6).astype(np.uint8)


def _peak_bytes(path, width, height):
    tracemalloc.start()
    try:
        write_pyramidal_mask(path, _generated_strips(width, height), width,
                             height, mpp=1.0, tile=256, min_level_side=256)
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_peak_memory_is_flat_in_the_height(tmp_path):
    width = 1024
    short_peak = _peak_bytes(str(tmp_path / 'short.tif'), width, 4096)
    tall_peak = _peak_bytes(str(tmp_path / 'tall.tif'), width, 8192)
    assert tall_peak < short_peak + 128 * 1024
    assert tall_peak < width * 8192 / 2  # far below the mask itself
    assert sorted(os.listdir(tmp_path)) == ['short.tif', 'tall.tif']
    tall = tifffile.imread(str(tmp_path / 'tall.tif'), key=0)
    np.testing.assert_array_equal(
        tall, np.concatenate(list(_generated_strips(width, 8192))))
