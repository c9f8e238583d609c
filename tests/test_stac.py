"""STAC Items beside predictions: they round-trip through pystac, validate against the STAC core schema
(offline: the schemas pystac ships; extension fields are checked field by field, their schemas being online
only), their footprint contains every pixel, and their class list is the raster's."""

from __future__ import annotations

import copy
import json

import numpy as np
import pystac
import pystac.validation
import rasterio
import shapely
from affine import Affine
from pyproj import Transformer
from pystac.extensions.classification import ClassificationExtension
from pystac.extensions.projection import ProjectionExtension
from pystac.extensions.raster import RasterExtension

from geoseg.inference.predict import PredictOptions, predict
from geoseg.io.grid import GeoGrid
from geoseg.outputs.stac import footprint

from conftest import write_raster


def test_the_item_round_trips_validates_and_lists_the_rasters_classes(rgb_scene, tiny_checkpoint, tmp_path):
    predict(rgb_scene, tmp_path / "landcover.gpkg", tiny_checkpoint, options=PredictOptions(confidence=True))
    path = tmp_path / "landcover.stac.json"
    d = json.loads(path.read_text())
    item = pystac.Item.from_file(str(path))
    assert item.to_dict(include_self_link=False) == d
    core = copy.deepcopy(d)
    core["stac_extensions"] = []
    assert pystac.validation.validate_dict(core)  # raises on an invalid Item
    assert set(item.assets) == {"classes", "confidence", "polygons"}
    assert item.assets["classes"].href == "landcover.tif" and item.assets["polygons"].href == "landcover.gpkg"
    with rasterio.open(tmp_path / "landcover.tif") as src:
        proj = ProjectionExtension.ext(item)
        assert proj.epsg == 32633 and proj.shape == [src.height, src.width]
        assert proj.transform == list(src.transform)[:6]
        classes = ClassificationExtension.ext(item.assets["classes"]).classes
        tagged = [c.split(":", 1) for c in src.tags()["classes"].split(",")]
        assert [(c.value, c.description) for c in classes] == [(int(code), name) for code, name in tagged]
        colormap = src.colormap(1)
        assert all(c.color_hint == "%02X%02X%02X" % colormap[c.value][:3] for c in classes)
    assert RasterExtension.ext(item.assets["classes"]).bands[0].nodata == 255
    assert item.properties["processing:software"]["geoseg"]
    assert item.properties["geoseg:options"]["confidence"] is True


def pixel_centres_in_wgs84(grid: GeoGrid):
    rows, cols = np.mgrid[0:grid.height, 0:grid.width] + 0.5
    a, b, c, d, e, f = list(grid.transform)[:6]
    x, y = a * cols + b * rows + c, d * cols + e * rows + f
    return Transformer.from_crs(grid.crs, "EPSG:4326", always_xy=True).transform(x.ravel(), y.ravel())


def test_the_footprint_contains_every_pixel_also_where_projections_bend_edges(tmp_path):
    """A rotated grid in polar stereographic at 78° N: straight grid edges are curves in lon/lat."""
    t = Affine.translation(-50000, -1200000) * Affine.rotation(30) * Affine.scale(400, -400)
    path = write_raster(tmp_path / "polar.tif", np.ones((1, 90, 120), np.uint8), t, crs="EPSG:3413")
    with rasterio.open(path) as src:
        grid = GeoGrid.from_dataset(src)
    outline = footprint(grid)
    lon, lat = pixel_centres_in_wgs84(grid)
    assert shapely.contains_xy(outline, lon, lat).all()
    box = shapely.box(*outline.bounds)
    assert outline.area < 0.9 * box.area  # a rotated outline, not a bounding box


def test_a_scene_without_georeferencing_has_no_footprint():
    assert footprint(GeoGrid(10, 10, Affine.identity(), None)) is None
