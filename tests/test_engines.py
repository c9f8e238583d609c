"""Prediction engines: torch, ONNX Runtime fp32, int8 and adaptive each give one class raster whatever the
blocking; exported models are cached by the checkpoint's content; auto's choice is said in the summary."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch

from geoseg.inference.predict import PredictOptions, predict_scene
from geoseg.models.checkpoint import autocast_dtype, load_checkpoint, save_checkpoint
from geoseg.models.engines import engine_folder, select_engine


def classes(path) -> np.ndarray:
    with rasterio.open(path) as src:
        return src.read(1)


@pytest.mark.parametrize("engine", ["torch", "onnx", "int8", "adaptive"])
def test_each_engine_gives_one_class_raster_for_every_block_size(engine, rgb_scene, tiny_checkpoint,
                                                                 tmp_path):
    rasters = []
    for cells in (1, 2, 5):
        out = tmp_path / f"{engine}_{cells}.tif"
        predict_scene(rgb_scene, tiny_checkpoint, out, PredictOptions(engine=engine, block_chips=cells))
        rasters.append(classes(out))
        with rasterio.open(out) as src:
            expected = {"torch": "torch", "onnx": "onnx-fp32", "int8": "onnx-int8",
                        "adaptive": "onnx-int8+fp32"}
            assert src.tags()["engine"].startswith(expected[engine])
    assert all(np.array_equal(rasters[0], r) for r in rasters[1:])
    assert (rasters[0] != 255).sum() > 0


def test_exported_models_are_cached_by_the_checkpoints_content(rgb_scene, tiny_checkpoint):
    ckpt = load_checkpoint(tiny_checkpoint)
    first = select_engine(ckpt, "int8", "auto").prepare(rgb_scene).checkpoint.path
    made = {p.name: p.stat().st_mtime_ns for p in engine_folder(ckpt).iterdir()}
    assert sorted(name.split("-", 1)[1] for name in made) == ["calibration.npz", "fp32.onnx", "int8.onnx"]
    again = select_engine(load_checkpoint(tiny_checkpoint), "int8", "auto").prepare(rgb_scene).checkpoint.path
    assert again == first and {p.name: p.stat().st_mtime_ns for p in engine_folder(ckpt).iterdir()} == made
    with np.load(next(engine_folder(ckpt).glob("*calibration.npz"))) as z:
        assert z["chips"].shape == (8, 3, 64, 64)  # calibration chips kept with the model
    weights = ckpt.build().state_dict()  # other weights, same file name: another model
    ckpt.state_dict = {k: v + 0.01 if v.is_floating_point() else v for k, v in weights.items()}
    save_checkpoint(ckpt, tiny_checkpoint)
    other = select_engine(load_checkpoint(tiny_checkpoint), "onnx", "auto").prepare(rgb_scene).checkpoint.path
    assert other.name.split("-")[0] != first.name.split("-")[0]


def test_auto_says_which_engine_it_chose(rgb_scene, tiny_checkpoint, tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("GEOSEG_ENGINE")
    flags = set(" ".join(line.split(":", 1)[1] for line in Path("/proc/cpuinfo").read_text().splitlines()
                         if line.startswith("flags")).split())
    if flags & {"avx512_bf16", "amx_bf16"}:  # the CPU computes in bf16
        expected = "engine torch-bf16: bf16 on this CPU"
    elif not flags & {"avx512f", "avx512bw"} and not Path("/dev/nvidia0").exists():  # no bf16 path at all
        expected = "engine onnx-fp32: no bf16 on this CPU: ONNX Runtime fp32 is the faster fp32 engine"
    else:
        pytest.skip("AVX-512 without native bf16: torch decides, nothing independent to compare with")
    predict_scene(rgb_scene, tiny_checkpoint, tmp_path / "auto.tif")
    assert expected in capsys.readouterr().out


def test_an_exports_optimised_graph_is_saved_once_and_gives_the_same_logits(rgb_scene, tiny_checkpoint,
                                                                             tmp_path):
    from geoseg.models.onnx_runtime import onnx_session, optimised_copy

    choice = select_engine(load_checkpoint(tiny_checkpoint), "onnx", "auto")
    exported = choice.prepare(rgb_scene).checkpoint.path
    saved = optimised_copy(exported)
    capability = torch.backends.cpu.get_cpu_capability().lower()
    assert saved.parent == exported.parent and f"-{capability}" in saved.name
    saved.unlink(missing_ok=True)
    x = {"input": np.random.default_rng(0).normal(size=(2, 3, 64, 64)).astype(np.float32)}
    online = onnx_session(exported).run(["logits"], x)[0]
    assert saved.stat().st_size > 0
    made = saved.stat().st_mtime_ns
    offline = onnx_session(exported)
    assert saved.stat().st_mtime_ns == made  # loaded, not made again
    assert np.allclose(offline.run(["logits"], x)[0], online, atol=1e-5)
    assert np.array_equal(offline.run(["logits"], x)[0].argmax(1), online.argmax(1))
    saved.write_bytes(b"not a model")  # damaged: made again from the export
    assert np.allclose(onnx_session(exported).run(["logits"], x)[0], online, atol=1e-5)
    assert saved.stat().st_size > 100
    own = tmp_path / "mine" / "model.onnx"  # a user's own ONNX file: nothing is written beside it
    own.parent.mkdir()
    own.write_bytes(exported.read_bytes())
    assert optimised_copy(own) is None
    onnx_session(own)
    assert [p.name for p in own.parent.iterdir()] == ["model.onnx"]


#: Run in a fresh process: predict, then list the torch modules imported.
TORCH_FREE = """
import json, sys
from geoseg.inference.predict import PredictOptions, predict_scene
result = predict_scene(sys.argv[1], sys.argv[2], sys.argv[3], PredictOptions(engine=sys.argv[4]))
torch = sorted(m for m in sys.modules if m.split(".")[0] == "torch")
print(json.dumps({"engine": result.engine, "torch": torch}))
"""


def _predict_in_a_fresh_process(scene, checkpoint, out, engine: str, env: dict | None = None) -> dict:
    import json
    import os
    import subprocess
    import sys

    env = {k: v for k, v in {**os.environ, **(env or {})}.items() if k != "GEOSEG_ENGINE"}
    r = subprocess.run([sys.executable, "-c", TORCH_FREE, str(scene), str(checkpoint), str(out), engine],
                       capture_output=True, text=True, env=env, check=True)
    return json.loads(r.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("engine", ["onnx", "int8", "adaptive"])
def test_a_cached_export_predicts_without_importing_torch(engine, rgb_scene, tiny_checkpoint, tmp_path):
    first = _predict_in_a_fresh_process(rgb_scene, tiny_checkpoint, tmp_path / "first.tif", engine)
    assert first["torch"]  # the first prediction exports the checkpoint (torch), once
    again = _predict_in_a_fresh_process(rgb_scene, tiny_checkpoint, tmp_path / "again.tif", engine)
    assert again["torch"] == [] and again["engine"] == first["engine"]
    assert np.array_equal(classes(tmp_path / "first.tif"), classes(tmp_path / "again.tif"))
    with rasterio.open(tmp_path / "again.tif") as src:  # the outputs still name the checkpoint itself
        assert src.tags()["checkpoint"] == str(tiny_checkpoint.resolve())


def test_auto_needs_no_torch_only_where_the_cpu_certainly_lacks_bf16(rgb_scene, tiny_checkpoint, tmp_path):
    from geoseg.models.hardware import may_have_bf16, may_have_gpu

    _predict_in_a_fresh_process(rgb_scene, tiny_checkpoint, tmp_path / "first.tif", "onnx")  # cached
    auto = _predict_in_a_fresh_process(rgb_scene, tiny_checkpoint, tmp_path / "auto.tif", "auto")
    certain = not may_have_bf16() and not may_have_gpu()
    assert (auto["torch"] == []) == certain
    bf16 = autocast_dtype(torch.device("cpu"), "auto") is not None
    assert auto["engine"] == ("torch-bf16" if bf16 else "onnx-fp32")  # the same choice as torch's check

