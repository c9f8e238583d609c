"""QGIS styles: categorized vector styles and paletted raster styles (QML), GeoPackage ``layer_styles``.

See ../shared/QGIS.md for the facts these follow (verified with QGIS 3.22).
"""

from __future__ import annotations

import sqlite3
from datetime import datetime, timezone
from pathlib import Path
from xml.sax.saxutils import escape, quoteattr

from geoseg.io.classes import ClassSchema

_HEADER = "<!DOCTYPE qgis PUBLIC 'http://mrcc.com/qgis.dtd' 'SYSTEM'>\n"


def raster_qml(schema: ClassSchema) -> str:
    """A paletted raster style whose legend lists exactly the schema's classes."""
    entries = "\n".join(
        f'        <paletteEntry value="{c.code}" color="#{c.color[0]:02x}{c.color[1]:02x}{c.color[2]:02x}" '
        f'alpha="255" label={quoteattr(c.name)}/>'
        for c in schema.classes
    )
    return (
        f'{_HEADER}<qgis version="3.22.0" styleCategories="Symbology">\n'
        '  <pipe>\n'
        '    <rasterrenderer type="paletted" band="1" opacity="1" alphaBand="-1">\n'
        f'      <colorPalette>\n{entries}\n      </colorPalette>\n'
        '    </rasterrenderer>\n'
        '  </pipe>\n'
        '</qgis>\n'
    )


def category_aux_xml(schema: ClassSchema) -> str:
    """GDAL's PAM sidecar (``.aux.xml``) holding the class names as band category names."""
    names = [""] * (max(schema.codes) + 1)
    for c in schema.classes:
        names[c.code] = c.name
    cats = "".join(f"<Category>{escape(n)}</Category>" for n in names)
    return (f'<PAMDataset>\n  <PAMRasterBand band="1">\n    <CategoryNames>{cats}</CategoryNames>\n'
            '  </PAMRasterBand>\n</PAMDataset>\n')


def vector_qml(schema: ClassSchema, field: str = "class_id") -> str:
    """A categorized fill style on ``field`` with the class colours and names."""
    categories = "\n".join(
        f'      <category value="{c.code}" label={quoteattr(c.name)} symbol="{i}" render="true"/>'
        for i, c in enumerate(schema.classes)
    )
    symbols = "\n".join(
        f'      <symbol type="fill" name="{i}" alpha="1" clip_to_extent="1" force_rhr="0">\n'
        '        <layer class="SimpleFill" enabled="1" locked="0" pass="0">\n'
        '          <Option type="Map">\n'
        '            <Option type="QString" name="color" '
        f'value="{c.color[0]},{c.color[1]},{c.color[2]},255"/>\n'
        '            <Option type="QString" name="outline_color" value="35,35,35,255"/>\n'
        '            <Option type="QString" name="outline_style" value="solid"/>\n'
        '            <Option type="QString" name="outline_width" value="0.1"/>\n'
        '            <Option type="QString" name="style" value="solid"/>\n'
        '          </Option>\n'
        '        </layer>\n'
        '      </symbol>'
        for i, c in enumerate(schema.classes)
    )
    return (
        f'{_HEADER}<qgis version="3.22.0" styleCategories="Symbology">\n'
        f'  <renderer-v2 type="categorizedSymbol" attr="{field}" forceraster="0" enableorderby="0" '
        'symbollevels="0">\n'
        f'    <categories>\n{categories}\n    </categories>\n'
        f'    <symbols>\n{symbols}\n    </symbols>\n'
        '  </renderer-v2>\n'
        '</qgis>\n'
    )


def add_gpkg_default_style(path: str | Path, layer: str, qml: str, geometry_column: str = "geom",
                           name: str = "geoseg") -> None:
    """Store ``qml`` as the layer's default style in the GeoPackage's ``layer_styles`` table."""
    now = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
    con = sqlite3.connect(str(path))
    try:
        with con:
            con.execute(
                "CREATE TABLE IF NOT EXISTS layer_styles ("
                "id INTEGER PRIMARY KEY AUTOINCREMENT NOT NULL, f_table_catalog TEXT(256), "
                "f_table_schema TEXT(256), f_table_name TEXT(256), f_geometry_column TEXT(256), "
                "styleName TEXT(30), styleQML TEXT, styleSLD TEXT, useAsDefault BOOLEAN, "
                "description TEXT, owner TEXT(30), ui TEXT(30), update_time DATETIME)"
            )
            con.execute("DELETE FROM layer_styles WHERE f_table_name = ?", (layer,))
            con.execute(
                "INSERT INTO layer_styles (f_table_catalog, f_table_schema, f_table_name, f_geometry_column, "
                "styleName, styleQML, styleSLD, useAsDefault, description, owner, ui, update_time) "
                "VALUES ('', '', ?, ?, ?, ?, '', 1, 'land-cover classes (geoseg)', '', NULL, ?)",
                (layer, geometry_column, name, qml, now),
            )
            con.execute(
                "INSERT OR REPLACE INTO gpkg_contents (table_name, data_type, identifier, description, "
                "last_change) "
                "VALUES ('layer_styles', 'attributes', 'layer_styles', 'QGIS layer styles', ?)",
                (now,),
            )
    finally:
        con.close()
