"""ONNX export: logits as torch's, Deepness's metadata, and the exported model predicting through geoseg."""

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

from geoseg.errors import CheckpointError
from geoseg.inference.predict import PredictOptions, predict_scene
from geoseg.models.checkpoint import load_checkpoint, save_checkpoint
from geoseg.models.export import export_onnx


@pytest.fixture
def exported(tiny_checkpoint, tmp_path):
    return export_onnx(tiny_checkpoint, tmp_path / "model.onnx")


def test_onnx_logits_match_torch_on_random_chips(tiny_checkpoint, exported):
    model = load_checkpoint(tiny_checkpoint).build()
    session = ort.InferenceSession(str(exported), providers=["CPUExecutionProvider"])
    x = torch.from_numpy(np.random.default_rng(0).normal(0, 1, (20, 3, 64, 64)).astype(np.float32))
    with torch.no_grad():
        expected = model(x).numpy()
    probabilities, logits = session.run(["probabilities", "logits"], {"input": x.numpy()})
    assert np.abs(logits - expected).max() < 1e-3
    assert np.allclose(probabilities.sum(axis=1), 1, atol=1e-5)  # what Deepness reads: softmax
    other = session.run(["logits"], {"input": x.numpy()[:2, :, :, :32]})[0]  # batch and size are dynamic
    assert other.shape == (2, 7, 64, 32)


def test_onnx_metadata_is_deepness_and_the_checkpoint(tiny_checkpoint, exported):
    ckpt = load_checkpoint(tiny_checkpoint)
    meta = {p.key: p.value for p in onnx.load(str(exported)).metadata_props}
    assert meta["model_type"] == "Segmentor"
    assert json.loads(meta["class_names"]) == {str(i): n for i, n in enumerate(ckpt.classes.names)}
    assert meta["tiles_size"] == "64" and meta["tiles_overlap"] == "12" and meta["resolution"] == "50.0"
    assert json.loads(meta["standardization_mean"]) == pytest.approx([120 / 255] * 3)
    assert json.loads(meta["standardization_std"]) == pytest.approx([60 / 255] * 3)
    back = load_checkpoint(exported)
    for key in ("architecture", "model_config", "classes", "bands", "mean", "std", "chip_size", "resolution",
                "clip"):
        assert getattr(back, key) == getattr(ckpt, key), key


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
