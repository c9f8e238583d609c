"""STAC Items beside predictions: they round-trip through pystac, validate against the STAC core schema
(offline: the schemas pystac ships; extension fields are checked field by field, their schemas being online
only), their footprint contains every pixel, and their class list is the raster's."""

from __future__ import annotations

import copy
import json
import re
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pyproj
import pystac
import pystac.validation
import pytest
import rasterio
import shapely
from affine import Affine
from pyproj import Transformer
from pystac.extensions.classification import ClassificationExtension
from pystac.extensions.projection import ProjectionExtension
from pystac.extensions.raster import RasterExtension
from rasterio.crs import CRS

from geoseg.inference.predict import PredictOptions, predict
from geoseg.io.classes import DEEPGLOBE, ClassSchema
from geoseg.io.grid import GeoGrid
from geoseg.outputs.stac import footprint, write_stac_item

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


def write_item(tmp_path, grid: GeoGrid, scene: Path | None = None, schema=DEEPGLOBE, **kw) -> dict:
    raster = tmp_path / "classes.tif"
    scene = scene or write_raster(tmp_path / "scene.tif", np.ones((1, grid.height, grid.width), np.uint8),
                                  grid.transform, crs=grid.crs)
    path = write_stac_item(raster, grid, schema, scene=str(scene), checkpoint=tmp_path / "m.ckpt",
                           options={}, **kw)
    d = json.loads(path.read_text())
    core = copy.deepcopy(d)
    core["stac_extensions"] = []
    assert pystac.validation.validate_dict(core)
    return d


def test_a_scene_across_the_antimeridian_is_split_as_rfc_7946_asks(tmp_path):
    """A 30 km scene in UTM 60S around 180° near Fiji: a MultiPolygon of two parts, one each side of the
    antimeridian, holding every pixel centre and the scene's centre, with a bbox whose west is east of its
    east; its area is that of the scene (about 0.08 deg²), not a band round the globe."""
    x, y = Transformer.from_crs("EPSG:4326", "EPSG:32760", always_xy=True).transform(180.0, -17.0)
    grid = GeoGrid(60, 60, Affine(500, 0, x - 15000, 0, -500, y + 15000), CRS.from_epsg(32760))
    d = write_item(tmp_path, grid)
    outline = shapely.geometry.shape(d["geometry"])
    assert outline.geom_type == "MultiPolygon" and len(outline.geoms) == 2
    lon, lat = pixel_centres_in_wgs84(grid)
    assert shapely.covers(outline, shapely.points(lon, lat)).all()
    west, south, east, north = d["bbox"]
    assert west > 179 and east < -179 and west > east and south < -17 < north
    assert 0.05 < outline.area < 0.12


def test_a_scene_over_the_pole_gets_a_cap_that_holds_the_pole(tmp_path):
    """A 200 km polar stereographic scene centred on the North Pole: the footprint is a cap reaching 90° N
    over every longitude, holding every pixel centre; its bbox spans −180…180 up to 90."""
    grid = GeoGrid(80, 80, Affine(2500, 0, -100000, 0, -2500, 100000), CRS.from_epsg(3413))
    d = write_item(tmp_path, grid)
    outline = shapely.geometry.shape(d["geometry"])
    lon, lat = pixel_centres_in_wgs84(grid)
    assert shapely.covers(outline, shapely.points(lon, lat)).all()
    assert shapely.covers(outline, shapely.points(np.linspace(-179, 179, 37), np.full(37, 89.99))).all()
    assert d["bbox"][0] == -180 and d["bbox"][2] == 180 and d["bbox"][3] == 90
    corners = Transformer.from_crs("EPSG:3413", "EPSG:4326", always_xy=True).transform(
        [-100000, 100000, 100000, -100000], [100000, 100000, -100000, -100000])
    assert d["bbox"][1] == pytest.approx(min(corners[1]), abs=1e-9)  # the corners lie farthest from the pole


def test_the_footprint_follows_the_area_of_interest(tmp_path):
    grid = GeoGrid(100, 100, Affine(10, 0, 500000, 0, -10, 5000000), CRS.from_epsg(32633))
    area = shapely.box(500100, 4999300, 500400, 4999800)
    d = write_item(tmp_path, grid, area=area)
    outline = shapely.geometry.shape(d["geometry"])
    to_wgs84 = Transformer.from_crs("EPSG:32633", "EPSG:4326", always_xy=True)
    expected = shapely.Polygon(np.column_stack(to_wgs84.transform(*np.asarray(area.exterior.xy))))
    assert outline.symmetric_difference(expected).area < 1e-3 * expected.area


def test_wkt2_names_and_acquisition_time(tmp_path):
    """A custom CRS is given as WKT2 (not rasterio's WKT1); class names keep to the extension's letters;
    the acquisition time comes from the scene's TIFF tag."""
    custom = CRS.from_wkt(pyproj.CRS.from_proj4("+proj=tmerc +lat_0=0 +lon_0=7.3 +k=1 +x_0=0 +y_0=0 "
                                                "+ellps=GRS80 +units=m").to_wkt())
    grid = GeoGrid(20, 20, Affine(10, 0, 0, 0, -10, 5000000), custom)
    scene = write_raster(tmp_path / "tagged.tif", np.ones((1, 20, 20), np.uint8), grid.transform, crs=custom)
    with rasterio.open(scene, "r+") as ds:
        ds.update_tags(TIFFTAG_DATETIME="2023:07:14 10:30:00")
    schema = ClassSchema.from_dict([{"name": "Forêt", "color": [0, 120, 0]},
                                    {"name": "Bâti dense", "color": [200, 0, 0]}])
    d = write_item(tmp_path, grid, scene, schema)
    wkt2 = d["properties"]["proj:wkt2"]
    assert wkt2.startswith("PROJCRS[")
    assert pyproj.CRS.from_wkt(wkt2).equals(pyproj.CRS.from_wkt(custom.to_wkt()))
    classes = d["assets"]["classes"]["classification:classes"]
    assert [c["name"] for c in classes] == ["Foret", "Bati_dense"]
    assert [c["description"] for c in classes] == ["Forêt", "Bâti dense"]
    assert all(re.fullmatch(r"[A-Za-z0-9_-]+", c["name"]) for c in classes)
    assert d["properties"]["datetime"] == "2023-07-14T10:30:00Z"


def test_the_acquisition_time_from_a_sidecar_an_option_or_an_honest_interval(tmp_path):
    grid = GeoGrid(20, 20, Affine(10, 0, 500000, 0, -10, 5000000), CRS.from_epsg(32633))
    scene = write_raster(tmp_path / "s.tif", np.ones((1, 20, 20), np.uint8), grid.transform,
                         crs=grid.crs)
    d = write_item(tmp_path, grid, scene)
    assert d["properties"]["datetime"] is None
    assert d["properties"]["start_datetime"].startswith("1970-01-01")
    written = datetime.fromtimestamp(scene.stat().st_mtime, timezone.utc)
    assert datetime.fromisoformat(d["properties"]["end_datetime"].replace("Z", "+00:00")) == written
    assert write_item(tmp_path, grid, scene, acquired="2024-06-01")["properties"]["datetime"] == \
        "2024-06-01T00:00:00Z"
    (tmp_path / "s.tif.json").write_text(json.dumps({"type": "Feature", "properties": {
        "datetime": "2022-03-04T05:06:07Z"}}))
    assert write_item(tmp_path, grid, scene, acquired="2024-06-01")["properties"]["datetime"] == \
        "2022-03-04T05:06:07Z"
