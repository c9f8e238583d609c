"""Adaptive precision: int8 for every chip, fp32 again for the chips its calibrated rule marks; the rule meets
its target on the check chips with the fewest chips recomputed; its model file is data, checked field by
field."""

from __future__ import annotations

import json

import numpy as np
import pytest
import rasterio

from geoseg.errors import CheckpointError
from geoseg.inference.predict import PredictOptions, predict_scene
from geoseg.models import adaptive
from geoseg.models.adaptive import MARGINS, calibrate
from geoseg.models.checkpoint import load_checkpoint
from geoseg.models.engines import _calibration_chips, engine_folder, select_engine
from geoseg.models.onnx_runtime import OnnxModel


def classes(path) -> np.ndarray:
    with rasterio.open(path) as src:
        return src.read(1)


@pytest.fixture
def adaptive_file(rgb_scene, tiny_checkpoint):
    """The tiny checkpoint's adaptive model file, made as prediction makes it."""
    return select_engine(load_checkpoint(tiny_checkpoint), "adaptive").prepare(rgb_scene).checkpoint.path


def with_rule(path, margin, share, name):
    """A copy of the adaptive model file ``path`` (beside it) with another rule."""
    document = json.loads(path.read_text())
    document.update(margin=margin, share=share)
    other = path.with_name(name)
    other.write_text(json.dumps(document))
    return other


def test_the_chips_the_rule_marks_are_predicted_in_fp32_and_the_others_in_int8(rgb_scene, tiny_checkpoint,
                                                                              adaptive_file, tmp_path):
    def predict(model, engine="auto"):
        out = tmp_path / f"{model.stem}-{engine}.tif"
        result = predict_scene(rgb_scene, model, out, PredictOptions(engine=engine, block_chips=2))
        return classes(out), result.engine

    fp32, _ = predict(tiny_checkpoint, "onnx")
    int8, _ = predict(tiny_checkpoint, "int8")
    assert not np.array_equal(fp32, int8)  # else nothing below could tell the engines apart
    every = with_rule(adaptive_file, 1.0, 0.0, "every.adaptive")    # every pixel uncertain: all chips again
    never = with_rule(adaptive_file, 0.0, 1.0, "never.adaptive")    # none uncertain: int8 alone
    every_classes, engine = predict(every)
    assert engine == "onnx-int8+fp32" and np.array_equal(every_classes, fp32)
    assert np.array_equal(predict(never)[0], int8)
    some, engine = predict(tiny_checkpoint, "adaptive")
    assert engine == "onnx-int8+fp32" and (some == fp32).mean() >= (int8 == fp32).mean()


def test_each_chip_is_int8s_or_fp32s_as_its_share_of_uncertain_pixels_says(rgb_scene, tiny_checkpoint,
                                                                          adaptive_file):
    fast_path, exact_path, rule = adaptive.read_adaptive_model(adaptive_file)
    fast, exact = OnnxModel(fast_path), OnnxModel(exact_path)
    chips = _calibration_chips(load_checkpoint(tiny_checkpoint), rgb_scene, 16, at_random=True)
    p_fast = np.concatenate([fast.probabilities(c[None]) for c in chips])
    p_exact = np.concatenate([exact.probabilities(c[None]) for c in chips])
    ordered = np.sort(p_fast, axis=1)
    margins = (ordered[:, -1] - ordered[:, -2]).reshape(len(chips), -1)
    margin = float(np.median(margins))  # the rule as given, so that some chips are marked and some not
    shares = (margins < margin).mean(1)
    share = float(np.median(shares))
    model = adaptive.AdaptiveModel(fast, exact, adaptive.RecomputeRule(margin, share))
    got = np.concatenate([model.probabilities(chips[i:i + 4]) for i in range(0, len(chips), 4)])
    again = shares > share
    assert 0 < again.sum() < len(chips) and model.recomputed == again.sum() and model.chips == len(chips)
    assert np.array_equal(got[again], p_exact[again])
    assert np.allclose(got[~again], p_fast[~again], atol=1e-6)  # int8 in batches of 4: same to rounding


def test_calibration_meets_its_target_with_the_fewest_recomputed_chips(rgb_scene, tiny_checkpoint,
                                                                       adaptive_file, monkeypatch):
    fast_path, exact_path, _ = adaptive.read_adaptive_model(adaptive_file)
    fast, exact = OnnxModel(fast_path), OnnxModel(exact_path)
    chips = _calibration_chips(load_checkpoint(tiny_checkpoint), rgb_scene, 24, at_random=True)
    # each chip alone, computed here: its int8 and fp32 classes and int8's top-two margins
    p_fast = np.concatenate([fast.probabilities(c[None]) for c in chips])
    p_exact = np.concatenate([exact.probabilities(c[None]) for c in chips])
    differs = (p_fast.argmax(1) != p_exact.argmax(1)).reshape(len(chips), -1).sum(1)
    ordered = np.sort(p_fast, axis=1)
    margins = (ordered[:, -1] - ordered[:, -2]).reshape(len(chips), -1)
    assert differs.sum() > 0
    for target in (0.0, differs.sum() / margins.size / 2, 1.0):
        monkeypatch.setattr(adaptive, "TARGET_DISAGREEMENT", target)
        found = calibrate(fast, exact, chips)
        # every rule on the grid: the fewest chips recomputed with at most the target left
        fewest = min(np.mean(shares > share)
                     for m in MARGINS for shares in [(margins < m).mean(1)]
                     for share in [0.0, *shares]
                     if differs[shares <= share].sum() <= target * margins.size)
        shares = (margins < found.rule.margin).mean(1)
        kept = shares <= found.rule.share
        assert found.recomputed_share == pytest.approx(np.mean(~kept)) == pytest.approx(fewest)
        assert differs[kept].sum() <= target * margins.size
        assert found.residual_disagreement == pytest.approx(differs[kept].sum() / margins.size)
        assert found.int8_disagreement == pytest.approx(differs.sum() / margins.size)
    assert found.recomputed_share == 0.0  # target 1.0: nothing to recompute


def test_the_calibrated_rule_is_kept_with_the_cached_engines(rgb_scene, tiny_checkpoint, adaptive_file):
    document = json.loads(adaptive_file.read_text())
    assert adaptive_file.parent == engine_folder(load_checkpoint(tiny_checkpoint))
    assert document["check"]["chips"] == 128 and document["check"]["residual_disagreement"] <= 0.0005
    made = {p.name: p.stat().st_mtime_ns for p in adaptive_file.parent.iterdir()}
    again = select_engine(load_checkpoint(tiny_checkpoint), "adaptive").prepare(rgb_scene).checkpoint.path
    assert again == adaptive_file and {p.name: p.stat().st_mtime_ns for p in again.parent.iterdir()} == made


@pytest.mark.parametrize("change, what", [
    ({"format": "other"}, "'format' must be 'geoseg-adaptive'"),
    ({"version": 99}, "'version' must be 1"),
    ({"fast": "../../elsewhere.onnx"}, "'fast' must name an .onnx file in the same folder"),
    ({"exact": "/etc/model.onnx"}, "'exact' must name an .onnx file in the same folder"),
    ({"margin": 2.0}, "'margin' must be a number from 0 to 1"),
    ({"share": "all"}, "'share' must be a number from 0 to 1"),
    ({"share": float("nan")}, "'share' must be a number from 0 to 1"),
])
def test_an_adaptive_model_file_is_checked_field_by_field(adaptive_file, change, what):
    document = {**json.loads(adaptive_file.read_text()), **change}
    bad = adaptive_file.with_name("bad.adaptive")
    bad.write_text(json.dumps(document))
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(bad)
    assert str(err.value).startswith(f"{bad} is not a usable geoseg adaptive model: its {what}")
    assert "\n" not in str(err.value)


def test_an_adaptive_model_file_that_is_not_json_is_one_sentence(tmp_path):
    bad = tmp_path / "model.adaptive"
    bad.write_bytes(b"\x80\x04not json")
    with pytest.raises(CheckpointError, match="is not a usable geoseg adaptive model: it is not a JSON"):
        load_checkpoint(bad)
