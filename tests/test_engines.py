"""Prediction engines: torch, ONNX Runtime fp32, int8 and adaptive each give one class raster whatever the
blocking; exported models are cached by the checkpoint's content; auto's choice is said in the summary."""

from __future__ import annotations

import json

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


def test_auto_measures_the_engines_once_and_takes_the_fastest_that_keeps_fp32s_classes(
        rgb_scene, tiny_checkpoint, tmp_path, capsys, monkeypatch):
    from geoseg.io.grid import ChipGrid
    from geoseg.models.engine_speed import AGREEMENT, FASTER, NAMES

    monkeypatch.delenv("GEOSEG_ENGINE")
    first = predict_scene(rgb_scene, tiny_checkpoint, tmp_path / "auto.tif")
    out = capsys.readouterr().out
    assert "measuring the engines for this model on this CPU (once)" in out
    [kept] = engine_folder(load_checkpoint(tiny_checkpoint)).glob("*-auto-*-default.json")
    document = json.loads(kept.read_text())
    ms, start, agreement = document["ms_per_mpx"], document["start_s"], document["agreement"]
    bf16 = autocast_dtype(torch.device("cpu"), "auto") is not None
    assert set(ms) == set(start) == {"onnx", "adaptive"} | ({"torch"} if bf16 else set())
    assert document["tile"] == 256  # the largest default tile of a local model on 64 px chips
    assert all(0.1 < seconds < 120 for seconds in start.values())  # a fresh process each: real starts
    # the rule, applied here to the numbers kept and this scene's tiles: ONNX Runtime fp32 unless another
    # is as right and faster, start included
    with rasterio.open(tmp_path / "auto.tif") as ds:
        tile, overlap = int(ds.tags()["tile"]), int(ds.tags()["overlap"])
    megapixels = len(ChipGrid.for_scene(200, 150, tile, overlap)) * tile * tile / 1e6
    seconds = {kind: start[kind] + ms[kind] * megapixels / 1000 for kind in ms}
    expected = "onnx"
    for kind in ms:
        if agreement[kind] >= AGREEMENT and seconds[kind] * FASTER <= seconds[expected]:
            expected = kind
    assert first.engine == NAMES[expected]
    assert (f"engine {first.engine}: measured on this CPU for {megapixels:.1f} Mpx of 256 px tiles, "
            f"{seconds[expected]:.1f} s") in out
    made = kept.stat().st_mtime_ns
    again = predict_scene(rgb_scene, tiny_checkpoint, tmp_path / "again.tif")
    assert "measuring" not in capsys.readouterr().out  # read, not measured again
    assert kept.stat().st_mtime_ns == made
    assert again.engine == first.engine
    predict_scene(rgb_scene, tiny_checkpoint, tmp_path / "tile.tif", PredictOptions(tile=96))
    assert "measuring the engines" in capsys.readouterr().out  # another tile: measured for it
    tile_96 = kept.with_name(kept.name.replace("-default.json", "-96.json"))
    assert json.loads(tile_96.read_text())["tile"] == 96
    kept.write_text(json.dumps({**document, "version": 2}))  # an older measurement: measured again
    predict_scene(rgb_scene, tiny_checkpoint, tmp_path / "damaged.tif")
    assert "measuring the engines" in capsys.readouterr().out
    assert json.loads(kept.read_text())["version"] == 3


def test_auto_predicts_in_torch_where_no_export_can_be_kept_beside_the_model(rgb_scene, tiny_checkpoint,
                                                                            tmp_path, monkeypatch):
    monkeypatch.delenv("GEOSEG_ENGINE")
    engine_folder(load_checkpoint(tiny_checkpoint)).write_text("a file where the folder would go")
    result = predict_scene(rgb_scene, tiny_checkpoint, tmp_path / "out.tif")
    assert result.engine.startswith("torch") and (tmp_path / "out.tif").exists()
    reference = tmp_path / "torch.tif"
    predict_scene(rgb_scene, tiny_checkpoint, reference, PredictOptions(engine="torch"))
    assert np.array_equal(classes(tmp_path / "out.tif"), classes(reference))


def test_auto_takes_another_engine_only_where_it_keeps_fp32s_classes_and_is_faster(rgb_scene,
                                                                                  tiny_checkpoint):
    import time

    from geoseg.models.engine_speed import measure
    from geoseg.models.engines import _calibration_chips
    from geoseg.models.onnx_runtime import OnnxModel

    ckpt = load_checkpoint(tiny_checkpoint)
    fp32 = select_engine(ckpt, "onnx").prepare(rgb_scene).checkpoint.path
    int8 = select_engine(ckpt, "int8").prepare(rgb_scene).checkpoint.path
    exact, fast = OnnxModel(fp32), OnnxModel(int8)
    chips = _calibration_chips(ckpt, rgb_scene, 16, at_random=True)

    def slowed(forward, seconds):
        def run(x):
            time.sleep(seconds)
            return forward(x)
        return run

    # the same classes, 20 ms a chip faster than the reference, the same start: taken
    late, timed = slowed(exact.probabilities, 0.02), chips[:4]
    same_start = {"onnx": 1.0, "torch": 1.0, "adaptive": 1.0}
    taken = measure({"onnx": late, "torch": exact.probabilities}, chips, timed, same_start)
    assert taken.choose(1.0) == "torch" and taken.agreement["torch"] == 1.0
    per_mpx = 20 / (64 * 64 / 1e6)  # the 20 ms sleep, in ms a megapixel of 64 px tiles
    assert taken.tile == 64 and taken.ms_per_mpx["onnx"] > taken.ms_per_mpx["torch"] + 0.8 * per_mpx
    # the same, starting 4 s later: taken for a large scene only, where its speed makes up for its start
    late_start = measure({"onnx": late, "torch": exact.probabilities}, chips, timed,
                         {"onnx": 1.0, "torch": 5.0})
    onnx, bf16 = (late_start.ms_per_mpx[k] / 1000 for k in ("onnx", "torch"))  # seconds a megapixel
    small, large = 0.1, 2 * (5.0 * 1.1 - 1.0) / (onnx - 1.1 * bf16)  # twice where torch starts to pay
    assert late_start.choose(small) == "onnx" and late_start.choose(large) == "torch"
    assert "(5.0 s start + " in late_start.reason("onnx", small)
    # the same classes, slower: not taken
    slower = measure({"onnx": exact.probabilities, "torch": late}, chips, timed, same_start)
    assert slower.choose(1.0) == "onnx" and slower.choose(1000.0) == "onnx"
    # faster but other classes (int8 on this untrained model): not taken, and the reason says why
    wrong = measure({"onnx": late, "adaptive": fast.probabilities}, chips, timed, same_start)
    reference = np.stack([exact.probabilities(c[None])[0].argmax(0) for c in chips])
    agree = np.mean(np.stack([fast.probabilities(c[None])[0].argmax(0) for c in chips]) == reference)
    assert wrong.agreement["adaptive"] == pytest.approx(agree) and agree < 0.999
    assert wrong.choose(1.0) == "onnx" and wrong.choose(1000.0) == "onnx"
    assert "of fp32's classes" in wrong.reason("onnx", 1.0)


GOOD_CHOICE = {"format": "geoseg-engine-choice", "version": 3, "tile": 512,
               "ms_per_mpx": {"onnx": 700.0, "torch": 400.0}, "start_s": {"onnx": 1.0, "torch": 4.5},
               "agreement": {"onnx": 1.0, "torch": 0.9995}}


@pytest.mark.parametrize("change", [
    {"format": "other"}, {"version": 1}, {"version": 2}, {"tile": 0}, {"tile": 512.5}, {"tile": True},
    {"tile": None},
    {"ms_per_mpx": {"onnx": 12.0, "torch": float("nan")}}, {"ms_per_mpx": {"onnx": 12.0, "torch": -1}},
    {"ms_per_mpx": {"onnx": 12.0, "torch": True}}, {"agreement": {"onnx": 1.0, "torch": 1.5}},
    {"agreement": {"onnx": 1.0}}, {"ms_per_mpx": {"onnx": 1.0, "torch": 1.0, "evil": 0.1}},
    {"ms_per_mpx": "fast"}, {"start_s": {"onnx": 1.0, "torch": 1e6}}, {"start_s": {"torch": 1.0}},
    {"start_s": None},
])
def test_autos_kept_measurement_is_read_field_by_field(tmp_path, change):
    from geoseg.models.engine_speed import read_choice

    path = tmp_path / "choice.json"
    path.write_text(json.dumps(GOOD_CHOICE))
    kept = read_choice(path)
    assert kept.choose(1.0) == "onnx" and kept.choose(100.0) == "torch"  # 4.5 s start + 0.4 s/Mpx
    path.write_text(json.dumps({**GOOD_CHOICE, **change}))
    assert read_choice(path) is None  # measured again
    path.write_bytes(b"\x80 not json")
    assert read_choice(path) is None


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


def test_auto_needs_no_torch_once_measured_where_it_took_an_onnx_runtime_engine(rgb_scene, tiny_checkpoint,
                                                                                  tmp_path):
    first = _predict_in_a_fresh_process(rgb_scene, tiny_checkpoint, tmp_path / "first.tif", "auto")
    assert first["torch"]  # measuring: the export and, where the CPU has bf16, torch's own engine
    again = _predict_in_a_fresh_process(rgb_scene, tiny_checkpoint, tmp_path / "again.tif", "auto")
    assert again["engine"] == first["engine"]
    assert (again["torch"] == []) == (again["engine"] != "torch-bf16")
    assert np.array_equal(classes(tmp_path / "first.tif"), classes(tmp_path / "again.tif"))
