"""Scene preparation: sampling scales and the tiled copies."""

import numpy as np
import pyproj
import pytest
import rasterio
from affine import Affine
from rasterio.crs import CRS

from geoseg.data.scenes import scene_infos, tiled_copies
from geoseg.errors import ConfigError
from geoseg.io.manifest import SceneRecord

from conftest import write_raster


def test_resolution_reads_windows_at_a_coarser_ground_resolution(tmp_path):
    img = write_raster(tmp_path / "s.tif", np.full((3, 200, 120), 100, np.uint8))  # 0.5 m pixels
    (info,) = scene_infos([SceneRecord(img, None, "train")], [1, 2, 3], resolution=2.0)
    # 0.5 m of UTM grid on its central meridian is 0.5 / 0.9996 m of ground
    assert info.scale == pytest.approx((4 * 0.9996, 4 * 0.9996), rel=1e-5) and info.sampled_shape == (50, 30)
    (info,) = scene_infos([SceneRecord(img, None, "train")], [1, 2, 3], downsize_res=100)
    assert info.scale == (2.0, 2.0) and info.sampled_shape == (100, 60)


def test_resolution_in_metres_needs_a_place_on_earth(tmp_path):
    """Scenes in degrees are sampled by the ground size of their pixels; a scene placed nowhere is refused."""
    geographic = write_raster(tmp_path / "g.tif", np.full((3, 20, 20), 100, np.uint8),
                              transform=Affine(0.0001, 0, 10, 0, -0.0001, 50), crs=CRS.from_epsg(4326))
    (info,) = scene_infos([SceneRecord(geographic, None, "train")], [1, 2, 3], resolution=10.0)
    geod = pyproj.Geod(ellps="WGS84")
    width = geod.inv(10.001, 49.999, 10.0011, 49.999)[2]
    height = geod.inv(10.001, 49.999, 10.001, 49.9989)[2]
    assert info.scale == pytest.approx((10 / width, 10 / height), rel=1e-6)
    bare = write_raster(tmp_path / "b.tif", np.full((3, 20, 20), 100, np.uint8), crs=None)
    with pytest.raises(ConfigError, match="has no CRS and no ground control points"):
        scene_infos([SceneRecord(bare, None, "train")], [1, 2, 3], resolution=10.0)


def test_tiled_copies_keep_the_scene_mask(tmp_path):
    """A downsized scene with an internal mask (no nodata value) keeps its mask in the cached copy."""
    data = np.full((3, 128, 128), 90, np.uint8)
    img = write_raster(tmp_path / "m.tif", data, tiled=True, blockxsize=64, blockysize=64)
    mask = np.zeros((128, 128), np.uint8)
    mask[:, 64:] = 255
    with rasterio.Env(GDAL_TIFF_INTERNAL_MASK=True), rasterio.open(img, "r+") as ds:
        ds.write_mask(mask)
    (info,) = scene_infos([SceneRecord(img, None, "train")], [1, 2, 3], downsize_res=32)
    (copy,) = tiled_copies([info], tmp_path / "cache")
    assert copy.record.image != img and copy.scale == (1.0, 1.0)
    with rasterio.open(copy.record.image) as ds:
        assert ds.shape == (32, 32)
        assert (ds.dataset_mask() == mask[::4, ::4]).all()
