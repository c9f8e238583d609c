"""Ground measures against closed-form geodesic figures: geographic, Web Mercator at high latitude, UTM."""

import math

import numpy as np
import pyproj
import pytest
import shapely
from hypothesis import given, settings
from hypothesis import strategies as st

from geoseg.outputs.measures import ground_measures, pixel_ground_area

from conftest import WGS84_E2, cell_area

GEOD = pyproj.Geod(ellps="WGS84")
A, E2 = 6378137.0, WGS84_E2


def cell_perimeter(lon0, lat0, lon1, lat1):
    """Two meridian arcs (geodesics) and two parallel arcs."""
    def parallel(phi):
        s = math.sin(math.radians(phi))
        return abs(math.radians(lon1 - lon0)) * A * math.cos(math.radians(phi)) / math.sqrt(1 - E2 * s * s)
    meridian = GEOD.inv(lon0, lat0, lon0, lat1)[2]
    return 2 * meridian + parallel(lat0) + parallel(lat1)


def test_one_degree_cell_at_the_equator():
    area, perimeter = ground_measures(np.array([shapely.box(0, 0, 1, 1)]), "EPSG:4326")
    assert area[0] == pytest.approx(cell_area(0, 0, 1, 1), rel=1e-7)  # 12,308.46 km²
    assert area[0] == pytest.approx(12_308.46e6, rel=1e-6)
    assert perimeter[0] == pytest.approx(cell_perimeter(0, 0, 1, 1), rel=1e-6)


def test_web_mercator_at_70_degrees_is_measured_on_the_ground():
    """EPSG:3857 x/y map to longitude/latitude one to one: a rectangle in it is a lon/lat cell."""
    to_merc = pyproj.Transformer.from_crs(4326, 3857, always_xy=True)
    x0, y0 = to_merc.transform(20.0, 70.0)
    x1, y1 = to_merc.transform(20.1, 70.05)
    box = shapely.box(x0, y0, x1, y1)
    area, perimeter = ground_measures(np.array([box]), "EPSG:3857")
    assert area[0] == pytest.approx(cell_area(20, 70, 20.1, 70.05), rel=1e-6)
    assert perimeter[0] == pytest.approx(cell_perimeter(20, 70, 20.1, 70.05), rel=1e-6)
    assert box.area / area[0] > 8  # the planar figure is 8.5× too large at 70°


def test_utm_near_the_central_meridian_has_the_scale_factor():
    square = shapely.box(500000, 0, 501000, 1000)  # 1 km on the equator at the central meridian of 33N
    area, perimeter = ground_measures(np.array([square]), "EPSG:32633")
    assert area[0] == pytest.approx(1e6 / 0.9996**2, rel=2e-6)
    assert perimeter[0] == pytest.approx(4000 / 0.9996, rel=2e-6)


def test_holes_orientation_and_parts():
    outer = shapely.box(0, 0, 1, 1)
    inner = shapely.box(0.25, 0.25, 0.75, 0.75).exterior.coords[::-1]
    holed = shapely.Polygon(outer.exterior.coords, [inner])
    reversed_holed = shapely.Polygon(outer.exterior.coords[::-1], [holed.interiors[0].coords[::-1]])
    two = shapely.MultiPolygon([shapely.box(0, 0, 0.5, 1), shapely.box(0.5, 0, 1, 1)])
    geoms = np.array([outer, holed, reversed_holed, two], dtype=object)
    area, perimeter = ground_measures(geoms, "EPSG:4326")
    hole = cell_area(0.25, 0.25, 0.75, 0.75)
    assert area[1] == pytest.approx(area[0] - hole, rel=1e-9) and area[2] == pytest.approx(area[1], rel=1e-12)
    assert perimeter[1] == pytest.approx(perimeter[0] + cell_perimeter(0.25, 0.25, 0.75, 0.75), rel=1e-9)
    assert area[3] == pytest.approx(area[0], rel=1e-9)


def test_without_a_crs_measures_are_planar():
    area, perimeter = ground_measures(np.array([shapely.box(0, 0, 3, 2)]), None)
    assert (area[0], perimeter[0]) == (6.0, 10.0)


def test_a_pixel_of_a_scene_in_web_mercator():
    from affine import Affine
    t = Affine(10, 0, 2_226_389.8, 0, -10, 11_068_715.7)  # ~20°E 70°N
    to_lonlat = pyproj.Transformer.from_crs(3857, 4326, always_xy=True)
    lon0, lat0 = to_lonlat.transform(2_226_389.8, 11_068_705.7)
    lon1, lat1 = to_lonlat.transform(2_226_399.8, 11_068_715.7)
    expected = cell_area(lon0, lat0, lon1, lat1)
    assert pixel_ground_area(t, "EPSG:3857", 0, 0) == pytest.approx(expected, rel=1e-6)
    assert pixel_ground_area(t, "EPSG:3857", 0, 0) < 100 / 8  # not the planar 100 m²


@settings(max_examples=40, deadline=None)
@given(lon=st.floats(-179, 177), lat=st.floats(-85, 83), w=st.floats(1e-3, 2), h=st.floats(1e-3, 2))
def test_random_geographic_cells_match_the_closed_form(lon, lat, w, h):
    area, perimeter = ground_measures(np.array([shapely.box(lon, lat, lon + w, lat + h)]), "EPSG:4326")
    assert area[0] == pytest.approx(cell_area(lon, lat, lon + w, lat + h), rel=1e-5)
    assert perimeter[0] == pytest.approx(cell_perimeter(lon, lat, lon + w, lat + h), rel=1e-5)


@settings(max_examples=30, deadline=None)
@given(lon=st.floats(-170, 170), lat=st.floats(-80, 80), w=st.floats(1e-3, 1), h=st.floats(1e-3, 1))
def test_random_web_mercator_rectangles_match_the_closed_form(lon, lat, w, h):
    to_merc = pyproj.Transformer.from_crs(4326, 3857, always_xy=True)
    x0, y0 = to_merc.transform(lon, lat)
    x1, y1 = to_merc.transform(lon + w, lat + h)
    area, _ = ground_measures(np.array([shapely.box(x0, y0, x1, y1)]), "EPSG:3857")
    assert area[0] == pytest.approx(cell_area(lon, lat, lon + w, lat + h), rel=1e-5)
