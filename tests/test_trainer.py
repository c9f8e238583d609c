"""Training: a DeepGlobe folder and polygons named by class end to end, resume, logging, sample panels."""

import csv
import json

import numpy as np
import pytest
import rasterio

from geoseg.errors import ConfigError
from geoseg.io.classes import DEEPGLOBE
from geoseg.training.trainer import train

from conftest import TINY_MODEL, deepglobe_folder, write_raster
from conftest import run_config as config

TIMING = ("train_chips_per_s", "val_chips_per_s", "val_seconds", "image_logging_seconds")


def without_timing(rows):
    return [{k: v for k, v in r.items() if k not in TIMING} for r in rows]


# --- DeepGlobe layout -----------------------------------------------------------------------------

def test_training_on_a_deepglobe_folder_warns_once_about_missing_georeferencing(tmp_path, recwarn):
    root = deepglobe_folder(tmp_path / "dg", n=5)
    cfg = config(tmp_path, root, epochs=1, downsize_res=64, split_fractions=[0.6, 0.4, 0.0])
    result = train(cfg)
    messages = [str(w.message) for w in recwarn if "no CRS" in str(w.message)]
    assert len(messages) == 1
    assert messages[0].startswith("5 scenes have no CRS (e.g. ") and messages[0].endswith(
        "_sat.jpg); they are used for training as they are (pixel grid only)")
    assert result.history[0]["val_miou"] >= 0
    from geoseg.models.checkpoint import load_checkpoint
    assert load_checkpoint(result.best).resolution is None  # pixels without a ground size


def test_resolution_and_downsize_res_are_exclusive(tmp_path):
    with pytest.raises(ConfigError, match="'resolution'"):
        config(tmp_path, "m.csv", resolution=1.0, downsize_res=256)


# --- resume, logging ------------------------------------------------------------------------------

def test_resume_continues_exactly(tmp_path, sample_dir):
    """2 epochs in one go = 1 epoch, stopped, then resumed for the second (schedule, sampling, weights
    included)."""
    manifest = sample_dir / "manifest.csv"
    keys = dict(lr_schedule="cosine", ce_weights="auto", rare_class_sampling=0.5, weight_averaging=0.9,
                band_jitter=0.08, scene_jitter=0.2)
    full = train(config(tmp_path, manifest, run_name="full", **keys))
    first = train(config(tmp_path, manifest, run_name="split", **keys), until_epoch=1)
    assert len(first.history) == 1
    resumed = train(config(tmp_path, manifest, run_name="split", **keys), resume=first.last)
    # as JSON: NaN (an IoU of a class absent from the validation chips) equals NaN there
    assert json.dumps(without_timing(resumed.history)) == json.dumps(without_timing(full.history))
    assert len(json.loads((resumed.run_dir / "metrics.json").read_text())) == 2
    steps = lambda run: list(csv.DictReader(open(run.run_dir / "steps.csv")))  # noqa: E731
    assert steps(resumed) == steps(full)
    assert [float(r["lr"]) for r in steps(full)] == sorted((float(r["lr"]) for r in steps(full)),
                                                           reverse=True)
    report = json.loads((full.run_dir / "class_weights.json").read_text())
    assert list(report) == DEEPGLOBE.names and report["unknown"]["median_frequency_weight"] == 0.0
    present = sorted(v["median_frequency_weight"] for v in report.values() if v["share"] > 0)
    assert present[1] == 1.0  # the median


def test_resume_from_a_checkpoint_of_other_classes_is_refused(tmp_path, sample_dir):
    run = train(config(tmp_path, sample_dir / "manifest.csv", epochs=1, run_name="r"))
    other = [{"code": c.code, "name": c.name if c.code else "built-up", "color": list(c.color),
              "ignore": c.ignore}
             for c in DEEPGLOBE.classes]
    with pytest.raises(ConfigError, match="was trained on classes urban, agriculture"):
        train(config(tmp_path, sample_dir / "manifest.csv", classes=other), resume=run.last)
    from geoseg.errors import CheckpointError
    with pytest.raises(CheckpointError, match="holds no training state"):
        train(config(tmp_path, sample_dir / "manifest.csv"), resume=run.best)


def test_sample_panels_every_k_epochs_and_their_cost_is_logged(tmp_path, sample_dir):
    run = train(config(tmp_path, sample_dir / "manifest.csv", epochs=3, sample_every=2, run_name="s"))
    assert sorted(p.name for p in (run.run_dir / "samples").iterdir()) == ["epoch_002.png", "epoch_003.png"]
    rows = json.loads((run.run_dir / "metrics.json").read_text())
    assert {"lr", "val_seconds", "image_logging_seconds", "train_chips_per_s",
            "val_chips_per_s"} <= set(rows[0])
    logging = [r["image_logging_seconds"] for r in rows]
    assert logging[0] < 1e-3 and logging[1] > logging[0]


def test_training_on_polygons_drawn_with_class_names(tmp_path):
    """Labels as an analyst draws them in QGIS: a GeoPackage whose text field names the classes."""
    import geopandas as gpd
    import shapely

    from conftest import UTM
    img = write_raster(tmp_path / "s.tif", np.random.default_rng(0).integers(1, 255, (3, 128, 128), np.uint8))
    with rasterio.open(img) as src:
        left, bottom, right, top = src.bounds
    mid = (left + right) / 2
    gpd.GeoDataFrame({"landcover": ["Water", "forest"]},
                     geometry=[shapely.box(left, bottom, mid, top), shapely.box(mid, bottom, right, top)],
                     crs=UTM).to_file(tmp_path / "drawn.gpkg")
    (tmp_path / "m.csv").write_text("image,label,split\ns.tif,drawn.gpkg,train\ns.tif,drawn.gpkg,val\n")
    result = train(config(tmp_path, tmp_path / "m.csv", epochs=1, label_field="landcover"))
    confusion = np.array(result.history[0]["val_confusion"])
    assert confusion.sum(1)[[3, 4]].tolist() == [64 * 64 * 2, 64 * 64 * 2] and confusion.sum() == 4 * 64 * 64


# --- sparse labels --------------------------------------------------------------------------------

THREE_CLASSES = [{"code": 1, "name": "urban", "color": "#ff0000"}, {"code": 2, "name": "forest",
                                                                    "color": "#00ff00"},
                 {"code": 3, "name": "water", "color": "#0000ff"}]


def sparse_polygons(tmp_path, names=("Urban", "forest", "WATER", "water")):
    """A 192 px scene whose polygons (text class names) cover parts of its left third only; the rest is not
    labelled."""
    import geopandas as gpd
    import shapely

    from conftest import UTM
    img = write_raster(tmp_path / "s.tif", np.random.default_rng(0).integers(1, 255, (3, 192, 192), np.uint8))
    with rasterio.open(img) as src:
        t = src.transform
    boxes = [(0, 0, 64, 40), (0, 40, 64, 80), (0, 80, 40, 150), (40, 100, 64, 192)]  # col0, row0, col1, row1
    geoms = [shapely.box(*(t * (c0, r1)), *(t * (c1, r0))) for c0, r0, c1, r1 in boxes]
    gpd.GeoDataFrame({"landcover": list(names)}, geometry=geoms, crs=UTM).to_file(tmp_path / "drawn.gpkg")
    (tmp_path / "m.csv").write_text("image,label,split\ns.tif,drawn.gpkg,train\ns.tif,drawn.gpkg,val\n")
    labelled = {"urban": 64 * 40, "forest": 64 * 40, "water": 40 * 70 + 24 * 92}
    return tmp_path / "m.csv", labelled


def sparse_config(tmp_path, manifest, **changes):
    model = {**TINY_MODEL, "classes": 3}
    return config(tmp_path, manifest, classes=THREE_CLASSES, model_config=model, ce_weights=None,
                  label_field="landcover", **changes)


def test_sparse_labels_draw_chips_where_labels_are(tmp_path):
    from geoseg.training.trainer import Trainer

    manifest, _ = sparse_polygons(tmp_path)
    for share in (0.0, 0.5):
        trainer = Trainer(sparse_config(tmp_path, manifest, chips_per_epoch=200,
                                        unlabelled_chips=share)).setup()
        dataset = trainer.train_loader.dataset
        empty = [not (dataset.read(spec)[1] != 255).any() for spec in trainer.train_sampler.epoch_chips()]
        if share == 0:
            assert sum(empty) == 0  # every chip holds labels
        else:  # chips drawn anywhere: some of them (2/3 of the scene is unlabelled) hold none
            assert 20 <= sum(empty) <= 100
    val = trainer.val_sampler.all_specs  # 3 × 3 grid chips of 64 px: only the left column holds labels
    assert sorted((s.row, s.col) for s in val) == [(0, 0), (64, 0), (128, 0)]


def test_sparse_labels_are_counted_and_the_rest_is_never_a_class(tmp_path, capsys):
    manifest, labelled = sparse_polygons(tmp_path)
    result = train(sparse_config(tmp_path, manifest, epochs=1, chips_per_epoch=4))
    confusion = np.array(result.history[0]["val_confusion"])
    assert confusion.sum(1).tolist() == [labelled["urban"], labelled["forest"], labelled["water"]]
    report = json.loads((result.run_dir / "labels.json").read_text())
    assert report["water"] == {"train_pixels": labelled["water"], "val_pixels": labelled["water"],
                               "train_polygons": 2, "val_polygons": 2}
    assert report["urban"]["train_polygons"] == 1
    out = capsys.readouterr().out
    assert "labels found" in out and "water" in out


def test_a_class_without_labels_stops_the_run(tmp_path):
    manifest, _ = sparse_polygons(tmp_path, names=("urban", "urban", "water", "water"))
    with pytest.raises(ConfigError, match=r"class 'forest' \(code 2\) has no labelled pixels in the"):
        train(sparse_config(tmp_path, manifest, epochs=1))


def test_a_class_with_labels_that_validation_never_saw_predicted_gets_one_warning_with_advice(tmp_path):
    """56 urban and 52 rangeland pixels in training, none predicted on validation: one warning names both and
    the remedies not already configured (the newcomer's map otherwise just held 0 % of them)."""
    import warnings

    from geoseg.errors import GeoSegWarning
    from geoseg.training.trainer import _warn_of_unpredicted_classes

    cfg = config(tmp_path, tmp_path / "m.csv", ce_weights=None)
    pixels = np.array([56, 5000, 52, 4000, 3000, 900, 0])
    confusion = np.zeros((7, 7), int)
    confusion[[1, 3, 4, 5], [1, 3, 4, 5]] = 100
    confusion[0, 1] = confusion[2, 3] = 20  # urban and rangeland pixels predicted as something else
    history = [{"epoch": 1, "val_miou": 0.4, "val_confusion": (confusion * 0).tolist()},
               {"epoch": 2, "val_miou": 0.6, "val_confusion": confusion.tolist()}]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        _warn_of_unpredicted_classes(cfg, list(range(6)), pixels, history)
    assert [str(w.message) for w in caught if w.category is GeoSegWarning] == [
        "the model never predicted 'urban' (56 labelled training pixels) and 'rangeland' (52 labelled "
        "training pixels) on validation (best epoch 2): it has not learnt them and the map will hold none; "
        "digitise more of them, set ce_weights: auto or set rare_class_sampling: 0.5"]

    cfg = config(tmp_path, tmp_path / "m.csv", ce_weights="auto", rare_class_sampling=0.5)
    confusion[2, 2] = 5  # rangeland now predicted once
    history[-1]["val_confusion"] = confusion.tolist()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        _warn_of_unpredicted_classes(cfg, list(range(6)), pixels, history)
        _warn_of_unpredicted_classes(cfg, [1, 3], pixels, history)  # urban not evaluated: nothing to say
    assert [str(w.message) for w in caught] == [
        "the model never predicted 'urban' (56 labelled training pixels) on validation (best epoch 2): it "
        "has not learnt it and the map will hold none; digitise more of it"]


def test_a_network_below_the_baseline_is_said_and_best_ckpt_is_the_better_model(tmp_path, sample_dir):
    """Two training chips cannot make a network beat the per-pixel baseline: the run says so in one warning,
    keeps the network as network.ckpt and the baseline as baseline.ckpt, and best.ckpt becomes the better of
    the baseline and the blend of the two (blend.ckpt, where it beat both on validation); prediction runs it
    like any other model. With best_model: network, best.ckpt stays the network."""
    from geoseg.errors import GeoSegWarning
    from geoseg.inference.predict import predict_scene
    from geoseg.models.checkpoint import load_checkpoint
    from geoseg.models.fields import BASELINE, BLEND

    cfg = config(tmp_path, sample_dir / "manifest.csv", epochs=1, chips_per_epoch=2, run_name="weak",
                 baseline=True)
    said = (r"the network's best validation mIoU 0\.\d+ is below the per-pixel baseline's 0\.\d+: best\.ckpt "
            r"is now the (blend of network and baseline \(val mIoU 0\.\d+\)|baseline), the network alone "
            r".*network\.ckpt and the baseline .*baseline\.ckpt")
    with pytest.warns(GeoSegWarning, match=said):
        result = train(cfg)
    run = result.run_dir
    network, baseline, best = (load_checkpoint(run / name) for name in ("network.ckpt", "baseline.ckpt",
                                                                        "best.ckpt"))
    assert network.architecture == "Unet" and baseline.architecture == BASELINE
    assert baseline.metrics["val_miou"] > result.best_val_miou == network.metrics["val_miou"]
    rows = json.loads((run / "metrics.json").read_text())
    blend_miou = rows[0]["blend_val_miou"]
    assert blend_miou >= baseline.metrics["val_miou"] - 1e-9  # share 0 is the baseline itself
    if (run / "blend.ckpt").exists():
        assert best.architecture == BLEND
        assert (run / "best.ckpt").read_bytes() == (run / "blend.ckpt").read_bytes()
        assert best.metrics["val_miou"] == blend_miou > baseline.metrics["val_miou"]
        assert 0 < best.model_config["network_weight"] == rows[0]["blend_network_weight"] < 1
    else:
        assert best.architecture == BASELINE and blend_miou == pytest.approx(baseline.metrics["val_miou"])
    out = predict_scene(sample_dir / "test_1.tif", run / "best.ckpt", tmp_path / "by_best.tif")
    with rasterio.open(out.raster) as src:
        codes = set(np.unique(src.read(1)).tolist())
    assert codes <= {0, 1, 2, 3, 4, 5, 6, 255} and len(codes - {255}) >= 2  # classes inside the footprint

    kept = config(tmp_path, sample_dir / "manifest.csv", epochs=1, chips_per_epoch=2, run_name="kept",
                  baseline=True, best_model="network")
    with pytest.warns(GeoSegWarning, match=r"best\.ckpt stays the network \(best_model: network\)"):
        result = train(kept)
    assert load_checkpoint(result.best).architecture == "Unet"
    assert not (result.run_dir / "network.ckpt").exists()
