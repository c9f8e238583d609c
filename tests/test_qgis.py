"""Where QGIS is installed (Debian's qgis + python3-qgis), check that it opens geoseg's outputs styled."""

import json
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from affine import Affine

from geoseg.class_raster import class_raster_profile, write_class_metadata
from geoseg.classes import DEEPGLOBE
from geoseg.style import category_aux_xml, raster_qml
from geoseg.vector_output import write_polygons

SYSTEM_PYTHON = "/usr/bin/python3"


def _has_qgis() -> bool:
    if not shutil.which(SYSTEM_PYTHON):
        return False
    r = subprocess.run([SYSTEM_PYTHON, "-c", "import qgis.core"], capture_output=True)
    return r.returncode == 0


pytestmark = pytest.mark.skipif(not _has_qgis(), reason="QGIS (python3-qgis) is not installed")


def test_qgis_opens_outputs_styled_by_class(tmp_path):
    import rasterio

    from geoseg.grid import GeoGrid

    from conftest import UTM

    a = np.zeros((40, 40), np.uint8)
    a[:, 20:] = 1
    a[10:20, 5:15] = 4
    a[30:, 30:] = 255
    grid = GeoGrid(40, 40, Affine(0.5, 0, 500000, 0, -0.5, 5000000), UTM)
    tif = tmp_path / "landcover.tif"
    with rasterio.open(tif, "w", **class_raster_profile(grid)) as dst:
        write_class_metadata(dst, DEEPGLOBE)
        dst.write(a, 1)
    (tmp_path / "landcover.tif.aux.xml").write_text(category_aux_xml(DEEPGLOBE))
    (tmp_path / "landcover.qml").write_text(raster_qml(DEEPGLOBE))
    write_polygons(tif, tmp_path / "landcover.gpkg", DEEPGLOBE)
    env = {**os.environ, "QT_QPA_PLATFORM": "offscreen"}
    r = subprocess.run([SYSTEM_PYTHON, str(Path(__file__).parent / "qgis_check.py"),
                        str(tmp_path / "landcover.gpkg"), str(tif)], capture_output=True, text=True, env=env,
                       timeout=120)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert out["vector_valid"] and out["raster_valid"]
    assert out["vector_crs"] == out["raster_crs"] == "EPSG:32633"
    assert out["vector_renderer"] == "categorizedSymbol" and out["vector_field"] == "class_id"
    assert [c[1] for c in out["vector_categories"]] == DEEPGLOBE.names
    assert out["raster_renderer"] == "paletted"
    assert [(int(v), label) for v, label, _ in out["raster_classes"]] == list(zip(DEEPGLOBE.codes,
                                                                                  DEEPGLOBE.names))
    assert out["raster_classes"][4][2] == "#0000ff"
