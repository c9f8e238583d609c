"""Whatever a user feeds geoseg: one clear sentence, a non-zero exit code, no traceback, nothing left behind.

Each row runs the real command line entry point (``geoseg.cli.main``) in this process.
"""

import os
import signal
import warnings
from pathlib import Path

import numpy as np
import pytest
import rasterio
import yaml
from affine import Affine

from geoseg.cli import main

from conftest import TINY_MODEL, write_raster


@pytest.fixture(autouse=True)
def restore_process_state():
    """``main`` installs a warning printer and SIGTERM/SIGINT handlers; put them back after each row."""
    show = warnings.showwarning
    term, interrupt = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)
    with warnings.catch_warnings():
        yield
    warnings.showwarning = show
    signal.signal(signal.SIGTERM, term)
    signal.signal(signal.SIGINT, interrupt)


def run(capsys, *args) -> tuple[int, str]:
    with pytest.raises(SystemExit) as exit_:
        main([str(a) for a in args])
    return exit_.value.code, capsys.readouterr().err.strip()


@pytest.fixture
def files(tmp_path, rgb_scene, tiny_checkpoint):
    """Inputs good and bad, in ``tmp_path/in``; outputs go to the empty ``tmp_path/out``."""
    src = tmp_path / "in"
    src.mkdir()
    (tmp_path / "out").mkdir()
    good = rgb_scene.read_bytes()
    (src / "text.tif").write_text("hello, this is not a raster\n")
    (src / "truncated.tif").write_bytes(good[: len(good) // 3])
    (src / "folder.tif").mkdir()
    write_raster(src / "one_band.tif", np.full((1, 80, 90), 100, np.uint8))
    ckpt = tiny_checkpoint.read_bytes()
    (src / "truncated.ckpt").write_bytes(ckpt[: len(ckpt) // 2])
    (src / "text.ckpt").write_text("not a checkpoint")
    import torch
    torch.save({"weights": torch.zeros(3)}, src / "other.pt")
    return {"scene": rgb_scene, "model": tiny_checkpoint, "in": src, "out": tmp_path / "out"}


def predict(files, scene, *extra, out="lc.tif", model=None):
    return ["predict", scene, "-o", files["out"] / out, "--model", model or files["model"], "--quiet", *extra]


# (name, arguments from the files fixture, exit code, the exact message)
PREDICT_ERRORS = [
    ("missing scene", lambda f: predict(f, f["in"] / "nope.tif"), 2,
     "{in}/nope.tif does not exist"),
    ("scene is a folder", lambda f: predict(f, f["in"] / "folder.tif"), 2,
     "{in}/folder.tif is a directory with no raster files (.tif, .jp2, .vrt, …) in it; give a scene file, a "
     "folder of scenes or a glob such as 'scenes/*.tif'"),
    ("text file as scene", lambda f: predict(f, f["in"] / "text.tif"), 2,
     "{in}/text.tif is not a readable raster ('{in}/text.tif' not recognized as being in a supported file "
     "format.)"),
    ("truncated GeoTIFF", lambda f: predict(f, f["in"] / "truncated.tif"), 2,
     "{in}/truncated.tif could not be read: the file is truncated or corrupt"),
    ("too few bands", lambda f: predict(f, f["in"] / "one_band.tif"), 2,
     "{in}/one_band.tif has 1 band(s) but band(s) [2, 3] are needed; choose bands with --bands"),
    ("--bands of the wrong length", lambda f: predict(f, f["scene"], "--bands", "1,2"), 2,
     "--bands lists 2 band(s) but the model takes 3 input band(s) (it was trained on bands 1,2,3)"),
    ("--bands past the last band", lambda f: predict(f, f["scene"], "--bands", "4,2,1"), 2,
     "{scene} has 3 band(s) but band(s) [4] are needed; choose bands with --bands"),
    ("--bands from 0", lambda f: predict(f, f["scene"], "--bands", "0,1,2"), 2,
     "--bands are numbered from 1, got 0,1,2"),
    ("missing checkpoint", lambda f: predict(f, f["scene"], model=f["in"] / "nope.ckpt"), 2,
     "checkpoint {in}/nope.ckpt does not exist"),
    ("text file as checkpoint", lambda f: predict(f, f["scene"], model=f["in"] / "text.ckpt"), 2,
     "{in}/text.ckpt is not a readable geoseg checkpoint (truncated or corrupt: RuntimeError)"),
    ("truncated checkpoint", lambda f: predict(f, f["scene"], model=f["in"] / "truncated.ckpt"), 2,
     "{in}/truncated.ckpt is not a readable geoseg checkpoint (truncated or corrupt: RuntimeError)"),
    ("another torch file", lambda f: predict(f, f["scene"], model=f["in"] / "other.pt"), 2,
     "{in}/other.pt is not a geoseg checkpoint"),
    ("output folder missing", lambda f: predict(f, f["scene"], out="sub/lc.tif"), 2,
     "cannot write {out}/sub/lc.tif: folder {out}/sub does not exist"),
    ("output format unknown", lambda f: predict(f, f["scene"], out="lc.xyz"), 2,
     "cannot write {out}/lc.xyz: use .tif or one of .fgb, .geojson, .gpkg, .json, .parquet, .shp"),
    ("--overlap too large", lambda f: predict(f, f["scene"], "--overlap", "200"), 2,
     "--overlap must be between 0 and 32 pixels for 64 px chips"),
    ("--tile not a multiple of 32", lambda f: predict(f, f["scene"], "--tile", "100"), 2,
     "--tile must be a multiple of 32 between 32 and 4096 pixels, got 100"),
    ("resume with other settings", None, 2, None),  # tests/test_faults.py
]


@pytest.mark.parametrize("name, make_args, code, message", [r for r in PREDICT_ERRORS if r[1]],
                         ids=[r[0] for r in PREDICT_ERRORS if r[1]])
def test_predict_bad_input(capsys, files, name, make_args, code, message):
    exit_code, err = run(capsys, *make_args(files))
    expected = message.format(**{k: v for k, v in files.items()})
    assert (exit_code, err) == (code, f"geoseg: error: {expected}")
    assert list(files["out"].iterdir()) == []  # nothing left behind
    assert "Traceback" not in err


def test_existing_output_is_refused_and_kept(capsys, files):
    out = files["out"] / "lc.tif"
    out.write_bytes(b"earlier result")
    code, err = run(capsys, *predict(files, files["scene"]))
    assert (code, err) == (2, f"geoseg: error: {out} already exists; pass --overwrite to replace it")
    assert out.read_bytes() == b"earlier result"
    assert [p.name for p in files["out"].iterdir()] == ["lc.tif"]


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write anywhere")
def test_output_folder_not_writable(capsys, files):
    folder = files["out"] / "ro"
    folder.mkdir(0o555)
    code, err = run(capsys, *predict(files, files["scene"], out="ro/lc.tif"))
    assert (code, err) == (2, f"geoseg: error: cannot write {folder}/lc.tif: folder {folder} is not writable")


def _ok(capsys, files, *args):
    code, err = run(capsys, *args)
    assert code == 0, err
    return err


@pytest.mark.parametrize("dtype, values, means", [
    ("uint16", (1000, 4000), "2499, 2490, 2495"),
    ("float32", (0.0, 1.0), "0.4998, 0.5035, 0.4987"),
])
def test_imagery_far_from_the_training_values_is_one_warning(capsys, files, dtype, values, means):
    rng = np.random.default_rng(0)
    data = (rng.integers(*values, (3, 100, 120)) if dtype == "uint16" else rng.random((3, 100,
                                                                                       120))).astype(dtype)
    scene = write_raster(files["in"] / f"{dtype}.tif", data)
    err = _ok(capsys, files, *predict(files, scene))
    assert err.startswith(f"geoseg: warning: {scene}'s values (band means ")
    assert err.endswith("are far from those the model was trained on (means 120, 120, 120); check the bit "
                        "depth "
                        "and scaling of the imagery")
    assert len(err.splitlines()) == 1
    with rasterio.open(files["out"] / "lc.tif") as ds:  # predicted anyway, normalised as in training
        assert ds.dtypes == ("uint8",) and ds.shape == (100, 120)


def test_bands_choose_and_reorder_the_scene_bands(capsys, files):
    """A 4-band scene in B,G,R,NIR order predicts like the RGB scene with --bands 3,2,1."""
    with rasterio.open(files["scene"]) as src:
        rgb, profile = src.read(), src.profile
    bgrn = np.concatenate([rgb[::-1], rgb[:1]])
    profile.update(count=4)
    with rasterio.open(files["in"] / "bgrn.tif", "w", **profile) as dst:
        dst.write(bgrn)
    _ok(capsys, files, *predict(files, files["scene"], out="rgb.tif"))
    _ok(capsys, files, *predict(files, files["in"] / "bgrn.tif", "--bands", "3,2,1", out="bgrn.tif"))
    with rasterio.open(files["out"] / "rgb.tif") as a, rasterio.open(files["out"] / "bgrn.tif") as b:
        assert (a.read() == b.read()).all()


def test_rotated_geotransform_is_kept_and_polygons_follow_it(capsys, files):
    import geopandas as gpd
    from rasterio.features import rasterize
    rotated = Affine(0.4, 0.3, 500000, 0.3, -0.4, 5000000)
    with rasterio.open(files["scene"]) as src:
        data = src.read()
    scene = write_raster(files["in"] / "rotated.tif", data, transform=rotated, nodata=0)
    _ok(capsys, files, *predict(files, scene, out="lc.gpkg"))
    with rasterio.open(files["out"] / "lc.tif") as ds:
        assert ds.transform == rotated
        classes = ds.read(1)
    gdf = gpd.read_file(files["out"] / "lc.gpkg", layer="landcover")
    back = rasterize(zip(gdf.geometry, gdf.class_id), out_shape=classes.shape, transform=rotated, fill=255,
                     dtype="uint8")
    assert (back == classes).all()


def test_a_90_degree_rotated_scene_has_its_true_pixel_size(capsys, files):
    """|a| is 0 on a 90° rotated grid: the pixel size is the column vector's length (0.5 m, as trained)."""
    rotated = Affine(0, -0.5, 500000, -0.5, 0, 5000000)
    with rasterio.open(files["scene"]) as src:
        data = src.read()
    scene = write_raster(files["in"] / "rot90.tif", data, transform=rotated, nodata=0)
    err = _ok(capsys, files, *predict(files, scene, out="lc.tif"))
    assert "m pixels" not in err and err == ""


def test_evaluating_scenes_without_georeferencing_shows_no_raw_rasterio_warning(capsys, tmp_path, files):
    from conftest import deepglobe_folder
    root = deepglobe_folder(tmp_path / "dg", n=3, size=64)
    code, err = run(capsys, "evaluate", "--model", files["model"], "--data", root, "--split", "train",
                    "--out", tmp_path / "ev", "--quiet", "--bootstrap", "0", "--worst", "1")
    assert code == 0, err
    assert "NotGeoreferencedWarning" not in err and "identity" not in err
    assert all(line.startswith("geoseg: warning: ") for line in err.splitlines())


# --- training inputs -----------------------------------------------------------------------------

def _train_config(tmp_path, manifest_rows, **changes):
    manifest = tmp_path / "manifest.csv"
    manifest.write_text("image,label,split\n" + "\n".join(",".join(r) for r in manifest_rows) + "\n")
    cfg = {"batch_size": 2, "ce_weights": [1, 1, 1, 1, 1, 1, 0], "downsize_res": None, "epochs": 1,
           "loss_fn": "CrossEntropyLoss", "lr": 0.001, "model_architecture": "Unet",
           "model_config": TINY_MODEL, "num_workers": 0, "optimizer": "Adam", "manifest": str(manifest),
           "chip_size": 64, "chips_per_epoch": 2, "val_chips": 2, "output_dir": str(tmp_path / "runs"),
           "run_name": "r", "logger": "csv"}
    cfg.update(changes)
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


@pytest.fixture
def train_scene(tmp_path):
    rng = np.random.default_rng(1)
    return write_raster(tmp_path / "img.tif", rng.integers(1, 255, (3, 96, 96)).astype(np.uint8))


def _label(tmp_path, name, data, **kw):
    return write_raster(tmp_path / name, data, **kw)


def test_a_budget_that_is_no_time_has_no_unit_or_is_too_short(capsys, tmp_path, train_scene):
    _label(tmp_path, "lab.tif", np.zeros((96, 96), np.uint8))
    cfg = _train_config(tmp_path, [("img.tif", "lab.tif", "train"), ("img.tif", "lab.tif", "val")])
    code, err = run(capsys, "train", "--config", cfg, "--budget", "soon")
    assert (code, err) == (2, "geoseg: error: config key 'budget' must be a time such as 15m, 90s or 1h30m, "
                              "got 'soon'")
    code, err = run(capsys, "train", "--config", cfg, "--budget", "3")
    assert (code, err) == (2, "geoseg: error: config key 'budget' needs a unit: 3m, 3h or 3s? (got '3')")
    code, err = run(capsys, "train", "--config", cfg, "--budget", "3s")
    assert (code, err) == (2, "geoseg: error: a budget of 3s is too short to set up and train; give at least "
                              "10s (e.g. 15m)")
    assert not (tmp_path / "runs").exists()  # refused before any set-up: no run folder
    code, err = run(capsys, "train", "--config", cfg, "--budget", "10s", "--epochs", "500")
    last = err.splitlines()[-1]  # after the warning that this one-class label lacks the other classes
    assert code == 2 and last.startswith("geoseg: error: a budget of 10s leaves no time to train: set-up ")
    assert last.endswith(" or fewer epochs") and "Traceback" not in err
    assert not list((tmp_path / "runs" / "r").glob("*.ckpt"))


def test_label_values_outside_the_class_list(capsys, tmp_path, train_scene):
    labels = np.zeros((96, 96), np.uint8)
    labels[5, 7] = 9
    lab = _label(tmp_path, "lab.tif", labels)
    cfg = _train_config(tmp_path, [("img.tif", "lab.tif", "train"), ("img.tif", "lab.tif", "val")])
    code, err = run(capsys, "train", "--config", cfg)
    assert (code, err) == (2,
                           f"geoseg: error: label {lab} has value(s) [9] that are not class codes [0, 1, 2, "
                           "3, 4, 5, 6]")
    assert not list((tmp_path / "runs" / "r").glob("*.ckpt"))


def test_rgb_mask_colour_outside_the_palette(capsys, tmp_path, train_scene):
    mask = np.zeros((3, 96, 96), np.uint8)
    mask[:, :, :] = np.array([0, 255, 255])[:, None, None]      # urban
    mask[:, 10, 20] = (255, 0, 0)                                # red is no DeepGlobe colour
    lab = _label(tmp_path, "mask.tif", mask)
    cfg = _train_config(tmp_path, [("img.tif", "mask.tif", "train"), ("img.tif", "mask.tif", "val")])
    code, err = run(capsys, "train", "--config", cfg)
    assert (code, err) == (2,
                           f"geoseg: error: label {lab} has colour (255, 0, 0) that matches no class colour")


def test_label_on_another_grid_is_refused(capsys, tmp_path, train_scene):
    lab = _label(tmp_path, "lab.tif", np.zeros((96, 96), np.uint8), transform=Affine(1, 0, 500000, 0, -1,
                                                                                     5000000))
    cfg = _train_config(tmp_path, [("img.tif", "lab.tif", "train"), ("img.tif", "lab.tif", "val")])
    code, err = run(capsys, "train", "--config", cfg)
    assert (code, err) == (2, f"geoseg: error: label {lab} (96×96) is not on its image's grid (96×96, same "
                              f"transform); labels must align pixel for pixel")


def test_label_in_another_crs_is_refused(capsys, tmp_path, train_scene):
    lab = _label(tmp_path, "lab.tif", np.zeros((96, 96), np.uint8), crs="EPSG:32634")
    cfg = _train_config(tmp_path, [("img.tif", "lab.tif", "train"), ("img.tif", "lab.tif", "val")])
    code, err = run(capsys, "train", "--config", cfg)
    assert code == 2 and err.startswith(f"geoseg: error: label {lab} is in EPSG:32634 but its image is in "
                                        "EPSG:32633")


def test_image_without_crs_trains_with_one_warning(capsys, tmp_path):
    rng = np.random.default_rng(1)
    img = write_raster(tmp_path / "img.tif", rng.integers(1, 255, (3, 96, 96)).astype(np.uint8), crs=None)
    _label(tmp_path, "lab.tif", rng.integers(0, 6, (96, 96)).astype(np.uint8), crs=None)
    # no baseline: on the very scene it validates on, it would beat this one-step network and say so
    cfg = _train_config(tmp_path, [("img.tif", "lab.tif", "train"), ("img.tif", "lab.tif", "val")],
                        baseline=False)
    code, err = run(capsys, "train", "--config", cfg, "--quiet")
    assert code == 0, err
    # (pytest shows a repeated warning each time; the command line shows it once per scene)
    assert set(err.splitlines()) == {f"geoseg: warning: {img} has no CRS; it is used for training as it is "
                                     f"(pixel grid only)"}
    assert (tmp_path / "runs" / "r" / "best.ckpt").exists()


@pytest.mark.parametrize("text, message", [
    ("batch_size: 4\nbogus: 1\n", "unknown config key 'bogus'"),
    ("batch_size: [4\n", "is not valid YAML"),
])
def test_bad_config(capsys, tmp_path, text, message):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    code, err = run(capsys, "train", "--config", path)
    assert code == 2 and message in err and len(err.splitlines()) == 1


def test_missing_config_and_manifest(capsys, tmp_path):
    code, err = run(capsys, "train", "--config", tmp_path / "none.yaml")
    assert (code, err) == (2, f"geoseg: error: config file {tmp_path / 'none.yaml'} does not exist")
    cfg = _train_config(tmp_path, [])
    Path(tmp_path / "manifest.csv").unlink()
    code, err = run(capsys, "train", "--config", cfg)
    assert (code, err) == (2, f"geoseg: error: manifest {tmp_path / 'manifest.csv'} does not exist")


def test_an_error_in_a_dataloader_worker_is_still_one_sentence(capsys, tmp_path, train_scene):
    labels = np.zeros((96, 96), np.uint8)
    labels[5, 7] = 9
    lab = _label(tmp_path, "lab.tif", labels)
    cfg = _train_config(tmp_path, [("img.tif", "lab.tif", "train"), ("img.tif", "lab.tif", "val")],
                        num_workers=1)
    code, err = run(capsys, "train", "--config", cfg)
    assert (code, err) == (2, f"geoseg: error: label {lab} has value(s) [9] that are not class codes "
                              f"[0, 1, 2, 3, 4, 5, 6]")


@pytest.mark.parametrize("how", ["same path", "through ..", "through a symlink", "the raster beside a .gpkg"])
@pytest.mark.parametrize("overwrite", [False, True])
def test_an_output_that_is_the_input_scene_is_refused(capsys, tmp_path, files, how, overwrite):
    """`geoseg predict x.tif -o x.gpkg --overwrite` once wrote its class raster over the scene x.tif."""
    scene = tmp_path / "work" / "x.tif"
    scene.parent.mkdir()
    scene.write_bytes(files["scene"].read_bytes())
    before = scene.read_bytes()
    output = {"same path": scene, "through ..": scene.parent / ".." / "work" / "x.tif",
              "through a symlink": tmp_path / "link.tif",
              "the raster beside a .gpkg": scene.with_suffix(".gpkg")}[how]
    if how == "through a symlink":
        output.symlink_to(scene)
    args = ["predict", scene, "-o", output, "--model", files["model"], "--quiet"]
    code, err = run(capsys, *args, *(["--overwrite"] if overwrite else []))
    raster = output if output.suffix == ".tif" else scene
    suggestion = ("--raster " if how == "the raster beside a .gpkg" else "") + str(
        raster.with_name(f"{raster.stem}_landcover.tif"))
    assert (code, err) == (2, f"geoseg: error: the output {raster} is the input scene {scene}; writing it "
                              f"would destroy the input: choose another output name, e.g. {suggestion}")
    assert scene.read_bytes() == before


def test_an_output_that_is_the_model_is_refused(capsys, files):
    before = files["model"].read_bytes()
    code, err = run(capsys, "predict", files["scene"], "-o", files["out"] / "lc.gpkg", "--model",
                    files["model"], "--raster", files["model"], "--overwrite", "--quiet")
    assert (code, err) == (2, f"geoseg: error: the output {files['model']} is the model {files['model']}; "
                              "writing it would destroy the input: choose another output name, e.g. "
                              "--raster "
                              f"{files['model'].with_name('tiny_landcover.ckpt')}")
    assert files["model"].read_bytes() == before


def test_evaluate_and_sample_data_never_write_over_their_inputs(capsys, tmp_path, files):
    labels = write_raster(tmp_path / "truth.tif", np.zeros((150, 200), np.uint8), nodata=255)
    pred = write_raster(tmp_path / "pred.tif", np.zeros((150, 200), np.uint8), nodata=255)
    code, err = run(capsys, "evaluate", pred, "--truth", labels, "--json", labels, "--quiet")
    assert (code, err[:60]) == (2, f"geoseg: error: the output {labels} is the truth {labels}"[:60])
    (tmp_path / "sd").mkdir()
    (tmp_path / "sd" / "train_1.tif").write_bytes(b"my own scene")
    code, err = run(capsys, "sample-data", tmp_path / "sd", "--size", 64, "--splits", "train", "--quiet")
    assert (code, err) == (2, f"geoseg: error: {tmp_path / 'sd' / 'train_1.tif'} already exists; pass "
                              f"--overwrite to replace it")
    assert (tmp_path / "sd" / "train_1.tif").read_bytes() == b"my own scene"
