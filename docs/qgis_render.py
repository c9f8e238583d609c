"""Draw a scene with geoseg's polygons over it, as QGIS styles them, into a PNG (run by make_figures.py under
QGIS's own Python: ``/usr/bin/python3 docs/qgis_render.py SCENE POLYGONS.gpkg OUT.png SIZE``).

The polygon layer is opened as a QGIS user opens it: the GeoPackage's default style (its ``layer_styles``
table) is applied by QGIS itself, nothing is styled here; only the fill is made half transparent afterwards,
so the scene shows through, as an analyst would set the layer's opacity."""

import os
import sys

from qgis.core import (
    QgsApplication,
    QgsMapRendererParallelJob,
    QgsMapSettings,
    QgsRasterLayer,
    QgsVectorLayer,
)
from qgis.PyQt.QtCore import QSize
from qgis.PyQt.QtGui import QColor


def main(scene: str, polygons: str, out: str, size: int) -> None:
    app = QgsApplication([], False)
    app.initQgis()
    raster = QgsRasterLayer(scene, "scene")
    vector = QgsVectorLayer(f"{polygons}|layername=landcover", "landcover", "ogr")
    assert raster.isValid() and vector.isValid(), "QGIS could not open the scene or the polygons"
    renderer = vector.renderer()
    assert renderer.type() == "categorizedSymbol", f"the default style was not applied ({renderer.type()})"
    vector.setOpacity(0.6)
    settings = QgsMapSettings()
    settings.setLayers([vector, raster])
    settings.setExtent(raster.extent())
    settings.setOutputSize(QSize(size, size))
    settings.setBackgroundColor(QColor(255, 255, 255))
    settings.setDestinationCrs(raster.crs())
    job = QgsMapRendererParallelJob(settings)
    job.start()
    job.waitForFinished()
    assert job.renderedImage().save(out, "png"), f"could not write {out}"
    sys.stdout.flush()
    os._exit(0)  # QgsApplication's teardown crashes headless 3.22 once the work is done; nothing is left open


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]))
