"""QGIS styles: paletted raster QML, category names, categorized vector QML, the GeoPackage default style."""

import sqlite3
import xml.etree.ElementTree as ET

import geopandas as gpd
import shapely

from geoseg.io.classes import DEEPGLOBE, ClassSchema, LandClass
from geoseg.outputs.style import add_gpkg_default_style, category_aux_xml, raster_qml, vector_qml

CODES = ClassSchema((LandClass(10, "tree cover", (0, 100, 0)), LandClass(80, "water & ice", (0, 100, 200))))


def _xml(text):
    return ET.fromstring(text.split("\n", 1)[1])  # after the DOCTYPE line


def test_raster_style_lists_exactly_the_classes():
    entries = _xml(raster_qml(CODES)).findall(".//paletteEntry")
    assert [(e.get("value"), e.get("color"), e.get("label")) for e in entries] == [
        ("10", "#006400", "tree cover"), ("80", "#0064c8", "water & ice")]
    assert len(_xml(raster_qml(DEEPGLOBE)).findall(".//paletteEntry")) == 7


def test_category_names_sit_at_the_class_codes():
    cats = ET.fromstring(category_aux_xml(CODES)).findall(".//Category")
    assert len(cats) == 81 and cats[10].text == "tree cover" and cats[80].text == "water & ice"
    assert all(c.text is None for i, c in enumerate(cats) if i not in (10, 80))


def test_vector_style_categorizes_by_class_id():
    root = _xml(vector_qml(CODES))
    assert root.find(".//renderer-v2").get("attr") == "class_id"
    cats = root.findall(".//category")
    assert [(c.get("value"), c.get("label")) for c in cats] == [("10", "tree cover"), ("80", "water & ice")]


def test_geopackage_default_style(tmp_path):
    path = tmp_path / "x.gpkg"
    gpd.GeoDataFrame({"class_id": [10]}, geometry=[shapely.box(0, 0, 1, 1)], crs="EPSG:32633").to_file(
        path, layer="landcover")
    add_gpkg_default_style(path, "landcover", vector_qml(CODES))
    add_gpkg_default_style(path, "landcover", vector_qml(CODES))  # replaced, not added twice
    with sqlite3.connect(path) as con:
        rows = con.execute("SELECT f_table_name, f_geometry_column, useAsDefault, styleQML FROM layer_styles"
                           ).fetchall()
    # the geometry column as GDAL named it ("geom"), which QGIS needs to match the style to the layer
    assert len(rows) == 1 and rows[0][:3] == ("landcover", "geom", 1) and "tree cover" in rows[0][3]
