"""The chip dataset: normalised image and label indices of one chip, nodata as ignore, dihedral
augmentation."""

import numpy as np
import pytest
import rasterio

from geoseg.data.chips import ChipDataset, ChipSpec, augment
from geoseg.data.scenes import SceneInfo
from geoseg.io.classes import DEEPGLOBE, IGNORE_INDEX
from geoseg.io.grid import GeoGrid
from geoseg.io.manifest import SceneRecord

from conftest import write_raster


@pytest.fixture
def scene(tmp_path):
    image = np.zeros((3, 40, 50), np.uint8)
    image[0] = 110
    image[1] = 130
    image[2] = np.arange(50, dtype=np.uint8)[None, :] + 100
    image[:, :5, :] = 0                                     # nodata rows at the top
    labels = np.zeros((40, 50), np.uint8)
    labels[:, 25:] = 4                                      # water on the right
    labels[30:, :] = 6                                      # unknown (ignored) at the bottom
    img = write_raster(tmp_path / "s.tif", image, nodata=0)
    lbl = write_raster(tmp_path / "l.tif", labels)
    with rasterio.open(img) as src:
        return SceneInfo(SceneRecord(img, lbl, "train"), GeoGrid.from_dataset(src), (1.0, 1.0))


def test_a_chip_is_normalised_and_labelled_with_nodata_ignored(scene):
    ds = ChipDataset([scene], DEEPGLOBE, [1, 2, 3], 16, mean=[100, 100, 100], std=[10, 10, 10], ignored=[6])
    image, label = ds.read(ChipSpec(0, 0, 20))
    assert image.shape == (3, 16, 16) and label.shape == (16, 16)
    assert (label[:5] == IGNORE_INDEX).all() and (image[:, :5] == 0).all()      # nodata
    assert (label[5:, :5] == 0).all() and (label[5:, 5:] == 4).all()           # urban | water at column 25
    assert image[0, 8, 0] == pytest.approx(1.0) and image[1, 8, 0] == pytest.approx(3.0)
    assert image[2, 8, :3].tolist() == pytest.approx([2.0, 2.1, 2.2])
    _, bottom = ds.read(ChipSpec(0, 28, 0))
    assert (bottom[2:] == IGNORE_INDEX).all() and (bottom[:2] == 0).all()      # the ignored class


def test_band_gains_scale_each_band_before_normalisation_and_leave_nodata_zero(scene):
    ds = ChipDataset([scene], DEEPGLOBE, [1, 2, 3], 16, mean=[100, 100, 100], std=[10, 10, 10])
    image, label = ds.read(ChipSpec(0, 0, 20, gain=1.0, band_gains=(1.1, 0.9, 1.0)))
    assert image[0, 8, 0] == pytest.approx((110 * 1.1 - 100) / 10)
    assert image[1, 8, 0] == pytest.approx((130 * 0.9 - 100) / 10)
    assert image[2, 8, :3].tolist() == pytest.approx([2.0, 2.1, 2.2])
    assert (image[:, :5] == 0).all() and (label[:5] == IGNORE_INDEX).all()
    both, _ = ds.read(ChipSpec(0, 0, 20, gain=1.05, band_gains=(1.1, 0.9, 1.0)))
    assert both[0, 8, 0] == pytest.approx((110 * 1.05 * 1.1 - 100) / 10)


def test_chips_past_the_scene_edge_are_ignore(scene):
    ds = ChipDataset([scene], DEEPGLOBE, [1, 2, 3], 16, mean=[0, 0, 0], std=[1, 1, 1])
    _, label = ds.read(ChipSpec(0, 20, 40))  # columns 50.. are outside the 50 px wide scene
    assert (label[:10, :10] == 4).all() and (label[:, 10:] == IGNORE_INDEX).all()


def test_length_counts_the_chip_grid_over_the_sampled_scenes(scene):
    assert len(ChipDataset([scene], DEEPGLOBE, [1, 2, 3], 16, [0] * 3, [1] * 3)) == 3 * 4
    coarse = SceneInfo(scene.record, scene.grid, (2.0, 2.0))  # 20 × 25 sampled pixels
    assert len(ChipDataset([scene, coarse], DEEPGLOBE, [1, 2, 3], 16, [0] * 3, [1] * 3)) == 12 + 2 * 2


def test_augment_is_the_eight_dihedral_transforms():
    a = np.arange(9).reshape(3, 3)
    results = {augment(a, k).tobytes() for k in range(8)}
    assert len(results) == 8 and (augment(a, 0) == a).all()
    assert (augment(a, 1) == np.rot90(a)).all() and (augment(a, 4) == a[:, ::-1]).all()


def test_nan_pixels_are_ignored_and_never_reach_the_model(tmp_path):
    data = np.full((3, 32, 32), 100.0, np.float32)
    data[:, 4:12, 4:12] = np.nan
    img = write_raster(tmp_path / "f.tif", data)
    lbl = write_raster(tmp_path / "l.tif", np.ones((32, 32), np.uint8))
    with rasterio.open(img) as src:
        scene = SceneInfo(SceneRecord(img, lbl, "train"), GeoGrid.from_dataset(src), (1.0, 1.0))
    for s in (scene, SceneInfo(scene.record, scene.grid, (2.0, 2.0))):  # also resampled (NaN spreads)
        image, label = ChipDataset([s], DEEPGLOBE, [1, 2, 3], 16, [0] * 3, [1] * 3).read(ChipSpec(0, 0, 0))
        assert np.isfinite(image).all()
        assert (label == IGNORE_INDEX).any() and (label[image[0] == 0] == IGNORE_INDEX).all()
    image, label = ChipDataset([scene], DEEPGLOBE, [1, 2, 3], 16, [0] * 3, [1] * 3).read(ChipSpec(0, 0, 0))
    assert (label[4:12, 4:12] == IGNORE_INDEX).all() and (label[12:, 12:] == 1).all()
