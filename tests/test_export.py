"""ONNX export: probabilities and logits as torch's, Deepness's metadata read the way Deepness reads it,
and the exported model predicting through geoseg."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import replace

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import rasterio
import torch

from geoseg.errors import CheckpointError, InputError
from geoseg.inference.predict import PredictOptions, predict_scene
from geoseg.models.checkpoint import load_checkpoint, save_checkpoint
from geoseg.models.export import export_onnx

from deepness_like import load_in_dock_widget, process_tile


@pytest.fixture
def exported(tiny_checkpoint, tmp_path):
    return export_onnx(tiny_checkpoint, tmp_path / "model.onnx")


def test_onnx_probabilities_and_logits_match_torch_on_random_chips(tiny_checkpoint, exported, tmp_path):
    model = load_checkpoint(tiny_checkpoint).build()
    x = torch.from_numpy(np.random.default_rng(0).normal(0, 1, (20, 3, 64, 64)).astype(np.float32))
    with torch.no_grad():
        expected = model(x)
    session = ort.InferenceSession(str(exported), providers=["CPUExecutionProvider"])
    assert [o.name for o in session.get_outputs()] == ["probabilities"]  # Deepness runs every output
    assert session.get_inputs()[0].shape == ["batch", 3, 64, 64]  # Deepness needs a fixed tile
    assert session.get_outputs()[0].shape == ["batch", 7, 64, 64]
    (probabilities,) = session.run(None, {"input": x.numpy()})
    assert np.abs(probabilities - torch.softmax(expected, 1).numpy()).max() < 1e-4
    dynamic = export_onnx(tiny_checkpoint, tmp_path / "dynamic.onnx", dynamic=True)
    session = ort.InferenceSession(str(dynamic), providers=["CPUExecutionProvider"])
    probabilities, logits = session.run(["probabilities", "logits"], {"input": x.numpy()})
    assert np.abs(logits - expected.numpy()).max() < 1e-3
    assert np.allclose(probabilities.sum(axis=1), 1, atol=1e-5)
    other = session.run(["logits"], {"input": x.numpy()[:2, :, :, :32]})[0]  # batch and size are dynamic
    assert other.shape == (2, 7, 64, 32)


def test_onnx_metadata_is_deepness_and_the_checkpoint(tiny_checkpoint, exported):
    """Every Deepness value is JSON, as Deepness parses it."""
    ckpt = load_checkpoint(tiny_checkpoint)
    meta = {p.key: p.value for p in onnx.load(str(exported)).metadata_props}
    deepness = {k: json.loads(v) for k, v in meta.items() if k not in ("geoseg", "geoseg_version")}
    assert deepness == {
        "model_type": "Segmentor", "class_names": {str(i): n for i, n in enumerate(ckpt.classes.names)},
        "tile_size": 64, "tiles_size": 64, "tiles_overlap": 12, "resolution": 50.0, "seg_thresh": 0.0,
        "seg_small_segment": 0, "standardization_mean": pytest.approx([120 / 255] * 3),
        "standardization_std": pytest.approx([60 / 255] * 3)}
    back = load_checkpoint(exported)
    for key in ("architecture", "model_config", "classes", "bands", "mean", "std", "chip_size", "resolution",
                "clip"):
        assert getattr(back, key) == getattr(ckpt, key), key


def test_deepness_loads_the_export_as_it_is_and_shows_the_models_argmax(tiny_checkpoint, exported, rgb_scene):
    """Deepness 0.6.5's readers (tests/deepness_like.py, written from its source) load the model: the dock
    widget fills tile size, resolution and overlap, no threshold, no median filter; a tile processed the
    Deepness way (uint8 RGB, /255, its standardisation) gives geoseg's classes (argmax of the checkpoint's
    probabilities on the normalised tile)."""
    shown = load_in_dock_widget(str(exported))
    assert (shown["tile"], shown["resolution_cm"], shown["overlap_percent"]) == (64, 50.0, 12)
    assert shown["threshold"] == 0 and shown["median"] == 0
    model = shown["model"]
    assert model.outputs_names == [list(load_checkpoint(tiny_checkpoint).classes.names)]
    with rasterio.open(rgb_scene) as src:
        tile = src.read(window=((60, 124), (80, 144)))
    (deepness,) = process_tile(model, np.transpose(tile, (1, 2, 0)), shown["threshold"], shown["median"])
    ckpt = load_checkpoint(tiny_checkpoint)
    x = (tile.astype(np.float32) - np.array(ckpt.mean, np.float32)[:, None, None]) / \
        np.array(ckpt.std, np.float32)[:, None, None]
    with torch.no_grad():
        geoseg_classes = ckpt.build()(torch.from_numpy(x[None])).argmax(1)[0].numpy()
    assert (deepness - 1 == geoseg_classes).mean() >= 0.999


def test_the_old_export_is_what_deepness_rejected(tiny_checkpoint, tmp_path):
    """The faithful readers fail the way Deepness failed on geoseg's earlier export (two outputs, dynamic
    height and width, bare text values), so the test above can fail."""
    dynamic = export_onnx(tiny_checkpoint, tmp_path / "dynamic.onnx", dynamic=True)
    with pytest.raises(Exception, match="square outputs|list index out of range|unexpected type"):
        load_in_dock_widget(str(dynamic))
    graph = onnx.load(str(dynamic))
    for entry in graph.metadata_props:
        if entry.key == "model_type":
            entry.value = "Segmentor"
    onnx.save(graph, str(tmp_path / "bare.onnx"))
    with pytest.raises(json.JSONDecodeError):
        load_in_dock_widget(str(tmp_path / "bare.onnx"))


def test_a_larger_tile_for_deepness(tiny_checkpoint, tmp_path, rgb_scene):
    """``--tile 128`` for a model trained on 64 px chips: Deepness gets 128 px tiles, geoseg reads the
    export's chip size as 128 and predicts with it."""
    path = export_onnx(tiny_checkpoint, tmp_path / "t128.onnx", tile=128)
    shown = load_in_dock_widget(str(path))
    assert shown["tile"] == 128 and shown["overlap_percent"] == 12
    assert load_checkpoint(path).chip_size == 128
    predict_scene(rgb_scene, path, tmp_path / "t128.tif", PredictOptions())
    with pytest.raises(InputError, match=r"--tile cannot change the 128 px chips of an exported ONNX model "
                                         r"\(t128.onnx\); predict with its checkpoint instead"):
        predict_scene(rgb_scene, path, tmp_path / "t256.tif", PredictOptions(tile=256))
    with pytest.raises(InputError, match="--tile must be a multiple of 32"):
        export_onnx(tiny_checkpoint, tmp_path / "bad.onnx", tile=100)


def test_an_export_rewritten_in_place_is_read_again(tiny_checkpoint, exported, tmp_path):
    """The exported model's checkpoint fields are read once per version of the file, not once per path."""
    assert load_checkpoint(exported).chip_size == 64
    ckpt = load_checkpoint(tiny_checkpoint)
    other = save_checkpoint(replace(ckpt, chip_size=96, bands=[3, 2, 1]), tmp_path / "other.ckpt")
    export_onnx(other, exported, overwrite=True)
    back = load_checkpoint(exported)
    assert (back.chip_size, back.bands, back.path) == (96, [3, 2, 1], exported)


def test_predict_with_the_onnx_model_gives_the_checkpoints_class_raster(rgb_scene, tiny_checkpoint, exported,
                                                                       tmp_path):
    """The same class raster as torch fp32 but where the two best classes are within float rounding of each
    other (the untrained test model has many such near-ties; ONNX Runtime sums in another order)."""
    options = PredictOptions(precision="fp32", probabilities="float16")
    predict_scene(rgb_scene, tiny_checkpoint, tmp_path / "torch.tif", options)
    predict_scene(rgb_scene, exported, tmp_path / "onnx.tif", options)
    with rasterio.open(tmp_path / "torch.tif") as a, rasterio.open(tmp_path / "onnx.tif") as b:
        differ = a.read(1) != b.read(1)
        assert b.tags()["checkpoint"].endswith("model.onnx")
    with rasterio.open(tmp_path / "torch_probabilities.tif") as p:
        top2 = np.sort(np.nan_to_num(p.read()), axis=0)[-2:]
    assert differ.mean() < 0.002
    assert (top2[1] - top2[0])[differ].max(initial=0) < 2e-3  # only near-ties differ


def test_export_from_the_command_line_and_a_foreign_onnx_model(tiny_checkpoint, tmp_path):
    r = subprocess.run([sys.executable, "-m", "geoseg", "export", str(tiny_checkpoint), "-o",
                        str(tmp_path / "m.onnx")], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    graph = onnx.load(str(tmp_path / "m.onnx"))
    del graph.metadata_props[:]
    onnx.save(graph, str(tmp_path / "foreign.onnx"))
    with pytest.raises(CheckpointError, match="without geoseg's metadata; export it with geoseg export"):
        load_checkpoint(tmp_path / "foreign.onnx")
