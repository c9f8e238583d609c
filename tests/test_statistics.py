"""Band statistics, label counts per cell and median-frequency weights."""

import numpy as np
import pytest
import rasterio

from geoseg.data.scenes import SceneInfo
from geoseg.data.statistics import (
    BandMoments,
    band_statistics,
    class_cell_counts,
    median_frequency_weights,
    sample_band_statistics,
)
from geoseg.errors import RasterError
from geoseg.io.classes import DEEPGLOBE
from geoseg.io.grid import GeoGrid
from geoseg.io.manifest import SceneRecord

from conftest import write_raster


def test_median_frequency_weights_exact(tmp_path):
    """Scene A: 48 px urban, 16 agriculture; scene B: 32 urban, 32 rangeland (8×8 each, one 8 px cell)."""
    a = np.zeros((8, 8), np.uint8)
    a[:2] = 1
    b = np.zeros((8, 8), np.uint8)
    b[4:] = 2
    scenes = []
    for name, lab in (("a", a), ("b", b)):
        img = write_raster(tmp_path / f"{name}.tif", np.full((3, 8, 8), 100, np.uint8))
        lbl = write_raster(tmp_path / f"{name}_l.tif", lab)
        with rasterio.open(img) as src:
            scenes.append(SceneInfo(SceneRecord(img, lbl, "train"), GeoGrid.from_dataset(src), (1.0, 1.0)))
    counts = class_cell_counts(scenes, DEEPGLOBE, 8, ignored=[6], cache_dir=tmp_path / "cache")
    assert [c.tolist() for c in counts] == [[[[48, 16, 0, 0, 0, 0, 0]]], [[[32, 0, 32, 0, 0, 0, 0]]]]
    # freq: urban 80/128 = 0.625, agriculture 16/64 = 0.25, rangeland 32/64 = 0.5; median 0.5
    w = median_frequency_weights(counts, ignored=[6])
    assert w.tolist() == [0.8, 2.0, 1.0, 0.0, 0.0, 0.0, 0.0]
    # cached: a second call reads the cache file instead of the labels
    assert len(list((tmp_path / "cache").glob("label-stats-*.npz"))) == 1
    (tmp_path / "a_l.tif").unlink()
    (tmp_path / "a_l.tif").write_bytes(b"")  # a changed label file gets a new cache key
    with pytest.raises(RasterError, match="a_l.tif is not a readable raster"):
        class_cell_counts(scenes, DEEPGLOBE, 8, ignored=[6], cache_dir=tmp_path / "cache")


def test_band_statistics_leave_nodata_out(tmp_path):
    data = np.zeros((2, 40, 40), np.uint16)
    data[0, :, :20], data[0, :, 20:] = 100, 300
    data[1] = 7
    data[:, :10] = 0  # nodata rows
    img = write_raster(tmp_path / "s.tif", data, nodata=0)
    with rasterio.open(img) as src:
        info = SceneInfo(SceneRecord(img, None, "train"), GeoGrid.from_dataset(src), (1.0, 1.0))
        mean, std = band_statistics([info], [1, 2])
        sampled = sample_band_statistics(src, [1, 2], size=16)
    assert mean == pytest.approx([200, 7]) and std == pytest.approx([100, 1e-6])
    assert sampled is not None and sampled[0][1] == 7 and 100 <= sampled[0][0] <= 300


def test_band_statistics_of_an_empty_scene_are_an_error(tmp_path):
    img = write_raster(tmp_path / "s.tif", np.zeros((1, 8, 8), np.uint8), nodata=0)
    with rasterio.open(img) as src:
        info = SceneInfo(SceneRecord(img, None, "train"), GeoGrid.from_dataset(src), (1.0, 1.0))
        assert sample_band_statistics(src, [1]) is None
    with pytest.raises(RasterError, match="no valid pixels"):
        band_statistics([info], [1])


def test_band_moments_match_numpy():
    rng = np.random.default_rng(0)
    values = rng.normal(50, 12, (3, 1000))
    m = BandMoments(3)
    m.add(values[:, :300])
    m.add(values[:, 300:])
    mean, std = m.mean_std()
    assert mean == pytest.approx(values.mean(1)) and std == pytest.approx(values.std(1))
    assert BandMoments(2).mean_std() is None


def test_nan_and_inf_pixels_are_left_out_of_the_statistics(tmp_path):
    data = np.full((2, 32, 32), 10.0, np.float32)
    data[1] = 4.0
    data[:, :8] = np.nan
    data[0, 20, 20] = np.inf
    img = write_raster(tmp_path / "f.tif", data)  # no nodata value declared
    with rasterio.open(img) as src:
        info = SceneInfo(SceneRecord(img, None, "train"), GeoGrid.from_dataset(src), (1.0, 1.0))
        mean, std = band_statistics([info], [1, 2])
        sampled_mean, _ = sample_band_statistics(src, [1, 2], size=8)
    assert mean == pytest.approx([10, 4]) and std == pytest.approx([1e-6, 1e-6], abs=1e-5)
    assert sampled_mean.tolist() == pytest.approx([10, 4])
