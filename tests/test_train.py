"""Training: DeepGlobe layout, class balancing, rare-class sampling, resolution, resume, logging."""

import csv
import json

import numpy as np
import pytest
import rasterio
from PIL import Image

from geoseg.classes import DEEPGLOBE
from geoseg.config import parse_config
from geoseg.data import (RandomChipSampler, SceneInfo, SceneRecord, class_cell_counts, median_frequency_weights,
                         read_deepglobe, scene_infos)
from geoseg.errors import ConfigError
from geoseg.grid import GeoGrid
from geoseg.train import train

from conftest import TINY_MODEL, write_raster

TIMING = ("train_chips_per_s", "val_chips_per_s", "val_seconds", "image_logging_seconds")


def config(tmp_path, manifest, **changes):
    raw = {"batch_size": 2, "ce_weights": [1, 1, 1, 1, 1, 1, 0], "downsize_res": None, "epochs": 2,
           "loss_fn": "CrossEntropyLoss", "lr": 0.001, "model_architecture": "Unet", "model_config": TINY_MODEL,
           "num_workers": 0, "optimizer": "Adam", "manifest": str(manifest), "chip_size": 64,
           "chips_per_epoch": 6, "val_chips": 4, "output_dir": str(tmp_path / "runs"), "seed": 3, "logger": "csv"}
    raw.update(changes)
    return parse_config(raw, tmp_path)


def without_timing(rows):
    return [{k: v for k, v in r.items() if k not in TIMING} for r in rows]


# --- class statistics -----------------------------------------------------------------------------

def test_median_frequency_weights_exact(tmp_path):
    """Scene A: 48 px urban, 16 agriculture; scene B: 32 urban, 32 rangeland (8×8 each, one 8 px cell)."""
    a = np.zeros((8, 8), np.uint8)
    a[:2] = 1
    b = np.zeros((8, 8), np.uint8)
    b[4:] = 2
    scenes = []
    for name, lab in (("a", a), ("b", b)):
        img = write_raster(tmp_path / f"{name}.tif", np.full((3, 8, 8), 100, np.uint8))
        lbl = write_raster(tmp_path / f"{name}_l.tif", lab)
        with rasterio.open(img) as src:
            scenes.append(SceneInfo(SceneRecord(img, lbl, "train"), GeoGrid.from_dataset(src), 1.0))
    counts = class_cell_counts(scenes, DEEPGLOBE, 8, ignored=[6], cache_dir=tmp_path / "cache")
    assert [c.tolist() for c in counts] == [[[[48, 16, 0, 0, 0, 0, 0]]], [[[32, 0, 32, 0, 0, 0, 0]]]]
    # freq: urban 80/128 = 0.625, agriculture 16/64 = 0.25, rangeland 32/64 = 0.5; median 0.5
    w = median_frequency_weights(counts, ignored=[6])
    assert w.tolist() == [0.8, 2.0, 1.0, 0.0, 0.0, 0.0, 0.0]
    # cached: a second call reads the cache file instead of the labels
    assert len(list((tmp_path / "cache").glob("label-stats-*.npz"))) == 1
    (tmp_path / "a_l.tif").unlink()
    (tmp_path / "a_l.tif").write_bytes(b"")  # a changed label file gets a new cache key
    with pytest.raises(Exception):
        class_cell_counts(scenes, DEEPGLOBE, 8, ignored=[6], cache_dir=tmp_path / "cache")


def test_rare_class_sampling_centres_chips_on_rare_cells(tmp_path):
    img = write_raster(tmp_path / "s.tif", np.full((3, 256, 256), 100, np.uint8))
    with rasterio.open(img) as src:
        scenes = [SceneInfo(SceneRecord(img, None, "train"), GeoGrid.from_dataset(src), 1.0)]
    counts = np.zeros((4, 4, 7), np.int64)
    counts[..., 1] = 4096          # agriculture everywhere
    counts[2, 3, 1], counts[2, 3, 4] = 3000, 1096  # water only in cell (2, 3)
    weights = median_frequency_weights([counts], ignored=[6])
    uniform = list(RandomChipSampler(scenes, 64, 400, seed=1, rare=0.0, cell_counts=[counts], class_weights=weights))
    rare = list(RandomChipSampler(scenes, 64, 400, seed=1, rare=1.0, cell_counts=[counts], class_weights=weights))

    def overlaps_water(spec):
        return spec.row < 3 * 64 and spec.row + 64 > 2 * 64 and spec.col < 4 * 64 and spec.col + 64 > 3 * 64

    assert sum(map(overlaps_water, uniform)) < 100
    assert sum(map(overlaps_water, rare)) > 250
    # the same seed gives the same chips
    again = list(RandomChipSampler(scenes, 64, 400, seed=1, rare=1.0, cell_counts=[counts], class_weights=weights))
    assert again == rare


def test_resolution_reads_windows_at_a_coarser_ground_resolution(tmp_path):
    img = write_raster(tmp_path / "s.tif", np.full((3, 200, 120), 100, np.uint8))  # 0.5 m pixels
    (info,) = scene_infos([SceneRecord(img, None, "train")], [1, 2, 3], resolution=2.0)
    assert info.scale == 4.0 and info.sampled_shape == (50, 30)
    (info,) = scene_infos([SceneRecord(img, None, "train")], [1, 2, 3], downsize_res=100)
    assert info.scale == 2.0 and info.sampled_shape == (100, 60)
    with pytest.raises(ConfigError, match="'resolution'"):
        config(tmp_path, "m.csv", resolution=1.0, downsize_res=256)


# --- DeepGlobe layout -----------------------------------------------------------------------------

def deepglobe_folder(root, n=6, size=96, metadata=False):
    """Tiny files in DeepGlobe's layout: <id>_sat.jpg + <id>_mask.png, plus an image without a mask."""
    root.mkdir(parents=True)
    rng = np.random.default_rng(0)
    colours = np.array([c.color for c in DEEPGLOBE.classes], np.uint8)
    rows = []
    for k in range(n):
        ident = str(100 + k * 37)
        classes = np.repeat(np.repeat(rng.integers(0, 6, (size // 16, size // 16)), 16, 0), 16, 1)
        mask = colours[classes]
        # JPEG-like noise on the mask colours stays on the right side of 128
        noisy = np.clip(mask.astype(int) + rng.integers(-40, 41, mask.shape), 0, 255).astype(np.uint8)
        Image.fromarray(noisy).save(root / f"{ident}_mask.png")
        sat = (mask // 2 + rng.integers(0, 60, mask.shape)).astype(np.uint8)
        Image.fromarray(sat).save(root / f"{ident}_sat.jpg", quality=90)
        rows.append((ident, "train", f"{ident}_sat.jpg", f"{ident}_mask.png"))
    Image.fromarray(np.zeros((size, size, 3), np.uint8)).save(root / "999_sat.jpg")  # no mask: left out
    rows.append(("999", "valid", "999_sat.jpg", ""))
    if metadata:
        with open(root / "metadata.csv", "w", newline="") as fh:
            w = csv.writer(fh)
            w.writerow(["image_id", "split", "sat_image_path", "mask_path"])
            w.writerows(rows)
    return root


@pytest.mark.parametrize("metadata", [False, True])
def test_deepglobe_layout_is_read_and_split_by_scene(tmp_path, metadata):
    root = deepglobe_folder(tmp_path / "dg", n=10, metadata=metadata)
    records = read_deepglobe(root, (0.6, 0.2, 0.2), seed=7)
    assert len(records) == 10 and all(r.label.name == r.image.name.replace("_sat.jpg", "_mask.png") for r in records)
    assert [r.split for r in records].count("train") == 6 and [r.split for r in records].count("val") == 2
    assert read_deepglobe(root, (0.6, 0.2, 0.2), seed=7) == records       # reproducible
    assert read_deepglobe(root, (0.6, 0.2, 0.2), seed=8) != records       # and seeded
    assert len({r.image for r in records}) == 10                          # each scene in one split


def test_training_on_a_deepglobe_folder_warns_once_about_missing_georeferencing(tmp_path, recwarn):
    root = deepglobe_folder(tmp_path / "dg", n=5)
    cfg = config(tmp_path, root, epochs=1, downsize_res=64, split_fractions=[0.6, 0.4, 0.0])
    result = train(cfg)
    messages = [str(w.message) for w in recwarn if "no CRS" in str(w.message)]
    assert len(messages) == 1
    assert messages[0].startswith("5 scenes have no CRS (e.g. ") and messages[0].endswith(
        "_sat.jpg); they are used for training as they are (pixel grid only)")
    assert result.history[0]["val_miou"] >= 0
    from geoseg.models import load_checkpoint
    assert load_checkpoint(result.best).resolution is None  # pixels without a ground size


# --- resume, logging ------------------------------------------------------------------------------

def test_resume_continues_exactly(tmp_path, sample_dir):
    """2 epochs in one go = 1 epoch, stopped, then resumed for the second (schedule, sampling, weights included)."""
    manifest = sample_dir / "manifest.csv"
    keys = dict(lr_schedule="cosine", ce_weights="auto", rare_class_sampling=0.5)
    full = train(config(tmp_path, manifest, run_name="full", **keys))
    first = train(config(tmp_path, manifest, run_name="split", **keys), until_epoch=1)
    assert len(first.history) == 1
    resumed = train(config(tmp_path, manifest, run_name="split", **keys), resume=first.last)
    assert without_timing(resumed.history) == without_timing(full.history)
    assert len(json.loads((resumed.run_dir / "metrics.json").read_text())) == 2
    steps = lambda run: list(csv.DictReader(open(run.run_dir / "steps.csv")))  # noqa: E731
    assert steps(resumed) == steps(full)
    assert [float(r["lr"]) for r in steps(full)] == sorted((float(r["lr"]) for r in steps(full)), reverse=True)
    report = json.loads((full.run_dir / "class_weights.json").read_text())
    assert list(report) == DEEPGLOBE.names and report["unknown"]["median_frequency_weight"] == 0.0
    assert sorted(v["median_frequency_weight"] for v in report.values() if v["share"] > 0)[1] == 1.0  # the median


def test_resume_from_a_checkpoint_of_other_classes_is_refused(tmp_path, sample_dir):
    run = train(config(tmp_path, sample_dir / "manifest.csv", epochs=1, run_name="r"))
    other = [{"code": c.code, "name": c.name if c.code else "built-up", "color": list(c.color), "ignore": c.ignore}
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
    assert {"lr", "val_seconds", "image_logging_seconds", "train_chips_per_s", "val_chips_per_s"} <= set(rows[0])
    assert rows[0]["image_logging_seconds"] < 1e-3 and rows[1]["image_logging_seconds"] > rows[0]["image_logging_seconds"]


def test_tiled_copies_keep_the_scene_mask(tmp_path):
    """A downsized scene with an internal mask (no nodata value) keeps its mask in the cached copy."""
    from geoseg.data import tiled_copies
    data = np.full((3, 128, 128), 90, np.uint8)
    img = write_raster(tmp_path / "m.tif", data, tiled=True, blockxsize=64, blockysize=64)
    mask = np.zeros((128, 128), np.uint8)
    mask[:, 64:] = 255
    with rasterio.Env(GDAL_TIFF_INTERNAL_MASK=True), rasterio.open(img, "r+") as ds:
        ds.write_mask(mask)
    (info,) = scene_infos([SceneRecord(img, None, "train")], [1, 2, 3], downsize_res=32)
    (copy,) = tiled_copies([info], tmp_path / "cache")
    assert copy.record.image != img and copy.scale == 1.0
    with rasterio.open(copy.record.image) as ds:
        assert ds.shape == (32, 32)
        assert (ds.dataset_mask() == mask[::4, ::4]).all()
