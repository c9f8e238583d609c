"""geoseg's progress protocol (GEOSEG_PROGRESS=lines) and the QGIS provider's parser of it
(qgis_plugin/geoseg_provider/progress_lines.py, no QGIS needed): every progress line real geoseg runs print
is understood, and prediction and training each map to one percentage that only grows, to 100."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from conftest import TINY_MODEL

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "qgis_plugin"))
from geoseg_provider.progress_lines import parse  # noqa: E402
from geoseg_provider.staging import StagedOutputs  # noqa: E402


def run_with_progress(*args) -> list[str]:
    env = {**os.environ, "GEOSEG_PROGRESS": "lines"}
    r = subprocess.run([sys.executable, "-m", "geoseg", *map(str, args)], capture_output=True, text=True,
                       env=env, timeout=600)
    assert r.returncode == 0, r.stderr
    return [line for line in r.stderr.splitlines() if line.startswith("PROGRESS")]


def percentages(lines: list[str]) -> list[float]:
    parsed = [parse(line) for line in lines]
    assert all(p is not None for p in parsed), [text for text, p in zip(lines, parsed) if p is None]
    return [p for _, p in parsed if p is not None]


def test_the_parser_reads_each_form_of_the_protocol():
    assert parse("PROGRESS predict 5/10") == ("predict", 45.0)
    assert parse("PROGRESS vectorize 3/?") == ("vectorize", None)
    assert parse("PROGRESS train 3/6 epoch=2/2") == ("train", pytest.approx(100 * (1 + 0.9 * 0.5) / 2))
    assert parse("PROGRESS validate 2/2 epoch=1/2") == ("validate", pytest.approx(50.0))
    assert parse("geoseg: warning: something") is None
    assert parse("PROGRESS train 1/2 0/6") is None  # geoseg's earlier training line, which nothing read


def test_prediction_maps_to_a_growing_percentage(rgb_scene, tiny_checkpoint, tmp_path):
    lines = run_with_progress("predict", rgb_scene, "-o", tmp_path / "p.gpkg", "--model", tiny_checkpoint)
    stages = [parse(line)[0] for line in lines]
    assert stages[0] == "load" and {"load", "engine", "predict", "vectorize"} <= set(stages)
    shown = percentages(lines)
    assert shown == sorted(shown) and shown[-1] == 100.0


def test_training_maps_epochs_and_validation_to_a_growing_percentage(sample_dir, tmp_path):
    config = {"manifest": str(sample_dir / "manifest.csv"), "model_config": TINY_MODEL, "chip_size": 64,
              "chips_per_epoch": 4, "batch_size": 2, "epochs": 2, "num_workers": 0, "val_chips": 2,
              "ce_weights": [1, 1, 1, 1, 1, 1, 0], "output_dir": str(tmp_path / "runs"), "logger": "csv",
              "budget": None}
    (tmp_path / "run.yaml").write_text(yaml.safe_dump(config))
    lines = run_with_progress("train", "--config", tmp_path / "run.yaml")
    assert {"train", "validate"} <= {parse(line)[0] for line in lines}
    assert any("epoch=2/2" in line for line in lines)
    shown = percentages(lines)
    assert shown == sorted(shown) and shown[-1] == 100.0 and min(shown) < 10


def test_staged_outputs_move_into_place_only_on_commit(tmp_path):
    """The provider's staging (no QGIS needed): earlier files stay until commit; discard leaves them as they
    were; commit replaces them and keeps the STAC item's links right across folders."""
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    old = {tmp_path / "a" / "lc.tif": b"old raster", tmp_path / "b" / "lc.gpkg": b"old polygons"}
    for path, data in old.items():
        path.write_bytes(data)
    staged = StagedOutputs([tmp_path / "a" / "lc.tif", tmp_path / "b" / "lc.gpkg"])
    Path(staged.path(tmp_path / "a" / "lc.tif")).write_bytes(b"new raster")
    staged.discard()
    assert {p: p.read_bytes() for p in old} == old and sorted(os.listdir(tmp_path / "a")) == ["lc.tif"]
    staged = StagedOutputs([tmp_path / "a" / "lc.tif", tmp_path / "b" / "lc.gpkg"])
    raster = Path(staged.path(tmp_path / "a" / "lc.tif"))
    vector = Path(staged.path(tmp_path / "b" / "lc.gpkg"))
    raster.write_bytes(b"new raster")
    vector.write_bytes(b"new polygons")
    (raster.parent / ".lc.geoseg-lock").write_text("x")
    item = raster.with_suffix(".stac.json")
    item.write_text('{"assets": {"polygons": {"href": "%s"}}}' % os.path.relpath(vector, raster.parent))
    staged.commit()
    assert (tmp_path / "a" / "lc.tif").read_bytes() == b"new raster"
    assert (tmp_path / "b" / "lc.gpkg").read_bytes() == b"new polygons"
    assert sorted(os.listdir(tmp_path / "a")) == ["lc.stac.json", "lc.tif"]
    assert '"href": "../b/lc.gpkg"' in (tmp_path / "a" / "lc.stac.json").read_text()
