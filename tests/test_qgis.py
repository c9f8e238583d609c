"""Where QGIS is installed (Debian's qgis + python3-qgis), check that it opens geoseg's outputs styled."""

import json
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from affine import Affine

from geoseg.io.classes import DEEPGLOBE
from geoseg.outputs.polygons import write_polygons

SYSTEM_PYTHON = "/usr/bin/python3"


def _has_qgis() -> bool:
    if not shutil.which(SYSTEM_PYTHON):
        return False
    r = subprocess.run([SYSTEM_PYTHON, "-c", "import qgis.core"], capture_output=True)
    return r.returncode == 0


pytestmark = pytest.mark.skipif(not _has_qgis(), reason="QGIS (python3-qgis) is not installed")


@pytest.mark.parametrize("vector", ["landcover.gpkg", "landcover.geojson", "landcover.shp", "landcover.fgb"])
def test_qgis_opens_both_outputs_styled_by_class(tmp_path, vector):
    """The polygons and the class raster beside them, named as ``geoseg predict -o <vector>`` names them,
    each open with their own style: neither .qml overwrites the other."""
    from geoseg.inference.predict import output_paths
    from geoseg.io.grid import GeoGrid
    from geoseg.outputs.class_raster import styled_class_raster

    from conftest import UTM

    a = np.zeros((40, 40), np.uint8)
    a[:, 20:] = 1
    a[10:20, 5:15] = 4
    a[30:, 30:] = 255
    grid = GeoGrid(40, 40, Affine(0.5, 0, 500000, 0, -0.5, 5000000), UTM)
    paths = output_paths(tmp_path / vector)
    with styled_class_raster(paths.raster, grid, DEEPGLOBE) as dst:
        dst.write(a, 1)
    write_polygons(paths.raster, paths.vector, DEEPGLOBE)
    env = {**os.environ, "QT_QPA_PLATFORM": "offscreen"}
    r = subprocess.run([SYSTEM_PYTHON, str(Path(__file__).parent / "qgis_check.py"), str(paths.vector),
                        str(paths.raster)], capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert out["vector_valid"] and out["raster_valid"]
    assert out["raster_crs"] == "EPSG:32633"
    assert out["vector_crs"] == ("EPSG:4326" if vector.endswith(".geojson") else "EPSG:32633")
    assert out["vector_renderer"] == "categorizedSymbol" and out["vector_field"] == "class_id"
    assert [c[1] for c in out["vector_categories"]] == DEEPGLOBE.names
    assert out["raster_renderer"] == "paletted"
    assert [(int(v), label) for v, label, _ in out["raster_classes"]] == list(zip(DEEPGLOBE.codes,
                                                                                  DEEPGLOBE.names))
    assert out["raster_classes"][4][2] == "#0000ff"
