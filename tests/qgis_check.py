"""Open geoseg outputs in real QGIS (headless) and print how it styles them.

Run with a Python that imports qgis.core (Debian: apt-get install qgis python3-qgis):

    QT_QPA_PLATFORM=offscreen /usr/bin/python3 tests/qgis_check.py landcover.gpkg landcover.tif
    QT_QPA_PLATFORM=offscreen /usr/bin/python3 tests/qgis_check.py landcover.fgb landcover_classes.tif

Prints one JSON object: the vector layer's renderer type, its categories (value, label),
and the raster layer's renderer type with its palette classes (value, label).
"""

import json
import os
import sys

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
from qgis.core import QgsApplication, QgsRasterLayer, QgsVectorLayer  # noqa: E402


def main(vector: str, tif: str, layer: str = "landcover") -> dict:
    app = QgsApplication([], False)
    app.initQgis()
    out = {}
    source = f"{vector}|layername={layer}" if vector.endswith(".gpkg") else vector  # one layer per file
    vl = QgsVectorLayer(source, "landcover", "ogr")
    out["vector_valid"] = vl.isValid()
    out["vector_crs"] = vl.crs().authid()
    r = vl.renderer()
    out["vector_renderer"] = r.type()
    if r.type() == "categorizedSymbol":
        out["vector_field"] = r.classAttribute()
        out["vector_categories"] = [[c.value(), c.label(), c.symbol().color().name()] for c in r.categories()]
    rl = QgsRasterLayer(tif, "classes")
    out["raster_valid"] = rl.isValid()
    out["raster_crs"] = rl.crs().authid()
    rr = rl.renderer()
    out["raster_renderer"] = rr.type()
    if rr.type() == "paletted":
        out["raster_classes"] = [[c.value, c.label, c.color.name()] for c in rr.classes()]
    del vl, rl, r, rr
    app.exitQgis()
    return out


if __name__ == "__main__":
    print(json.dumps(main(*sys.argv[1:])))
