"""Class polygons of a label map, exported as QuPath GeoJSON annotations.

Polygons follow pixel edges exactly: each class mask is enlarged 2x
(nearest) so that every pixel is a 2 x 2 block, ``cv2.findContours``
traces the boundary sub-pixels, and sub-pixel index j maps to the pixel
edge ``(j + 1) // 2`` (the left/top sub-pixel of a pixel to its left/top
edge, the right/bottom one to its right/bottom edge). Diagonal steps of the
trace, which only occur between blocks meeting at a corner, collapse to
that corner, so a full h x w mask becomes the rectangle [0, w] x [0, h].
"""
import json
from typing import Dict, Sequence, Tuple

import cv2
import numpy as np
import shapely
from shapely.geometry import MultiPolygon, Polygon, mapping

from protoprompt_mm.utils.atomic_write import atomic_path

NOT_TISSUE = 255
POLYGON_TYPE_ID = 3  # shapely.get_type_id of a Polygon


def _polygons_in(geometries: np.ndarray) -> np.ndarray:
    """The non-empty polygons in an array of geometries (nested parts too;
    lines and points are dropped)."""
    parts = shapely.get_parts(shapely.get_parts(geometries))
    keep = (shapely.get_type_id(parts) == POLYGON_TYPE_ID) & \
        ~shapely.is_empty(parts)
    return parts[keep]


def _mask_polygons(mask: np.ndarray) -> np.ndarray:
    """Pixel-edge polygons, holes kept, of a binary mask.

    Args:
        mask: uint8 (H, W), non-zero = inside.

    Returns:
        np.ndarray: Valid Polygons in pixel units ([0, W] x [0, H]); they
        neither overlap nor touch (each is one 8-connected component).
    """
    enlarged = mask.repeat(2, axis=0).repeat(2, axis=1)
    contours, hierarchy = cv2.findContours(enlarged, cv2.RETR_CCOMP,
                                           cv2.CHAIN_APPROX_SIMPLE)
    if hierarchy is None:
        return np.empty(0, dtype=object)
    next_index, first_child, parent = 0, 2, 3
    links = hierarchy[0]
    polygons = []
    for index, contour in enumerate(contours):
        if links[index][parent] != -1:
            continue
        holes = []
        child = links[index][first_child]
        while child != -1:
            holes.append((contours[child][:, 0, :] + 1) // 2)
            child = links[child][next_index]
        polygons.append(Polygon((contour[:, 0, :] + 1) // 2, holes))
    # A component pinched at a corner traces as a self-touching ring.
    return _polygons_in(shapely.make_valid(np.array(polygons, dtype=object)))


def label_polygons(labels: np.ndarray,
                   class_ids: Sequence[int],
                   scale: float = 1.0,
                   offset: Tuple[float, float] = (0.0, 0.0),
                   simplify_tolerance: float = 1.0,
                   min_area: float = 0.0) -> Dict[int, MultiPolygon]:
    """Polygons of the pixels of each class, in target coordinates.

    Args:
        labels: Label map (H, W), class ids; 255 = not tissue. Typically a
            low-resolution map of a slide (bounded size; the 2x enlarged
            class mask takes 4 x H x W bytes).
        class_ids: Classes to trace; 255 is refused.
        scale: Target units per label pixel, e.g. level-0 pixels per label
            pixel: x' = x * scale + offset[0], y' = y * scale + offset[1]
            with x, y on pixel edges.
        offset: (x, y) of the label map's top-left corner, target units.
        simplify_tolerance: Topology-preserving simplification tolerance,
            target units; 0 keeps every vertex.
        min_area: Polygons smaller than this (target units squared) are
            dropped.

    Returns:
        Dict[int, MultiPolygon]: Valid multipolygon per class id (empty
        where the class is absent).

    Raises:
        ValueError: ``labels`` not 2-D, or 255 in ``class_ids``.
    """
    if labels.ndim != 2:
        raise ValueError(f'label_polygons: labels of shape {labels.shape}, '
                         'expected (H, W)')
    if NOT_TISSUE in class_ids:
        raise ValueError(f'label_polygons: class_ids {list(class_ids)} '
                         f'include {NOT_TISSUE}, which marks not-tissue')
    polygons = {}
    for class_id in class_ids:
        parts = shapely.transform(
            _mask_polygons((labels == class_id).astype(np.uint8)),
            lambda xy: xy * scale + np.asarray(offset, dtype=float))
        if simplify_tolerance > 0:
            # Simplified together, so that rings cannot cross each other.
            simplified = MultiPolygon(list(parts)).simplify(
                simplify_tolerance, preserve_topology=True)
            parts = _polygons_in(np.array([shapely.make_valid(simplified)]))
        polygons[class_id] = MultiPolygon(
            list(parts[shapely.area(parts) >= min_area]))
    return polygons


def qupath_feature_collection(polygons: Dict[int, MultiPolygon],
                              class_names: Sequence[str],
                              palette: Sequence[Sequence[int]]) -> dict:
    """GeoJSON FeatureCollection of class annotations, as QuPath imports.

    Args:
        polygons: Multipolygon per class id (``label_polygons``).
        class_names: Name per class id.
        palette: RGB colour per class id, 0..255.

    Returns:
        dict: FeatureCollection with one MultiPolygon Feature per class that
        has polygons; properties ``objectType`` 'annotation',
        ``classification`` {name, color [r, g, b]}, ``isLocked`` False.
    """
    features = []
    for class_id, multipolygon in sorted(polygons.items()):
        if multipolygon.is_empty:
            continue
        features.append({
            'type': 'Feature',
            'geometry': mapping(multipolygon),
            'properties': {
                'objectType': 'annotation',
                'classification': {
                    'name': class_names[class_id],
                    'color': [int(c) for c in palette[class_id]],
                },
                'isLocked': False,
            },
        })
    return {'type': 'FeatureCollection', 'features': features}


def write_geojson(path: str, collection: dict) -> None:
    """Write a GeoJSON dict to ``path`` (via ``path + '.part'``, renamed).

    Args:
        path: Output ``.geojson``.
        collection: JSON-serialisable GeoJSON object.
    """
    with atomic_path(path) as part_path:
        with open(part_path, 'w') as file:
            json.dump(collection, file)
