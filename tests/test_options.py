"""Prediction's options are declared once (geoseg.inference.options): the CLI, the outputs' metadata, the
resume fingerprints and the QGIS algorithm follow the declarations, and fail here when they drift apart."""

import re
from dataclasses import replace
from pathlib import Path

import click
import pytest

from geoseg.cli import cli
from geoseg.inference.options import PredictOptions, VectorOptions, declared, described
from geoseg.inference.predict import _fingerprint, output_paths
from geoseg.io.grid import GeoGrid
from geoseg.io.raster import open_raster
from geoseg.models.checkpoint import load_checkpoint

ROLES = {"fingerprint", "outputs", "final", "where"}
ALGORITHMS = Path(__file__).resolve().parents[1] / "qgis_plugin" / "geoseg_provider" / "algorithms.py"
#: A value other than the default for each option, to see what it changes.
OTHER = {"tile": 96, "overlap": 3, "block_chips": 2, "batch_size": 3, "precision": "fp32", "engine": "onnx",
         "tta": "flips", "workers": 2, "threads": 1, "processes": True, "scheduler": "tcp://127.0.0.1:1",
         "confidence": True, "probabilities": "uint8", "cog": True, "bands": (3, 2, 1), "sampling": "native",
         "aoi": "aoi.gpkg", "acquired": "2024-06-01", "commit_seconds": 9.0}


def every_option():
    return [(cls, *d) for cls in (PredictOptions, VectorOptions) for d in declared(cls)]


def test_every_option_is_declared_with_help_and_a_resume_role():
    for cls, name, _, meta in every_option():
        assert meta["help"].endswith(".") and meta["resume"] in ROLES, name
        assert meta["flag"] is None or meta["flag"] == "--" + name.replace("_", "-"), name
    assert set(OTHER) == {f for f, *_ in declared(PredictOptions)}


def test_the_cli_offers_exactly_the_declared_options():
    params = {p.name: p for p in cli.commands["predict"].params if isinstance(p, click.Option)}
    for cls, name, default, meta in every_option():
        if meta["flag"] is None:
            assert name not in params, name
            continue
        p = params[name]
        assert p.opts == [meta["flag"]] and p.help == meta["help"] and p.default == default, name
        if meta["choices"]:
            assert list(p.type.choices) == list(meta["choices"]), name
        assert p.is_flag == (meta["kind"] == "flag"), name
    declared_flags = {meta["flag"] for *_, meta in every_option() if meta["flag"]}
    own = {"--output", "--model", "--raster", "--overwrite", "--resume", "--quiet", "--help"}
    assert {p.opts[0] for p in params.values() if p.opts[0].startswith("--")} - own == declared_flags


def test_the_outputs_metadata_records_the_described_options():
    options = PredictOptions(**{k: v for k, v in OTHER.items()})
    vector = VectorOptions(min_area=5.0, simplify=1.0, dissolve=True)
    wanted = {name for cls, name, _, meta in every_option() if meta["described"]}
    assert set(described(options, vector)) == wanted
    assert described(options, vector)["bands"] == [3, 2, 1]


@pytest.fixture
def fingerprint_of(tmp_path, rgb_scene, tiny_checkpoint):
    ckpt = load_checkpoint(tiny_checkpoint)
    with open_raster(rgb_scene) as src:
        grid = GeoGrid.from_dataset(src)
    (tmp_path / "aoi.gpkg").write_text("")

    def fingerprint(options: PredictOptions) -> dict:
        options = replace(options, aoi=str(tmp_path / options.aoi) if options.aoi else None)
        paths = output_paths(tmp_path / "out.tif", None, options, True)
        return _fingerprint(rgb_scene, ckpt, grid, list(options.bands or ckpt.bands), options.overlap or 8,
                            options, paths, options.engine)

    return fingerprint


def test_resume_fingerprints_exactly_the_options_declared_so(fingerprint_of):
    base = fingerprint_of(PredictOptions())
    for name, _, meta in declared(PredictOptions):
        changed = fingerprint_of(replace(PredictOptions(), **{name: OTHER[name]})) != base
        assert changed == (meta["resume"] in ("fingerprint", "outputs")), name


def test_the_qgis_algorithm_passes_only_declared_flags_and_offers_those_declared_for_it():
    text = ALGORITHMS.read_text(encoding="utf-8")
    predict = next(part for part in text.split("\nclass ") if part.startswith("PredictAlgorithm"))
    used = set(re.findall(r'"(--[a-z-]+)"', predict))
    flags = {meta["flag"] for *_, meta in every_option() if meta["flag"]}
    assert used - {"--model", "--overwrite", "--raster"} <= flags
    assert {meta["flag"] for *_, meta in every_option() if meta["qgis"]} <= used
