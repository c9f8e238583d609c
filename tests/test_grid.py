import numpy as np
import pyproj
import pytest
from affine import Affine
from hypothesis import given, settings
from hypothesis import strategies as st
from rasterio.crs import CRS
from rasterio.windows import Window

from geoseg.io.grid import ChipGrid, GeoGrid, blocks, grid_blocks, span_window

from conftest import UTM


def test_chip_grid_counts_and_origins():
    g = ChipGrid.for_scene(1000, 300, chip=256, overlap=32)
    assert (g.stride, g.offset) == (224, 16)
    assert g.origin(0, 0) == (-16, -16)
    assert g.origin(1, 2) == (208, 432)
    # last chip must reach the far edge, one fewer would not
    assert g.origin(0, g.cols - 1)[1] + 256 >= 1000 > g.origin(0, g.cols - 2)[1] + 256
    assert (g.rows, g.cols) == (2, 5)


def test_scene_smaller_than_chip_gets_one_chip():
    g = ChipGrid.for_scene(40, 30, chip=64, overlap=8)
    assert (g.rows, g.cols) == (1, 1)
    assert g.origin(0, 0) == (-4, -4)


def test_bad_overlap_is_refused():
    with pytest.raises(ValueError):
        ChipGrid.for_scene(100, 100, chip=64, overlap=64)


def test_blocks_tile_exactly():
    ws = list(blocks(10, 7, 4))
    assert [(w.col_off, w.row_off, w.width, w.height) for w in ws] == [
        (0, 0, 4, 4), (4, 0, 4, 4), (8, 0, 2, 4), (0, 4, 4, 3), (4, 4, 4, 3), (8, 4, 2, 3)]


def test_geogrid_clip_and_zoom():
    g = GeoGrid(10, 8, Affine(2, 0, 100, 0, -2, 50), None)
    assert g.clip(Window(-3, 5, 20, 20)) == Window(0, 5, 10, 3)
    z = g.zoom(2.0)
    assert (z.width, z.height) == (5, 4) and z.transform == Affine(4, 0, 100, 0, -4, 50)
    assert g.zoom(3.0).shape == (3, 3)  # rounded to whole pixels, same extent
    assert g.zoom(3.0).transform.a == pytest.approx(20 / 3)


def test_pixel_size_is_the_length_of_the_column_vectors():
    """A 90°-rotated grid has a = 0: the pixel size must still be 10 m, not 0."""
    rotated = GeoGrid(4, 4, Affine(0, 10, 500000, 10, 0, 5000000), UTM)
    assert rotated.pixel_size == (10, 10)
    assert rotated.ground_resolution == pytest.approx(10 / 0.9996, rel=1e-5)  # UTM's scale taken out
    tilted = GeoGrid(4, 4, Affine.rotation(30) @ Affine.scale(2, -2), UTM)
    assert tilted.pixel_size == pytest.approx((2, 2))


def test_ground_measures_by_crs():
    """Ground pixel sizes are lengths on the ellipsoid: feet converted, the projection's scale factor (from
    pyproj's own factors) taken out, degrees measured; nothing without a CRS."""
    feet = CRS.from_epsg(2263)  # NAD83 / New York Long Island (ftUS)
    x, y = 990000, 200000  # Manhattan
    g = GeoGrid(4, 4, Affine(10, 0, x - 20, 0, -10, y + 20), feet)
    lon, lat = pyproj.Transformer.from_crs(feet, "EPSG:4269", always_xy=True).transform(x, y)
    k = pyproj.Proj(feet).get_factors(lon, lat).parallel_scale
    assert g.ground_resolution == pytest.approx(10 * 0.3048006096 / k, rel=1e-5)
    geographic = GeoGrid(4, 4, Affine(0.001, 0, 10, 0, -0.001, 50), CRS.from_epsg(4326))
    width = pyproj.Geod(ellps="WGS84").inv(10.002, 49.998, 10.003, 49.998)[2]
    assert geographic.ground_resolution == pytest.approx(width, rel=1e-9)
    assert GeoGrid(4, 4, Affine(2, 0, 0, 0, -2, 0), None).ground_resolution is None


@settings(max_examples=150, deadline=None)
@given(w=st.integers(1, 300), h=st.integers(1, 300), chip=st.integers(4, 96), frac=st.floats(0, 0.49),
       cells=st.integers(1, 6))
def test_grid_blocks_tile_the_scene_and_compute_every_chip_once(w, h, chip, frac, cells):
    overlap = int(chip * frac)
    g = ChipGrid.for_scene(w, h, chip, overlap)
    cover = np.zeros((h, w), int)
    computed = np.zeros((g.rows, g.cols), int)
    for row in grid_blocks(g, cells):
        for b in row:
            win = b.window
            r0, c0 = int(win.row_off), int(win.col_off)
            r1, c1 = r0 + int(win.height), c0 + int(win.width)
            cover[r0:r1, c0:c1] += 1
            computed[b.rows.start:b.rows.stop, b.cols.start:b.cols.stop] += 1
            # a block owns the pixels from its first chip's core to the next block's
            span = span_window(g, b.rows, b.cols)
            assert span.row_off <= max(r0, 0) and span.col_off <= max(c0, 0)
            assert r0 - span.row_off <= overlap and c0 - span.col_off <= overlap
    assert (cover == 1).all()
    assert (computed == 1).all()
    # every scene pixel lies inside at least one chip of the global grid
    last_r, last_c = g.origin(g.rows - 1, g.cols - 1)
    assert last_r + chip >= h and last_c + chip >= w and g.origin(0, 0) <= (0, 0)


def test_a_scene_placed_by_gcps_alone_has_its_ground_size():
    """No geotransform, only ground control points in UTM: the ground pixel size comes from their affine fit
    (0.5 m × 0.5 m here, within UTM's scale factor), so the model's sampling applies to raw products too."""
    from rasterio.control import GroundControlPoint

    gcps = (GroundControlPoint(0, 0, 500000, 5000000), GroundControlPoint(0, 200, 500100, 5000000),
            GroundControlPoint(150, 0, 500000, 4999925), GroundControlPoint(150, 200, 500100, 4999925))
    grid = GeoGrid(200, 150, Affine.identity(), None, gcps, UTM)
    assert grid.ground_pixel_size == pytest.approx((0.5 / 0.9996, 0.5 / 0.9996), rel=1e-4)
    assert GeoGrid(200, 150, Affine.identity(), None).ground_pixel_size is None
