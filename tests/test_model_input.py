"""The contract between training and prediction (geoseg.data.model_input): both sides sample a scene at the
same scale and normalise its values the same way, because both call the one module that decides it."""

import numpy as np
import pyproj
import pytest
import rasterio
from affine import Affine

from geoseg.data.chips import ChipDataset, ChipSpec
from geoseg.data.model_input import normalise, sampling_scale
from geoseg.data.scenes import scene_infos
from geoseg.errors import ConfigError
from geoseg.inference.resample import model_scale
from geoseg.io.classes import DEEPGLOBE
from geoseg.io.grid import GeoGrid
from geoseg.io.manifest import SceneRecord
from geoseg.models.checkpoint import Checkpoint

from conftest import write_raster


@pytest.fixture
def scene_and_labels(tmp_path):
    rng = np.random.default_rng(3)
    image = rng.integers(1, 255, (3, 96, 128)).astype(np.uint8)
    image[:, :10, :10] = 0  # nodata corner
    where = Affine(0.5, 0, 400000, 0, -0.5, 5200000)
    scene = write_raster(tmp_path / "s.tif", image, transform=where, nodata=0)
    labels = write_raster(tmp_path / "l.tif", rng.integers(0, 6, (96, 128)).astype(np.uint8), nodata=255,
                          transform=where)
    return scene, labels


@pytest.mark.parametrize("downsize_res, resolution, expected",
                         [(None, None, 1.0), (None, 1.3, 2.6), (None, 0.5, 1.0), (64, None, 2.0)])
def test_training_and_prediction_sample_a_scene_at_the_same_scale(scene_and_labels, downsize_res, resolution,
                                                                   expected):
    scene, labels = scene_and_labels
    record = SceneRecord(scene, labels, "train")
    training = scene_infos([record], [1, 2, 3], downsize_res, resolution)[0].scale
    ckpt = Checkpoint(architecture="Unet", model_config={}, state_dict={}, classes=DEEPGLOBE, bands=[1, 2, 3],
                      mean=[0.0] * 3, std=[1.0] * 3, chip_size=64,
                      train_config={"downsize_res": downsize_res, "resolution": resolution})
    with rasterio.open(scene) as src:
        grid = GeoGrid.from_dataset(src)
    if resolution == 1.3:  # ground sizes are geodesic: take out UTM's scale factor there (pyproj's own)
        lon, lat = pyproj.Transformer.from_crs(grid.crs, "EPSG:4326", always_xy=True).transform(
            *(grid.transform * (grid.width / 2, grid.height / 2)))
        expected *= pyproj.Proj(grid.crs.to_wkt()).get_factors(lon, lat).meridional_scale
    expected = pytest.approx((expected, expected), rel=1e-6)
    assert training == expected and model_scale(ckpt, grid, scene) == expected
    assert sampling_scale(grid, downsize_res, resolution) == expected


def test_a_scene_placed_nowhere_is_refused_for_training_and_predicted_natively(tmp_path):
    scene = write_raster(tmp_path / "g.tif", np.ones((3, 8, 8), np.uint8), crs=None,
                         transform=Affine.identity())
    with pytest.raises(ConfigError, match="no CRS and no ground control points"):
        scene_infos([SceneRecord(scene, None, "train")], [1, 2, 3], None, 1.0)
    ckpt = Checkpoint(architecture="Unet", model_config={}, state_dict={}, classes=DEEPGLOBE, bands=[1, 2, 3],
                      mean=[0.0] * 3, std=[1.0] * 3, chip_size=64, train_config={"resolution": 1.0})
    with rasterio.open(scene) as src, pytest.warns(UserWarning, match="predicted at its own pixels"):
        assert model_scale(ckpt, GeoGrid.from_dataset(src), scene) == (1.0, 1.0)


def test_a_training_chip_is_the_scene_normalised_by_the_contract(scene_and_labels):
    scene, labels = scene_and_labels
    infos = scene_infos([SceneRecord(scene, labels, "train")], [1, 2, 3])
    mean, std, clip = [100.0, 110.0, 120.0], [50.0, 40.0, 30.0], ([20.0] * 3, [230.0] * 3)
    dataset = ChipDataset(infos, DEEPGLOBE, [1, 2, 3], 64, mean, std, clip=clip)
    chip, _ = dataset.read(ChipSpec(0, 0, 0))
    with rasterio.open(scene) as src:
        raw = src.read(window=((0, 64), (0, 64))).astype(np.float32)
    expected = normalise(raw.copy(), (raw != 0).all(axis=0), mean, std, clip)
    assert np.array_equal(chip, expected)
    assert (chip[:, :10, :10] == 0).all() and np.abs(chip).max() > 1
