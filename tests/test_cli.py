"""End to end through the command line, as a user types it."""

import json
import subprocess
import sys

import geopandas as gpd
import numpy as np
import rasterio
import yaml
from rasterio.features import rasterize

from geoseg.io.classes import NODATA

from conftest import TINY_MODEL


def geoseg(*args, cwd=None, env=None):
    return subprocess.run([sys.executable, "-m", "geoseg", *map(str, args)], capture_output=True, text=True,
                          cwd=cwd, env=env, timeout=600)


def test_train_predict_evaluate_end_to_end(sample_dir, tmp_path, geoseg_home):
    cfg = {
        "batch_size": 4, "ce_weights": [1, 1, 1, 1, 1, 1, 0], "downsize_res": None, "epochs": 1,
        "loss_fn": "CrossEntropyLoss", "lr": 0.001, "model_architecture": "Unet", "model_config": TINY_MODEL,
        "num_workers": 0, "optimizer": "Adam", "manifest": str(sample_dir / "manifest.csv"), "chip_size": 64,
        "chips_per_epoch": 8, "output_dir": str(tmp_path / "runs"), "run_name": "e2e", "seed": 1,
        "logger": "wandb",
    }
    (tmp_path / "run.yaml").write_text(yaml.safe_dump(cfg))
    r = geoseg("train", "--config", tmp_path / "run.yaml")
    assert r.returncode == 0, r.stderr
    run = tmp_path / "runs" / "e2e"
    assert (run / "best.ckpt").exists() and (run / "last.ckpt").exists()
    rows = json.loads((run / "metrics.json").read_text())
    assert len(rows) == 1 and {"train_loss", "val_loss", "val_miou", "val_iou_water"} <= set(rows[0])
    assert (run / "metrics.csv").read_text().startswith("epoch,")
    assert (run / "samples" / "epoch_001.png").exists()
    # Weights & Biases ran offline: its run files are on disk
    assert list((run / "wandb").glob("offline-run-*/run-*.wandb"))

    # predict exactly as typed after training: the model defaults to the latest run's best checkpoint
    out = tmp_path / "out"
    out.mkdir()
    scene = sample_dir / "test_1.tif"
    r = geoseg("predict", scene, "-o", out / "landcover.gpkg", "--quiet")
    assert r.returncode == 0, r.stderr
    assert r.stderr.strip() == (f"geoseg: warning: no --model given: using {run / 'best.ckpt'}, which was "
                                "trained on geoseg's synthetic sample scenes, not on imagery like yours; "
                                "train one on your data (geoseg init --images … --labels … --label-field …, "
                                "then geoseg train) and pass it with --model")
    with rasterio.open(scene) as src, rasterio.open(out / "landcover.tif") as cls:
        assert cls.crs == src.crs and cls.transform == src.transform and cls.shape == src.shape
        assert cls.nodata == NODATA and cls.colormap(1)[3] == (0, 255, 0, 255)
        classes = cls.read(1)
        assert ((classes == NODATA) == (src.dataset_mask() == 0)).all()
        transform = cls.transform
    gdf = gpd.read_file(out / "landcover.gpkg", layer="landcover")
    assert gdf.crs == rasterio.open(scene).crs and gdf.geometry.is_valid.all()
    assert set(gdf.class_name) <= {"urban", "agriculture", "rangeland", "forest", "water", "barren",
                                   "unknown"}
    back = rasterize(zip(gdf.geometry, gdf.class_id), out_shape=classes.shape, transform=transform,
                     fill=NODATA, dtype="uint8")
    assert (back == classes).all()
    assert (out / "landcover.qml").exists()

    r = geoseg("evaluate", out / "landcover.tif", "--truth", sample_dir / "test_1_classes.tif", "--chip", 64,
               "--class", "rangeland")
    assert r.returncode == 0, r.stderr
    assert "miou" in r.stdout
    report = out / "landcover_evaluation"
    for name in ("confusion.png", "iou.png", "iou_curves.png", "worst.png", "worst.csv", "error_map.tif",
                 "report.md", "metrics.json"):
        assert (report / name).stat().st_size > 0, name  # curves: the checkpoint's run metrics were found
    with rasterio.open(report / "error_map.tif") as err:
        assert err.transform == transform and err.colormap(1)[0] == (46, 160, 67, 255)

    # evaluate a model on a manifest's test split: predicts, then scores
    r = geoseg("evaluate", "--model", run / "best.ckpt", "--data", sample_dir / "manifest.csv", "--split",
               "test", "--out", tmp_path / "ev", "--chip", 64, "--quiet")
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "ev" / "predictions" / "test_1.tif").exists()
    assert (tmp_path / "ev" / "error_maps" / "test_1.tif").exists()
    assert json.loads((tmp_path / "ev" / "metrics.json").read_text())["pixels"] > 0
    with rasterio.open(tmp_path / "ev" / "predictions" / "test_1.tif") as plain:
        assert plain.tags()["tta"] == "none"
    # ... with test-time flips, as predict --tta flips would
    r = geoseg("evaluate", "--model", run / "best.ckpt", "--data", sample_dir / "manifest.csv", "--tta",
               "flips", "--out", tmp_path / "ev_tta", "--chip", 64, "--quiet", "--bootstrap", "0")
    assert r.returncode == 0, r.stderr
    with rasterio.open(tmp_path / "ev_tta" / "predictions" / "test_1.tif") as flipped:
        assert flipped.tags()["tta"] == "flips"
    r = geoseg("evaluate", out / "landcover.tif", "--truth", sample_dir / "test_1_classes.tif", "--tta",
               "flips")
    assert r.returncode == 2 and "geoseg predict --tta" in r.stderr and "Traceback" not in r.stderr

    # a second predict refuses to overwrite without --overwrite, and leaves the outputs alone
    before = (out / "landcover.tif").read_bytes()
    r = geoseg("predict", scene, "-o", out / "landcover.gpkg")
    assert r.returncode == 2 and "--overwrite" in r.stderr
    assert (out / "landcover.tif").read_bytes() == before


def test_user_errors_are_one_line_without_traceback(tmp_path):
    r = geoseg("predict", tmp_path / "missing.tif", "-o", tmp_path / "x.gpkg", "--model", tmp_path / "m.ckpt")
    assert r.returncode == 2
    assert "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert "m.ckpt does not exist" in r.stderr

    (tmp_path / "bad.yaml").write_text("batch_size: 4\nbogus: 1\n")
    r = geoseg("train", "--config", tmp_path / "bad.yaml")
    assert r.returncode == 2 and "'bogus'" in r.stderr and "Traceback" not in r.stderr


def test_predict_without_any_model_says_how_to_get_one(tmp_path, rgb_scene):
    r = geoseg("predict", rgb_scene, "-o", tmp_path / "x.gpkg")
    assert r.returncode == 2 and "geoseg train" in r.stderr


def test_sample_data_command(tmp_path):
    r = geoseg("sample-data", tmp_path / "sd", "--size", 96, "--splits", "train,test", "--seed", 5)
    assert r.returncode == 0, r.stderr
    names = sorted(p.name for p in (tmp_path / "sd").iterdir())
    assert names == ["manifest.csv", "test_1.tif", "test_1_classes.tif", "test_1_labels.gpkg",
                     "test_1_mask.tif", "train_1.tif", "train_1_classes.tif", "train_1_labels.gpkg",
                     "train_1_mask.tif"]


def test_predict_with_cartographic_options(tmp_path, rgb_scene, tiny_checkpoint):
    out = tmp_path / "lc.geojson"
    r = geoseg("predict", rgb_scene, "-o", out, "--model", tiny_checkpoint, "--min-area", 2.0, "--confidence",
               "--layer", "ignored_for_geojson", "--quiet")
    assert r.returncode == 0, r.stderr
    gdf = gpd.read_file(out)
    assert gdf.crs == "EPSG:4326"  # GeoJSON is WGS 84 longitude/latitude (RFC 7946)
    assert {"class_id", "class_name", "area_m2", "perimeter_m", "confidence_mean"} <= set(gdf.columns)
    assert gdf.area_m2.min() >= 2.0  # 0.25 m² pixels: no region under 8 px survives the sieve
    assert gdf.confidence_mean.between(0, 100).all()
    with rasterio.open(tmp_path / "lc_classes.tif") as cls:  # its own name: lc.qml is the polygons' style
        classes, transform = cls.read(1), cls.transform
        gdf = gdf.to_crs(cls.crs)
    back = rasterize(zip(gdf.geometry, gdf.class_id), out_shape=classes.shape, transform=transform,
                     fill=NODATA, dtype="uint8")
    assert (back == classes).all()  # the sieved raster and the polygons agree
    assert (tmp_path / "lc.qml").exists() and (tmp_path / "lc_summary.csv").exists()
    assert (tmp_path / "lc_classes.qml").exists() and (tmp_path / "lc_classes_confidence.tif").exists()


def test_scene_without_crs_and_at_another_resolution_is_one_warning_line(tmp_path, tiny_checkpoint):
    from affine import Affine

    from conftest import write_raster
    scene = write_raster(tmp_path / "nocrs.tif", np.full((3, 40, 40), 100, np.uint8), Affine(2, 0, 0, 0, -2,
                                                                                             80),
                         crs=None)
    r = geoseg("predict", scene, "-o", tmp_path / "out.tif", "--model", tiny_checkpoint, "--quiet")
    assert r.returncode == 0, r.stderr
    assert r.stderr.strip() == f"geoseg: warning: {scene} has no CRS; the outputs will have none either"
    with rasterio.open(tmp_path / "out.tif") as ds:
        assert ds.crs is None and ds.transform == Affine(2, 0, 0, 0, -2, 80)

    utm = write_raster(tmp_path / "coarse.tif", np.full((3, 40, 40), 100, np.uint8),
                       Affine(2, 0, 500000, 0, -2, 5000080))
    r = geoseg("predict", utm, "-o", tmp_path / "out2.tif", "--model", tiny_checkpoint, "--quiet")
    assert r.returncode == 0 and "has 2 m pixels but the model was trained on 0.5 m pixels" in r.stderr
