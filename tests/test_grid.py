import numpy as np
import pytest
from hypothesis import given, settings, strategies as st
from rasterio.windows import Window

from geoseg.grid import ChipGrid, GeoGrid, blocks, span_window


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
    assert g.chip_window(0, 0) == Window(-4, -4, 64, 64)


def test_bad_overlap_is_refused():
    with pytest.raises(ValueError):
        ChipGrid.for_scene(100, 100, chip=64, overlap=64)


def test_blocks_tile_exactly():
    ws = list(blocks(10, 7, 4))
    assert [(w.col_off, w.row_off, w.width, w.height) for w in ws] == [
        (0, 0, 4, 4), (4, 0, 4, 4), (8, 0, 2, 4), (0, 4, 4, 3), (4, 4, 4, 3), (8, 4, 2, 3)]


def test_geogrid_clip_and_transform():
    from affine import Affine
    g = GeoGrid(10, 8, Affine(2, 0, 100, 0, -2, 50), None)
    assert g.clip(Window(-3, 5, 20, 20)) == Window(0, 5, 10, 3)
    assert g.window_transform(Window(3, 2, 1, 1)) == Affine(2, 0, 106, 0, -2, 46)


@settings(max_examples=150, deadline=None)
@given(w=st.integers(1, 300), h=st.integers(1, 300), chip=st.integers(4, 96), frac=st.floats(0, 0.49),
       block=st.integers(1, 200))
def test_chips_covering_matches_brute_force(w, h, chip, frac, block):
    overlap = int(chip * frac)
    g = ChipGrid.for_scene(w, h, chip, overlap)
    cover = np.zeros((h, w), int)
    for win in blocks(w, h, block):
        cover[int(win.row_off):int(win.row_off + win.height), int(win.col_off):int(win.col_off + win.width)] += 1
        rows, cols = g.chips_covering(win)
        r0, c0 = int(win.row_off), int(win.col_off)
        r1, c1 = r0 + int(win.height), c0 + int(win.width)
        brute_r = [i for i in range(g.rows) if g.origin(i, 0)[0] < r1 and g.origin(i, 0)[0] + chip > r0]
        brute_c = [j for j in range(g.cols) if g.origin(0, j)[1] < c1 and g.origin(0, j)[1] + chip > c0]
        assert list(rows) == brute_r and list(cols) == brute_c
        span = span_window(g, rows, cols)
        assert span.row_off <= r0 and span.col_off <= c0
        assert span.row_off + span.height >= r1 and span.col_off + span.width >= c1
        # the halo never reaches further than one chip beyond the block
        assert r0 - span.row_off < chip and span.row_off + span.height - r1 < chip + g.stride
    assert (cover == 1).all()
    # every scene pixel lies inside at least one chip of the global grid
    last_r, last_c = g.origin(g.rows - 1, g.cols - 1)
    assert last_r + chip >= h and last_c + chip >= w and g.origin(0, 0) <= (0, 0)
