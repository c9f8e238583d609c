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


def wgs84_measures(polygon: shapely.Polygon, crs) -> tuple[float, float]:
    """Area and perimeter of ``polygon`` (in ``crs``) the other way round: densified, taken to EPSG:4326 by
    PROJ itself (prime meridian, angular units and datum handled by PROJ), measured on WGS84. Differences
    of datum and ellipsoid move areas by parts in 10⁵, well inside the 0.05 % asked."""
    to_wgs84 = pyproj.Transformer.from_crs(crs, "EPSG:4326", always_xy=True)
    lon, lat = to_wgs84.transform(*np.asarray(shapely.segmentize(polygon, polygon.length / 400).exterior.xy))
    area, perimeter = pyproj.Geod(ellps="WGS84").polygon_area_perimeter(lon, lat)
    return abs(area), perimeter


def square_in(crs: pyproj.CRS, side_m: float, lon: float | None = None, lat: float | None = None):
    """A square of ``side_m`` ground metres (in grid units) at (``lon``, ``lat``), by default the centre of
    the CRS's area of use, or None where PROJ cannot place it."""
    if lon is None:
        area = crs.area_of_use
        lon, lat = (area.west + area.east) / 2, (area.south + area.north) / 2
        if area.west > area.east:  # across the antimeridian
            lon = (area.west + area.east + 360) / 2
    x, y = pyproj.Transformer.from_crs("EPSG:4326", crs, always_xy=True).transform(lon, lat)
    side = side_m / crs.axis_info[0].unit_conversion_factor
    if not (np.isfinite(x) and np.isfinite(y)):
        return None
    return shapely.box(x - side / 2, y - side / 2, x + side / 2, y + side / 2)


def test_lambert_ii_in_grads_from_paris_is_measured_on_the_ground():
    """NTF (Paris) / Lambert zone II: the base CRS is in grads from the Paris meridian; a 10 km square is
    about 99.9 km², not the 109.7 km² that grads read as degrees give."""
    crs = pyproj.CRS.from_epsg(27572)
    square = shapely.box(600000, 2200000, 610000, 2210000)
    area, perimeter = ground_measures(np.array([square], dtype=object), crs)
    expected_area, expected_perimeter = wgs84_measures(square, crs)
    assert area[0] == pytest.approx(expected_area, rel=5e-4)
    assert perimeter[0] == pytest.approx(expected_perimeter, rel=5e-4)


PROJECTED = [c for c in pyproj.database.query_crs_info(auth_name="EPSG", pj_types="PROJECTED_CRS")
             if not c.deprecated and c.area_of_use is not None]
CHOSEN = ["27572", "27562", "2263", "2229", "3857", "3413", "3031", "32760", "3035", "5514", "2056", "3395",
          "6933", "8857", "32661"]  # grads, ftUS, Web Mercator, polar, antimeridian, LAEA, Krovak, Swiss …
SAMPLED = [PROJECTED[i].code for i in np.random.default_rng(29).choice(len(PROJECTED), 60, replace=False)]


@pytest.mark.parametrize("code", CHOSEN + SAMPLED)
def test_areas_in_any_projected_crs_are_geodesic(code):
    """Property over projected CRSs from pyproj's database (chosen ones for their units, prime meridians and
    projections, and 60 drawn at random): a 2 km square at the centre of the CRS's area of use measures
    within 0.05 % of its geodesic area and perimeter computed through EPSG:4326."""
    crs = pyproj.CRS.from_epsg(int(code))
    square = square_in(crs, 2000.0)
    if square is None or crs.get_geod() is None:
        pytest.skip(f"EPSG:{code} cannot place its area of use's centre")
    expected_area, expected_perimeter = wgs84_measures(square, crs)
    if not (np.isfinite(expected_area) and expected_area > 0):
        pytest.skip(f"PROJ cannot take EPSG:{code} to EPSG:4326 there")
    area, perimeter = ground_measures(np.array([square], dtype=object), crs)
    assert area[0] == pytest.approx(expected_area, rel=5e-4)
    assert perimeter[0] == pytest.approx(expected_perimeter, rel=5e-4)


def test_lonlat_degrees_and_same_crs():
    """geoseg.io.geodesy: grads from Paris come out as degrees east of Greenwich (PROJ's own transform to
    NTF's geographic CRS in degrees, then Paris's 2.33722917° east, as the expectation); the same zone in
    other words is the same CRS, another zone is not."""
    from geoseg.io.geodesy import lonlat_degrees, same_crs

    lon, lat = lonlat_degrees("EPSG:27572")(np.array([600000.0]), np.array([2200000.0]))
    ntf = pyproj.Transformer.from_crs("EPSG:27572", "EPSG:4807", always_xy=True)  # NTF (Paris), grads
    g_lon, g_lat = ntf.transform(600000.0, 2200000.0)
    assert lon[0] == pytest.approx(g_lon * 0.9 + 2.33722917, abs=1e-7)
    assert lat[0] == pytest.approx(g_lat * 0.9, abs=1e-7)
    utm = pyproj.CRS("EPSG:32633")
    assert same_crs(utm, utm.to_wkt("WKT1_GDAL")) and same_crs(utm.to_proj4(), 32633)
    assert not same_crs(utm, "EPSG:32634") and not same_crs(utm, None) and same_crs(None, None)
