"""The QGIS Processing provider, run by real QGIS (qgis_process and PyQGIS, headless) where QGIS is installed:
its three algorithms listed with their parameters, geoseg:predict giving `geoseg predict`'s class raster and
styled layers, and a cancelled run leaving neither outputs nor processes."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import rasterio

from geoseg.cli.qgis_plugin import install_plugin, plugin_source

from conftest import write_raster

SYSTEM_PYTHON = "/usr/bin/python3"
# Debian's qgis_process wrapper passes an option qgis_process itself refuses; the binary runs as it is
QGIS_PROCESS = shutil.which("qgis_process.bin") or shutil.which("qgis_process")
GEOSEG = str(Path(sys.executable).with_name("geoseg"))
TESTS = Path(__file__).parent

pytestmark = pytest.mark.skipif(QGIS_PROCESS is None or not Path(SYSTEM_PYTHON).exists(),
                                reason="QGIS (qgis_process, python3-qgis) is not installed")


@pytest.fixture
def profile(tmp_path, monkeypatch):
    """A QGIS profile of its own with the provider installed (linked), pointed at this geoseg."""
    data = tmp_path / "xdg"
    monkeypatch.setenv("XDG_DATA_HOME", str(data))
    install_plugin(executable=GEOSEG)
    return data


def qgis_process(*args, timeout=300):
    env = {**os.environ, "QT_QPA_PLATFORM": "offscreen"}
    return subprocess.run([QGIS_PROCESS, *map(str, args)], capture_output=True, text=True, env=env,
                          timeout=timeout)


def test_the_three_algorithms_are_listed_with_their_parameters(profile):
    listed = qgis_process("list").stdout
    for algorithm in ("geoseg:predict\tPredict land cover", "geoseg:evaluate\tEvaluate against labels",
                      "geoseg:train\tTrain from config"):
        assert algorithm in listed
    help_text = qgis_process("help", "geoseg:predict").stdout
    for parameter in ("INPUT", "MODEL", "OVERLAP", "MIN_AREA", "SIMPLIFY", "AOI", "CONFIDENCE",
                      "OUTPUT_RASTER", "OUTPUT_VECTOR"):
        assert f"{parameter}:" in help_text


def test_predict_in_qgis_gives_geosegs_class_raster_and_styled_layers(profile, rgb_scene, tiny_checkpoint,
                                                                      tmp_path):
    expected = tmp_path / "cli.tif"
    subprocess.run([GEOSEG, "predict", rgb_scene, "-o", expected, "--model", tiny_checkpoint, "--quiet"],
                   check=True)
    r = qgis_process("run", "geoseg:predict", "--", f"INPUT={rgb_scene}", f"MODEL={tiny_checkpoint}",
                     f"OUTPUT_RASTER={tmp_path / 'q.tif'}", f"OUTPUT_VECTOR={tmp_path / 'q.gpkg'}")
    assert r.returncode == 0, r.stdout + r.stderr
    shown = [int(p) for p in re.findall(r"(\d+)\.\.", r.stdout)]  # progress, as native algorithms show it
    assert [p for p in shown if p % 10 == 0] == list(range(0, 100, 10)), r.stdout
    assert not list(tmp_path.glob(".geoseg-staging-*"))
    with rasterio.open(expected) as a, rasterio.open(tmp_path / "q.tif") as b:
        assert np.array_equal(a.read(1), b.read(1)) and a.transform == b.transform and a.crs == b.crs
    env = {**os.environ, "QT_QPA_PLATFORM": "offscreen"}
    check = subprocess.run([SYSTEM_PYTHON, str(TESTS / "qgis_check.py"), str(tmp_path / "q.gpkg"),
                            str(tmp_path / "q.tif")], capture_output=True, text=True, env=env, timeout=120)
    out = json.loads(check.stdout.strip().splitlines()[-1])
    assert out["vector_renderer"] == "categorizedSymbol" and out["raster_renderer"] == "paletted"


def test_a_cancelled_rerun_leaves_the_earlier_outputs_byte_identical(tmp_path, tiny_checkpoint):
    """A first run cancelled leaves nothing; then, run Predict land cover to lc.tif/lc.gpkg, run it again to
    the same names and cancel: every earlier file (outputs and sidecars) is byte-identical, nothing else is
    left, no geoseg process runs on."""
    rng = np.random.default_rng(0)
    scene = write_raster(tmp_path / "big.tif", rng.integers(1, 255, (3, 1536, 1536), np.uint8))
    out = tmp_path / "out"
    out.mkdir()
    env = {**os.environ, "QT_QPA_PLATFORM": "offscreen"}
    r = subprocess.run([SYSTEM_PYTHON, str(TESTS / "qgis_cancel.py"), str(plugin_source().parent), GEOSEG,
                        str(scene), str(tiny_checkpoint), str(out)], capture_output=True, text=True, env=env,
                       timeout=300)
    result = json.loads(r.stdout.strip().splitlines()[-1])
    assert result["cancelled"] and result["message"] == "cancelled; earlier outputs were left as they were"
    assert 0 < result["progress"] < 100
    assert {"lc.tif", "lc.gpkg", "lc.qml", "lc.stac.json", "lc_summary.csv"} <= set(result["before"])
    assert result["after"] == result["before"]  # byte-identical, and no staging folder left
    assert result["first_cancelled"] == {}  # a cancelled first run leaves no file and no folder
    running = subprocess.run(["pgrep", "-f", str(out)], capture_output=True, text=True).stdout.split()
    assert running == []


def test_evaluate_and_train_in_qgis(profile, rgb_scene, tiny_checkpoint, sample_dir, tmp_path):
    import yaml

    from conftest import TINY_MODEL

    subprocess.run([GEOSEG, "predict", rgb_scene, "-o", tmp_path / "p.tif", "--model", tiny_checkpoint,
                    "--quiet"], check=True)
    r = qgis_process("run", "geoseg:evaluate", "--", f"PREDICTION={tmp_path / 'p.tif'}",
                     f"TRUTH={tmp_path / 'p.tif'}", f"OUTPUT={tmp_path / 'evaluation'}")
    assert r.returncode == 0, r.stdout + r.stderr
    assert json.loads((tmp_path / "evaluation" / "metrics.json").read_text())["miou"] == 1.0
    config = {"manifest": str(sample_dir / "manifest.csv"), "model_config": TINY_MODEL, "chip_size": 64,
              "chips_per_epoch": 4, "batch_size": 2, "epochs": 1, "num_workers": 0, "val_chips": 2,
              "ce_weights": [1, 1, 1, 1, 1, 1, 0], "output_dir": str(tmp_path / "runs"), "logger": "csv"}
    (tmp_path / "run.yaml").write_text(yaml.safe_dump(config))
    r = qgis_process("run", "geoseg:train", "--", f"CONFIG={tmp_path / 'run.yaml'}")
    assert r.returncode == 0, r.stdout + r.stderr
    best = next((tmp_path / "runs").glob("*/best.ckpt"))
    assert f"CHECKPOINT:\t{best}" in r.stdout


def test_an_error_is_shown_once(profile, rgb_scene, tmp_path):
    """A bad model file: geoseg's one sentence is the algorithm's one exception (which qgis_process itself
    reports three times for any algorithm: as the error, after ERROR: and in its closing line); the
    provider echoes none of geoseg's own error lines; nothing is written."""
    bad = tmp_path / "broken.ckpt"
    bad.write_text("not a checkpoint")
    r = qgis_process("run", "geoseg:predict", "--", f"INPUT={rgb_scene}", f"MODEL={bad}",
                     f"OUTPUT_RASTER={tmp_path / 'q.tif'}", f"OUTPUT_VECTOR={tmp_path / 'q.gpkg'}")
    assert r.returncode != 0
    printed = r.stdout + r.stderr
    sentence = f"{bad} is not a readable geoseg checkpoint"
    assert printed.count(sentence) == 3 and f"ERROR:\t{sentence}" in printed, printed
    assert "geoseg: error:" not in printed
    assert not (tmp_path / "q.tif").exists() and not list(tmp_path.glob(".geoseg-staging-*"))
