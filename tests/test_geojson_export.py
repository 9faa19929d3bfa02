"""Label-map polygons (pixel edges, holes, scaling) and QuPath GeoJSON."""
import json
import os

import numpy as np
import pytest
import shapely
from shapely.geometry import MultiPolygon, box, shape

from protoprompt_mm.apis.geojson_export import (label_polygons,
                                                qupath_feature_collection,
                                                write_geojson)

HEIGHT, WIDTH, SCALE = 30, 40, 4.0
CLASS_NAMES = ['TUM', 'STR', 'LYM']
PALETTE = np.array([[200, 0, 0], [0, 150, 0], [0, 0, 255]], np.uint8)


def _label_map():
    """255 glass; class 1: a 10x10 square with a 4x4 hole and a 6x5 blob;
    class 0: a 38x12 band touching the right and bottom borders."""
    labels = np.full((HEIGHT, WIDTH), 255, np.uint8)
    labels[2:12, 2:12] = 1
    labels[5:9, 5:9] = 255
    labels[3:8, 20:26] = 1
    labels[18:30, 2:40] = 0
    return labels


def _rings(geometry):
    for polygon in geometry['coordinates']:
        yield from polygon


def test_polygons_holes_areas_and_bounds():
    labels = _label_map()
    polygons = label_polygons(labels, [0, 1, 2], scale=SCALE)
    assert set(polygons) == {0, 1, 2}
    assert polygons[2].is_empty
    squares = sorted(polygons[1].geoms, key=lambda p: -p.area)
    assert len(squares) == 2 and len(polygons[0].geoms) == 1
    assert [len(p.interiors) for p in squares] == [1, 0]
    pixel_area = SCALE**2
    assert squares[0].area == pytest.approx((100 - 16) * pixel_area)
    assert shapely.Polygon(squares[0].interiors[0]).area == pytest.approx(
        16 * pixel_area)
    assert squares[1].area == pytest.approx(30 * pixel_area)
    assert polygons[0].area == pytest.approx(38 * 12 * pixel_area)
    assert polygons[0].bounds == pytest.approx(
        (2 * SCALE, 18 * SCALE, WIDTH * SCALE, HEIGHT * SCALE))
    tissue = shapely.union_all([polygons[0], polygons[1]])
    assert tissue.area == pytest.approx((labels != 255).sum() * pixel_area)
    for multipolygon in polygons.values():
        assert multipolygon.is_valid


def test_pixel_edges_exact_on_random_masks():
    rng = np.random.default_rng(0)
    for _ in range(20):
        labels = rng.integers(0, 2, (9, 11)).astype(np.uint8)
        traced = label_polygons(labels, [1], simplify_tolerance=0)[1]
        pixels = shapely.union_all([
            box(x, y, x + 1, y + 1) for y, x in zip(*np.nonzero(labels))])
        assert traced.is_valid
        assert traced.symmetric_difference(pixels).area == pytest.approx(0)


def test_offset_simplify_and_min_area():
    labels = np.zeros((41, 41), np.uint8)
    yy, xx = np.mgrid[:41, :41]
    labels[(yy - 20)**2 + (xx - 20)**2 <= 18**2] = 1
    labels[0, 0] = 1  # a 1-pixel speck
    exact = label_polygons(labels, [1], offset=(100.0, 50.0),
                           simplify_tolerance=0)[1]
    simple = label_polygons(labels, [1], offset=(100.0, 50.0),
                            simplify_tolerance=1.5, min_area=2.0)[1]
    assert exact.bounds == pytest.approx((100, 50, 139, 89))
    assert len(exact.geoms) == 2 and len(simple.geoms) == 1
    disk = max(exact.geoms, key=lambda p: p.area)
    assert shapely.get_num_coordinates(simple) < \
        shapely.get_num_coordinates(disk) / 2
    assert abs(simple.area - disk.area) < 1.5 * disk.length
    assert simple.is_valid


def test_not_tissue_class_refused():
    with pytest.raises(ValueError, match='255'):
        label_polygons(_label_map(), [0, 255])
    with pytest.raises(ValueError, match=r'\(H, W\)'):
        label_polygons(np.zeros((2, 2, 3), np.uint8), [0])


def test_qupath_collection_and_json_round_trip(tmp_path):
    polygons = label_polygons(_label_map(), [0, 1, 2], scale=SCALE)
    collection = qupath_feature_collection(polygons, CLASS_NAMES, PALETTE)
    assert collection['type'] == 'FeatureCollection'
    features = collection['features']
    assert len(features) == 2  # class 2 is absent
    for feature, class_id in zip(features, [0, 1]):
        properties = feature['properties']
        assert properties['objectType'] == 'annotation'
        assert properties['classification'] == {
            'name': CLASS_NAMES[class_id],
            'color': PALETTE[class_id].tolist()}
        assert all(type(c) is int
                   for c in properties['classification']['color'])
        geometry = feature['geometry']
        assert geometry['type'] == 'MultiPolygon'
        for ring in _rings(geometry):
            assert tuple(ring[0]) == tuple(ring[-1])
            for x, y in ring:
                assert 0 <= x <= WIDTH * SCALE and 0 <= y <= HEIGHT * SCALE

    path = str(tmp_path / 'slide.geojson')
    write_geojson(path, collection)
    assert os.listdir(tmp_path) == ['slide.geojson']
    with open(path) as file:
        loaded = json.load(file)
    assert loaded == json.loads(json.dumps(collection))
    for feature, class_id in zip(loaded['features'], [0, 1]):
        read_back = shape(feature['geometry'])
        assert isinstance(read_back, MultiPolygon)
        assert read_back.equals(polygons[class_id])
