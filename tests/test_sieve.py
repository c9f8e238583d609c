"""The sieve: block by block, exactly the whole-raster result; no small region with a neighbour survives."""

import numpy as np
import rasterio
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import ndimage

from geoseg.outputs.sieve import sieve_raster

from conftest import write_raster

FOUR = np.array([[0, 1, 0], [1, 1, 1], [0, 1, 0]])


def _regions(a, nodata=255):
    """(size, has a neighbour) of every 4-connected region of one class."""
    out = []
    for v in np.unique(a):
        if v == nodata:
            continue
        lab, n = ndimage.label(a == v, structure=FOUR)
        for k in range(1, n + 1):
            region = lab == k
            ring = ndimage.binary_dilation(region, structure=FOUR) & ~region
            out.append((int(region.sum()), bool(((a != v) & (a != nodata) & ring).any())))
    return out


def _sieve(tmp_path, a, min_pixels, block, name):
    src = write_raster(tmp_path / f"{name}_in.tif", a, nodata=255)
    sieve_raster(src, tmp_path / f"{name}.tif", min_pixels, block=block)
    with rasterio.open(tmp_path / f"{name}.tif") as ds:
        return ds.read(1)


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 10_000), block=st.integers(4, 40), min_pixels=st.integers(2, 12),
       classes=st.integers(2, 5))
def test_block_wise_equals_whole_raster_and_leaves_no_small_region(tmp_path_factory, seed, block, min_pixels,
                                                                      classes):
    tmp_path = tmp_path_factory.mktemp("sieve")
    rng = np.random.default_rng(seed)
    a = rng.integers(0, classes, (60, 60)).astype(np.uint8)
    a = np.repeat(np.repeat(a[::2, ::2], 2, 0), 2, 1)[:60, :60] if seed % 2 else a  # blobs or noise
    a[rng.random((60, 60)) < 0.03] = 255  # nodata specks
    whole = _sieve(tmp_path, a, min_pixels, 1000, "whole")
    blocked = _sieve(tmp_path, a, min_pixels, block, "blocked")
    assert (blocked == whole).all()
    assert ((whole == 255) == (a == 255)).all()  # nodata is never filled, nothing becomes nodata
    assert all(size >= min_pixels or not neighbour for size, neighbour in _regions(whole))


def test_a_small_region_goes_to_its_largest_neighbour(tmp_path):
    a = np.array([[1, 1, 1, 2, 2],
                  [1, 1, 3, 2, 2],
                  [1, 1, 1, 2, 2]], np.uint8)  # the 3 touches 1 (7 px) and 2 (6 px)
    assert (_sieve(tmp_path, a, 2, 2, "s") == np.where(a == 3, 1, a)).all()
