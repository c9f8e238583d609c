"""The per-pixel baseline: perfect where classes differ by colour, reported beside the network in training,
saved as a model geoseg predict runs with the network's block invariance."""

from __future__ import annotations

import json

import numpy as np
import pytest
import rasterio
import torch

from geoseg.inference.predict import PredictOptions, predict_scene
from geoseg.models.baseline import TreeEnsemble
from geoseg.models.checkpoint import load_checkpoint
from geoseg.training.config import parse_config
from geoseg.training.trainer import train, train_baseline

from conftest import TINY_MODEL, write_raster

CLASSES = [{"code": 1, "name": "water", "color": "#0000ff"},
           {"code": 2, "name": "forest", "color": "#00ff00"},
           {"code": 3, "name": "urban", "color": "#ff0000"}]


def colour_scene(tmp_path):
    """Three classes told apart by colour alone (with sensor noise), in irregular regions."""
    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:160, 0:160]
    codes = np.where(np.sin(x / 17.0) + np.cos(y / 13.0) > 0.4, 1, np.where(x + 0.5 * y < 110, 2, 3))
    colours = np.array([[0, 0, 0], [30, 60, 150], [40, 130, 50], [170, 160, 150]])
    image = np.clip(colours[codes].transpose(2, 0, 1) + rng.normal(0, 6, (3, 160, 160)), 1, 255)
    write_raster(tmp_path / "s.tif", image.astype(np.uint8))
    write_raster(tmp_path / "s_labels.tif", codes.astype(np.uint8), nodata=255)
    (tmp_path / "m.csv").write_text("image,label,split\ns.tif,s_labels.tif,train\ns.tif,s_labels.tif,val\n")
    return tmp_path / "s.tif", codes


def config(tmp_path, **keys):
    model = {**TINY_MODEL, "classes": 3}
    return parse_config({"manifest": "m.csv", "classes": CLASSES, "model_config": model,
                         "chip_size": 64, "chips_per_epoch": 8, "batch_size": 4, "epochs": 1,
                         "num_workers": 0, "output_dir": "runs", "logger": "csv", **keys}, tmp_path)


def test_the_baseline_is_perfect_on_colour_classes_and_predicts_through_geoseg(tmp_path):
    scene, codes = colour_scene(tmp_path)
    path, result = train_baseline(config(tmp_path))
    assert result.scores["miou"] == 1.0
    assert load_checkpoint(path).architecture == "PixelBaseline"
    rasters = []
    for cells in (1, 3):
        out = tmp_path / f"map_{cells}.tif"
        predict_scene(scene, path, out, PredictOptions(block_chips=cells))
        with rasterio.open(out) as src:
            rasters.append(src.read(1))
    assert np.array_equal(rasters[0], rasters[1])  # the network's block invariance holds
    assert (rasters[0] == codes).mean() == 1.0


def test_training_reports_the_baseline_beside_the_network(tmp_path, capsys):
    colour_scene(tmp_path)
    result = train(config(tmp_path))
    rows = json.loads((result.run_dir / "metrics.json").read_text())
    assert rows[0]["baseline_val_miou"] == 1.0 and rows[0]["baseline_val_iou_urban"] == 1.0
    assert "val_miou" in rows[0]
    assert "baseline (per-pixel gradient boosting" in capsys.readouterr().out
    assert "baseline_val_miou" in (result.run_dir / "metrics.csv").read_text().splitlines()[0]


def test_labels_of_one_class_give_a_baseline_of_that_class():
    """Training chips labelled with a single class (a first digitising session): the baseline predicts it."""
    from sklearn.ensemble import HistGradientBoostingClassifier

    from geoseg.models.baseline import PixelBaselineModel, pixel_features

    x = torch.rand(1, 3, 16, 16)
    features = pixel_features(x)[0].reshape(12, -1).T.numpy()
    classifier = HistGradientBoostingClassifier(max_iter=5).fit(features, np.full(len(features), 2))
    logp = PixelBaselineModel(TreeEnsemble.from_classifier(classifier, 12), 4)(x)
    assert logp.shape == (1, 4, 16, 16) and (logp.argmax(1) == 2).all()


@pytest.mark.parametrize("labels", [2, 3, 5])
def test_the_trees_rebuilt_from_the_checkpoints_arrays_give_scikit_learns_probabilities(labels):
    """The baseline is stored as arrays, not a pickle: rebuilt from them (through the checks), it answers
    exactly what the fitted classifier answers, for two classes (one tree an iteration) and more."""
    from sklearn.ensemble import HistGradientBoostingClassifier

    rng = np.random.default_rng(labels)
    x = rng.normal(size=(3000, 12))
    x[rng.random(x.shape) < 0.01] = np.nan  # missing values take the side the tree learnt
    y = np.digitize(x[:, 0] + 0.5 * np.nan_to_num(x[:, 1]), np.linspace(-1, 1, labels - 1)) * 2
    classifier = HistGradientBoostingClassifier(max_iter=20, random_state=0).fit(x, y)
    saved = TreeEnsemble.from_classifier(classifier, 12).to_tensors()
    rebuilt = TreeEnsemble.from_tensors(saved, 12, 2 * labels)
    fresh = rng.normal(size=(500, 12))
    fresh[::7, 3] = np.nan
    assert np.allclose(rebuilt.predict_proba(fresh), classifier.predict_proba(fresh), rtol=0, atol=1e-12)
    assert list(rebuilt.classes) == list(classifier.classes_)


def tree_arrays():
    from sklearn.ensemble import HistGradientBoostingClassifier

    rng = np.random.default_rng(0)
    x = rng.normal(size=(500, 12))
    classifier = HistGradientBoostingClassifier(max_iter=3).fit(x, (x[:, 0] > 0) + (x[:, 1] > 0))
    return TreeEnsemble.from_classifier(classifier, 12).to_tensors()


@pytest.mark.parametrize("damage, says", [
    (lambda t: t["nodes.left"].fill_(0), "nodes.left must point to a later node"),
    (lambda t: t["nodes.right"].add_(10_000), "nodes.right must point to a later node"),
    (lambda t: t["nodes.feature_idx"].fill_(12), "feature_idx must be below 12"),
    (lambda t: t["nodes.is_leaf"].fill_(7), "must be 0 or 1"),
    (lambda t: t["classes"].fill_(9), "increasing class indices below 3"),
    (lambda t: t.update(tree_sizes=t["tree_sizes"] + 1), "must hold the"),
    (lambda t: t.update(baseline=t["baseline"].float()), "state_dict.baseline must be a torch.float64"),
    (lambda t: t.pop("nodes.value"), "exactly the tensors"),
])
def test_damaged_tree_arrays_are_refused_before_any_tree_is_built(damage, says):
    """Cycles, out-of-range children or features would make scikit-learn's compiled walk loop or read out of
    bounds: each is refused with the field's name."""
    arrays = tree_arrays()
    damage(arrays)
    with pytest.raises(ValueError, match=says):
        TreeEnsemble.from_tensors(arrays, 12, 3)
