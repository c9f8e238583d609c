"""Reading scenes: one-sentence errors, band checks, padded windowed reads."""

import numpy as np
import pytest
from rasterio.windows import Window

from geoseg.errors import RasterError
from geoseg.io.raster import check_bands, open_raster, read_boundless, read_padded

from conftest import write_raster


def test_open_raster_errors_name_the_file(tmp_path):
    with pytest.raises(RasterError, match="nope.tif does not exist"):
        open_raster(tmp_path / "nope.tif")
    with pytest.raises(RasterError, match="is a directory, not a raster file"):
        open_raster(tmp_path)
    (tmp_path / "notes.tif").write_text("not a raster")
    with pytest.raises(RasterError, match="notes.tif is not a readable raster"):
        open_raster(tmp_path / "notes.tif")


def test_check_bands_names_the_missing_bands(tmp_path):
    path = write_raster(tmp_path / "g.tif", np.ones((2, 4, 4), np.uint8))
    with open_raster(path) as src:
        check_bands(src, path, [2, 1])
        with pytest.raises(RasterError, match=r"has 2 band\(s\) but band\(s\) \[3\] are needed"):
            check_bands(src, path, [1, 2, 3])


def test_padded_reads_reflect_the_scene_and_mark_outside_as_invalid(tmp_path):
    data = np.arange(1, 13, dtype=np.uint8).reshape(1, 3, 4)
    data[0, 0, 0] = 0  # nodata
    path = write_raster(tmp_path / "s.tif", data, nodata=0)
    with open_raster(path) as src:
        values, valid, content = read_padded(src, Window(-2, -1, 7, 5), [1])
    assert values.dtype == np.float32 and values.shape == (1, 5, 7)
    inner = values[0, 1:4, 2:6]
    assert (inner == data[0]).all()
    assert values[0, 0, 2:6].tolist() == data[0, 1].tolist()      # the row above reflects row 1
    assert values[0, 1, :2].tolist() == [data[0, 0, 2], data[0, 0, 1]]  # columns left reflect columns 2, 1
    expected_valid = np.zeros((5, 7), bool)
    expected_valid[1:4, 2:6] = data[0] != 0
    assert (valid == expected_valid).all()
    # what each position holds: the validity of the pixel reflected there
    assert (content == np.pad(data[0] != 0, ((1, 1), (2, 1)), mode="reflect")).all()
    assert not content[1, 2] and content[0, 2] and content[1, 0]


@pytest.mark.parametrize("dtype", ["uint16", "float32"])
@pytest.mark.parametrize("shape", [(9, 13), (1, 6), (2, 1), (40, 33)])
def test_padded_reads_are_numpy_reflect_padding_for_any_window(tmp_path, dtype, shape):
    """Windows across every edge and corner, larger than the scene, and reflected many times over a scene a
    pixel or two across: values and validity as ``numpy.pad(mode="reflect")`` of the whole scene gives them
    (the rows and columns copied run by run must be the gather's), NaN invalid in a float scene."""
    rng = np.random.default_rng(3)
    h, w = shape
    data = rng.integers(1, 60000, (2, h, w)).astype(dtype)
    if dtype == "float32":
        data[1, h // 2, w // 2] = np.nan
    path = write_raster(tmp_path / "s.tif", data)
    pad = 3 * max(h, w) + 5
    padded = np.pad(data, ((0, 0), (pad, pad), (pad, pad)), mode="reflect")
    finite = np.isfinite(data).all(axis=0)
    windows = [Window(-2, -1, w + 4, h + 3), Window(-pad, -pad, w + 2 * pad, h + 2 * pad),
               Window(w - 1, h - 1, 2 * w + 3, h + 7), Window(-3 * w, -2 * h, 3 * w + 1, 2 * h + 1)]
    with open_raster(path) as src:
        for window in windows:
            c0, r0, ww, wh = int(window.col_off), int(window.row_off), int(window.width), int(window.height)
            values, valid, content = read_padded(src, window, [1, 2])
            expected = padded[:, pad + r0:pad + r0 + wh, pad + c0:pad + c0 + ww]
            np.testing.assert_array_equal(values, expected.astype(np.float32), err_msg=str(window))
            rows = np.arange(r0, r0 + wh)
            cols = np.arange(c0, c0 + ww)
            inside = ((rows >= 0) & (rows < h))[:, None] & ((cols >= 0) & (cols < w))[None]
            assert np.array_equal(content, np.isfinite(values).all(axis=0)), window
            assert np.array_equal(valid, content & inside), window
    assert dtype == "uint16" or not finite.all()


def test_a_window_wholly_outside_is_empty_and_invalid(tmp_path):
    path = write_raster(tmp_path / "s.tif", np.ones((3, 4, 4), np.uint8))
    with open_raster(path) as src:
        values, valid, content = read_padded(src, Window(10, 10, 3, 2), [1, 2, 3])
    assert values.shape == (3, 2, 3) and not valid.any() and not content.any()


@pytest.mark.parametrize("window", [Window(0, 0, 16, 16), Window(20, 10, 16, 16), Window(40, 30, 16, 16),
                                    Window(-5, 3, 16, 16), Window(50, 40, 16, 16), Window(100, 0, 8, 8),
                                    Window(2.5, 1, 16, 16), Window(0, 0, 32, 32), Window(-20, -30, 16, 16),
                                    Window(-4, -4, 64, 60)])
@pytest.mark.parametrize("out", [16, 8])
def test_windows_of_whole_pixels_read_directly_as_boundless_reads_do(tmp_path, window, out):
    """The direct read of a window of whole pixels (chips' fast path: the part inside the raster, the rest
    filled) gives what rasterio's boundless read gives, pixels and masks alike, inside, across the edges and
    outside; fractional or resampled windows go the boundless way."""
    rng = np.random.default_rng(1)
    data = rng.integers(1, 250, (3, 48, 56), dtype=np.uint8)
    data[:, 5:9, 30:40] = 0
    path = write_raster(tmp_path / "s.tif", data, nodata=0, tiled=True, blockxsize=16, blockysize=16)
    shape = (3, out, out)
    with open_raster(path) as src:
        expected = src.read([1, 2, 3], window=window, out_shape=shape, boundless=True, fill_value=7)
        expected_mask = src.dataset_mask(window=window, out_shape=shape[1:], boundless=True)
        got = read_boundless(src, [1, 2, 3], window, shape, fill_value=7)
        got_mask = read_boundless(src, None, window, shape[1:], mask=True)
    assert np.array_equal(got, expected) and np.array_equal(got_mask, expected_mask)
    if window == Window(20, 10, 16, 16) and out == 16:
        assert np.array_equal(got, data[:, 10:26, 20:36])  # the window's own pixels


@pytest.mark.parametrize("indexes", [None, 2, [3, 1]])
def test_direct_reads_across_the_edge_keep_an_alpha_mask_and_any_band_selection(tmp_path, indexes):
    rng = np.random.default_rng(2)
    data = rng.integers(0, 250, (4, 40, 40), dtype=np.uint8)
    data[3] = 255
    data[3, :10, :10] = 0  # transparent corner
    path = write_raster(tmp_path / "a.tif", data, photometric="RGB", alpha="YES")
    with open_raster(path) as src:
        for window in (Window(-6, -6, 24, 24), Window(30, 25, 24, 24)):
            shape = (24, 24) if isinstance(indexes, int) else (len(indexes or range(4)), 24, 24)
            got = read_boundless(src, indexes, window, shape, fill_value=9)
            expected = src.read(indexes, window=window, out_shape=shape, boundless=True, fill_value=9)
            assert got.dtype == expected.dtype and np.array_equal(got, expected)
            mask = read_boundless(src, None, window, (24, 24), mask=True)
            assert np.array_equal(mask, src.dataset_mask(window=window, boundless=True))
