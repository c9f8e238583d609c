"""Class rasters: profile, colour table, category names, QGIS style, COG; the same for predict and error
maps."""

import numpy as np
import pytest
import rasterio
from affine import Affine

from geoseg.io.classes import NODATA, ClassSchema, LandClass
from geoseg.io.grid import GeoGrid
from geoseg.outputs.class_raster import (
    class_raster_profile,
    finish_raster,
    probability_raster_profile,
    styled_class_raster,
    write_categories,
)

from conftest import UTM

SCHEMA = ClassSchema((LandClass(10, "trees", (0, 100, 0)), LandClass(20, "water", (0, 0, 200))))
GRID = GeoGrid(300, 260, Affine(10, 0, 500000, 0, -10, 5000000), UTM)


def test_profile_is_tiled_deflated_uint8_with_nodata_255():
    p = class_raster_profile(GRID)
    assert (p["dtype"], p["nodata"], p["compress"], p["tiled"], p["blockxsize"]) == ("uint8", NODATA,
                                                                                     "deflate", True, 256)
    assert p["crs"] == UTM and p["transform"] == GRID.transform
    assert "tiled" not in class_raster_profile(GeoGrid(100, 300, GRID.transform, UTM))  # smaller than a tile
    f16 = probability_raster_profile(GRID, 7, "float16")
    assert f16["count"] == 7 and (f16["dtype"], f16["nbits"]) == ("float32", 16) and np.isnan(f16["nodata"])


def test_styled_class_raster_opens_with_colours_names_and_style(tmp_path):
    out = tmp_path / "map.tif"
    with styled_class_raster(out, GRID, SCHEMA, {"content": "test"}) as dst:
        assert not out.exists()  # under a temporary name until complete
        dst.write(np.full((260, 300), 20, np.uint8), 1)
    with rasterio.open(out) as ds:
        assert ds.colormap(1)[20] == (0, 0, 200, 255) and ds.tags()["content"] == "test"
        assert ds.tags()["classes"] == "10:trees,20:water" and ds.descriptions == ("class",)
        assert (ds.read(1) == 20).all()
    assert "<Category>water</Category>" in (tmp_path / "map.tif.aux.xml").read_text()
    assert 'label="water"' in (tmp_path / "map.qml").read_text()


def test_a_failed_class_raster_leaves_nothing(tmp_path):
    with pytest.raises(ValueError):
        with styled_class_raster(tmp_path / "map.tif", GRID, SCHEMA):
            raise ValueError("stopped")
    assert list(tmp_path.iterdir()) == []


def test_cog_rewrite_keeps_the_classes(tmp_path):
    """--cog: the final rewrite gives a COG with the colour table, tags and category names."""
    out = tmp_path / "map.tif"
    data = np.tile(np.array([10, 20], np.uint8), (260, 150))
    with styled_class_raster(out, GRID, SCHEMA) as dst:
        dst.write(data, 1)
    finish_raster(out, cog=True)
    with rasterio.open(out) as ds:
        assert ds.tags(ns="IMAGE_STRUCTURE").get("LAYOUT") == "COG" and (ds.read(1) == data).all()
        assert ds.colormap(1)[10] == (0, 100, 0, 255)
    assert "<Category>trees</Category>" in (tmp_path / "map.tif.aux.xml").read_text()
    write_categories(tmp_path / "missing.tif", SCHEMA)  # nothing to name: no sidecar
    assert not (tmp_path / "missing.tif.aux.xml").exists()
