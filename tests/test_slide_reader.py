"""Slide readers (OpenSlide pyramid, image files, arrays), ResampledSlide."""
import cv2
import numpy as np
import pytest
import tifffile

from protoprompt_mm.apis import slide_reader
from protoprompt_mm.apis.slide_reader import (ArrayReader, ImageReader,
                                              OpenSlideReader, ResampledSlide,
                                              open_slide)
from protoprompt_mm.datasets.synthetic_slide import (synthetic_slide,
                                                     write_pyramidal_tiff)

WIDTH, HEIGHT, MPP = 1200, 960, 0.25


@pytest.fixture(scope='module')
def slide_image():
    """uint8 RGB (960, 1200, 3) level 0 of the test slide."""
    return synthetic_slide(HEIGHT, WIDTH, seed=0)[0]


@pytest.fixture(scope='module')
def pyramid(tmp_path_factory, slide_image):
    """The slide as a 0.25 µm/px pyramidal TIFF with downsamples 1, 2, 4."""
    path = str(tmp_path_factory.mktemp('slide') / 'slide.tif')
    return write_pyramidal_tiff(path, slide_image, MPP, levels=(1, 2, 4))


def stored_level(path, level):
    """The pixels of one pyramid level as written."""
    return tifffile.imread(path, key=level)


def smooth_image(height, width, seed=0):
    """uint8 RGB noise, blurred so resampling filters matter but differ
    little."""
    rng = np.random.default_rng(seed)
    noise = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    return cv2.GaussianBlur(noise, (0, 0), 1.5)


def test_pyramid_metadata_through_openslide(pyramid):
    with open_slide(pyramid) as reader:
        assert isinstance(reader, OpenSlideReader)
        assert reader.dimensions == (WIDTH, HEIGHT)
        assert reader.level_dimensions == [(1200, 960), (600, 480), (300, 240)]
        assert reader.level_downsamples == pytest.approx([1.0, 2.0, 4.0])
        assert reader.mpp == pytest.approx(MPP)


def test_read_region_matches_stored_levels(pyramid, slide_image):
    with open_slide(pyramid) as reader:
        level0 = reader.read_region(200, 100, 0, 300, 200)
        np.testing.assert_array_equal(level0, slide_image[100:300, 200:500])
        # (x, y) in level-0 pixels, the size in level-1 pixels.
        level1 = reader.read_region(200, 100, 1, 128, 64)
        np.testing.assert_array_equal(
            level1,
            stored_level(pyramid, 1)[50:114, 100:228])


@pytest.mark.parametrize('make_reader', ['openslide', 'array'])
def test_outside_the_slide_is_white(pyramid, slide_image, make_reader):
    reader = open_slide(pyramid) if make_reader == 'openslide' \
        else ArrayReader(slide_image)
    with reader:
        corner = reader.read_region(-50, -30, 0, 100, 80)
        assert corner.shape == (80, 100, 3) and corner.dtype == np.uint8
        assert (corner[:30] == 255).all() and (corner[:, :50] == 255).all()
        np.testing.assert_array_equal(corner[30:, 50:], slide_image[:50, :50])
        beyond = reader.read_region(WIDTH + 10, 0, 0, 20, 20)
        assert (beyond == 255).all()


@pytest.mark.parametrize('target_mpp, level, scale, dimensions', [
    (0.25, 0, 1.0, (1200, 960)),
    (0.5, 1, 2.0, (600, 480)),
    (0.6, 1, 2.4, (500, 400)),
    (1.0, 2, 4.0, (300, 240)),
])
def test_resampled_slide_picks_the_nearest_finer_level(pyramid, target_mpp,
                                                       level, scale,
                                                       dimensions):
    with open_slide(pyramid) as reader:
        resampled = ResampledSlide(reader, target_mpp)
        assert resampled.level == level
        assert resampled.scale == pytest.approx(scale)
        assert resampled.level_downsample == pytest.approx(2.0**level)
        assert tuple(resampled.dimensions) == dimensions
        assert resampled.read(10, 20, 70, 50).shape == (50, 70, 3)
        assert resampled.to_level0(10, 20) == pytest.approx(
            (10 * scale, 20 * scale))


@pytest.mark.parametrize('target_mpp, level', [(0.5, 1), (1.0, 2)])
def test_matching_scale_is_an_exact_crop_of_the_level(pyramid, target_mpp,
                                                      level):
    with open_slide(pyramid) as reader:
        box = ResampledSlide(reader, target_mpp).read(30, 40, 100, 60)
    np.testing.assert_array_equal(box,
                                  stored_level(pyramid, level)[40:100, 30:130])


def test_resampled_box_is_close_to_resizing_level0(pyramid, slide_image):
    """0.6 µm/px from level 1 (x1.2) against level 0 resized by 2.4."""
    reference = cv2.resize(slide_image, (500, 400),
                           interpolation=cv2.INTER_AREA)
    with open_slide(pyramid) as reader:
        box = ResampledSlide(reader, 0.6).read(150, 90, 200, 160)
    error = np.abs(box.astype(int) - reference[90:250, 150:350])
    assert error.mean() < 2.0
    assert np.percentile(error, 99) <= 10


@pytest.mark.parametrize(
    'target_mpp, interpolation',
    [
        (0.6, cv2.INTER_AREA),  # shrink by 2.4
        (0.3, cv2.INTER_AREA),  # shrink by 1.2
        (0.2, cv2.INTER_LINEAR),  # enlarge by 1.25
    ])
def test_resampling_filters_are_cv2s_on_the_global_grid(
        target_mpp, interpolation):
    image = smooth_image(120, 240)
    resampled = ResampledSlide(ArrayReader(image, mpp=MPP), target_mpp)
    whole = resampled.read(0, 0, *resampled.dimensions)
    reference = cv2.resize(image,
                           tuple(resampled.dimensions),
                           interpolation=interpolation)
    assert np.abs(whole.astype(int) - reference).max() <= 1
    # A tile at any offset is the crop of the whole resampled image.
    np.testing.assert_array_equal(resampled.read(13, 7, 41, 29), whole[7:36,
                                                                       13:54])


def test_resampled_outside_the_slide_is_white():
    resampled = ResampledSlide(ArrayReader(smooth_image(60, 60), mpp=0.25),
                               0.6)
    width, height = resampled.dimensions
    box = resampled.read(width - 5, -3, 10, 8)
    assert (box[:3] == 255).all() and (box[:, 5:] == 255).all()
    assert (box[3:, :5] != 255).any()


def test_no_mpp_is_a_clear_error():
    with pytest.raises(ValueError,
                       match=r"some\.png: no MPP \(µm per "
                       r"pixel\) in the slide's metadata; pass --mpp"):
        ResampledSlide(ArrayReader(smooth_image(8, 8), name='some.png'), 0.5)


def test_thumbnail_reads_the_smallest_suitable_level(pyramid):
    with open_slide(pyramid) as reader:
        exact = reader.thumbnail(300)
        smaller = reader.thumbnail(150)
        whole = reader.thumbnail(5000)
    level2 = stored_level(pyramid, 2)
    np.testing.assert_array_equal(exact, level2)
    np.testing.assert_array_equal(
        smaller, cv2.resize(level2, (150, 120), interpolation=cv2.INTER_AREA))
    assert whole.shape == (HEIGHT, WIDTH, 3)


def test_thumbnail_reads_a_large_level_in_bands(pyramid, monkeypatch):
    """A few level rows at a time: the same picture (band borders fall on
    thumbnail rows), read without holding the level."""
    with open_slide(pyramid) as reader:
        whole = reader.thumbnail(150)
        monkeypatch.setattr(slide_reader, 'THUMBNAIL_BAND_PIXELS', 300 * 7)
        reads = []
        read_region = reader.read_region

        def counted(*args):
            reads.append(args)
            return read_region(*args)

        monkeypatch.setattr(reader, 'read_region', counted)
        banded = reader.thumbnail(150)
    assert len(reads) > 10 and max(args[-1] for args in reads) <= 7
    assert banded.shape == whole.shape
    assert np.abs(banded.astype(int) - whole).mean() < 1.0


def test_image_reader_png(tmp_path):
    image = smooth_image(40, 50)
    path = str(tmp_path / 'region.png')
    cv2.imwrite(path, cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    reader = open_slide(path)
    assert isinstance(reader, ImageReader) and reader.mpp is None
    assert reader.dimensions == (50, 40)
    np.testing.assert_array_equal(reader.read_region(0, 0, 0, 50, 40), image)
    assert open_slide(path, mpp=0.5).mpp == 0.5


@pytest.mark.parametrize('unit, per_unit', [('CENTIMETER', 1e4),
                                            ('INCH', 25400.0)])
def test_image_reader_plain_tiff_resolution(tmp_path, unit, per_unit):
    image = smooth_image(40, 50)
    path = str(tmp_path / 'region.tif')
    tifffile.imwrite(path,
                     image,
                     photometric='rgb',
                     resolution=(per_unit / 0.5, per_unit / 0.5),
                     resolutionunit=unit)
    reader = open_slide(path)  # stripped: not a slide for OpenSlide
    assert isinstance(reader, ImageReader)
    assert reader.mpp == pytest.approx(0.5)
    np.testing.assert_array_equal(reader.read_region(0, 0, 0, 50, 40), image)


def test_non_square_pixels_are_an_error_unless_overridden(tmp_path):
    path = str(tmp_path / 'region.tif')
    tifffile.imwrite(path,
                     smooth_image(8, 8),
                     photometric='rgb',
                     resolution=(1e4 / 0.5, 1e4 / 0.6),
                     resolutionunit='CENTIMETER')
    with pytest.raises(ValueError,
                       match='region.tif: the pixels are not '
                       'square'):
        open_slide(path)
    assert open_slide(path, mpp=0.55).mpp == 0.55


def test_open_slide_missing_or_unreadable_file(tmp_path):
    missing = str(tmp_path / 'missing.svs')
    with pytest.raises(FileNotFoundError, match='missing.svs'):
        open_slide(missing)
    broken = tmp_path / 'broken.png'
    broken.write_text('not an image')
    with pytest.raises(ValueError,
                       match='broken.png: neither OpenSlide nor '
                       'OpenCV can read it'):
        open_slide(str(broken))
