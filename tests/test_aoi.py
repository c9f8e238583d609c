"""The area of interest: polygons in any CRS, reprojected to the scene's; a pixel is in it where its centre
is; faults are one sentence."""

import re
import subprocess
import sys

import geopandas as gpd
import numpy as np
import pyproj
import pytest
import rasterio
import shapely
from affine import Affine
from pyproj import Transformer
from rasterio.windows import Window

from geoseg.errors import InputError
from geoseg.io.aoi import area_mask, read_area, touches_window


def test_an_area_in_another_crs_is_reprojected_and_masks_pixel_centres(tmp_path):
    to_lonlat = Transformer.from_crs(32633, 4326, always_xy=True)
    square = [to_lonlat.transform(x, y) for x, y in ((500010, 4999990), (500030, 4999990), (500030, 4999970),
                                                      (500010, 4999970))]
    gpd.GeoDataFrame(geometry=[shapely.Polygon(square)], crs=4326).to_file(tmp_path / "aoi.gpkg")
    area = read_area(tmp_path / "aoi.gpkg", "EPSG:32633")
    transform = Affine(1, 0, 500000, 0, -1, 5000000)
    mask = area_mask(area, transform, Window(0, 0, 40, 40))
    rows, cols = np.nonzero(mask)
    assert (rows.min(), rows.max(), cols.min(), cols.max()) == (10, 29, 10, 29)  # 20 × 20 m, 1 m pixels
    assert touches_window(area, transform, Window(25, 25, 10, 10))
    assert not touches_window(area, transform, Window(35, 35, 5, 5))


def test_an_area_without_polygons_or_crs_is_one_sentence(tmp_path):
    gpd.GeoDataFrame(geometry=[shapely.Point(0, 0)], crs=4326).to_file(tmp_path / "points.gpkg")
    with pytest.raises(InputError, match="holds no polygons"):
        read_area(tmp_path / "points.gpkg", "EPSG:32633")
    gpd.GeoDataFrame(geometry=[shapely.box(0, 0, 1, 1)]).to_file(tmp_path / "nocrs.gpkg")
    with pytest.raises(InputError, match="has no CRS"):
        read_area(tmp_path / "nocrs.gpkg", "EPSG:32633")
    with pytest.raises(InputError, match="does not exist"):
        read_area(tmp_path / "missing.gpkg", "EPSG:32633")


def geoseg(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "geoseg", *map(str, args)], capture_output=True, text=True,
                          timeout=300)


def test_an_area_that_touches_no_scene_is_one_sentence_and_nothing_is_written(tmp_path, rgb_scene,
                                                                            tiny_checkpoint):
    """The usual cause: an AOI drawn in lon/lat but tagged with the scene's UTM CRS, so it lies near UTM's
    origin. Exit 2 with the AOI's and the scene's bounds in degrees; no output, no lock left."""
    with rasterio.open(rgb_scene) as src:
        lon, lat = pyproj.Transformer.from_crs(src.crs, "EPSG:4326", always_xy=True).transform(
            *src.xy(75, 100))
    square = shapely.box(lon - 1e-4, lat - 1e-4, lon + 1e-4, lat + 1e-4)
    gpd.GeoDataFrame(geometry=[square], crs="EPSG:32633").to_file(tmp_path / "wrong_tag.gpkg")
    out = tmp_path / "out.gpkg"
    result = geoseg("predict", rgb_scene, "-o", out, "--model", tiny_checkpoint, "--aoi",
                    tmp_path / "wrong_tag.gpkg")
    assert result.returncode == 2, result.stderr
    message = " ".join(result.stderr.split())
    assert "touches none of" in message and "EPSG:32633" in message and "Traceback" not in message
    scene_part = message.split("touches none of")[1]
    south, north = map(float, re.search(r"latitude (\S+)° to (\S+)°", scene_part).groups())
    assert south - 1e-3 < lat < north + 1e-3  # the scene's footprint, in degrees
    assert not out.exists() and not list(tmp_path.glob("out*")) and not list(tmp_path.glob(".out*"))
    gpd.GeoDataFrame(geometry=[square], crs="EPSG:4326").to_file(tmp_path / "right_tag.gpkg")
    result = geoseg("predict", rgb_scene, "-o", out, "--model", tiny_checkpoint, "--aoi",
                    tmp_path / "right_tag.gpkg")
    assert result.returncode == 0, result.stderr
