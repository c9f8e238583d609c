"""The README's "your own data" walkthrough, command by command, on small real-shaped fixtures: an RGB
GeoTIFF with polygons digitised over a third of it (a text field naming the classes), then a region of two
adjacent scenes predicted inside an area of interest; and a 4-band 16-bit Sentinel-2 L2A-like scene with
scale/offset."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import geopandas as gpd
import numpy as np
import rasterio
import shapely
import yaml
from affine import Affine
from test_multispectral import l2a_scene

from geoseg.data.project import loader_workers

from conftest import UTM, readme_block, write_raster

SMALL_MODEL = ["--set", "model_config.encoder_depth=3", "--set", "model_config.decoder_channels=[32,16,8]",
               "--set", "chips_per_epoch=24", "--set", "batch_size=4", "--set", "val_chips=8", "--set",
               "budget=null"]


def geoseg(*args, cwd=None):
    result = subprocess.run([sys.executable, "-m", "geoseg", *map(str, args)], capture_output=True, text=True,
                            cwd=cwd)
    assert result.returncode == 0, result.stderr
    return result


def ground(width: int, height: int = 240) -> np.ndarray:
    """Water (blue) on the left, forest (green) in the middle, urban (grey) on the right, textured."""
    rng = np.random.default_rng(1)
    x = np.arange(width)[None, :].repeat(height, 0)
    colour = np.where(x < width / 3, 0, np.where(x < 2 * width / 3, 1, 2))
    base = np.array([[30, 60, 140], [40, 120, 50], [150, 150, 150]])[colour].transpose(2, 0, 1)
    return np.clip(base + rng.normal(0, 12, base.shape), 1, 255).astype(np.uint8)


def run_as_printed(line: str, cwd: Path) -> subprocess.CompletedProcess:
    """One README line through a shell (globs expanded as a user's shell does), with this environment's
    ``geoseg`` first on PATH, as after ``source .venv/bin/activate``."""
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
           "GEOSEG_HOME": str(cwd / ".geoseg-home")}
    result = subprocess.run(["bash", "-c", line], cwd=cwd, capture_output=True, text=True, env=env)
    assert result.returncode == 0, f"{line}\n{result.stderr}"
    return result


def test_the_readme_walkthrough_as_printed_polygons_over_an_orthophoto_then_a_region(tmp_path):
    """The README's four commands, run exactly as printed in a folder holding what they name: an RGB
    orthophoto with polygons over a third of it (a text field), then a region of two adjacent scenes and an
    area of interest. Between init and train, the written geoseg.yaml is shrunk to a tiny model and a few
    chips (as a user may edit it): the commands themselves are the README's."""
    commands = readme_block("## Your own data")
    assert [c.split()[1] for c in commands] == ["init", "train", "predict", "evaluate"]
    image = ground(720)
    write_raster(tmp_path / "ortho.tif", image[:, :, :360], Affine(1, 0, 500000, 0, -1, 5000000))
    boxes = {"Water": (10, 20, 110, 220), "forest": (130, 30, 230, 200), "urban": (250, 20, 350, 120),
             "URBAN": (250, 140, 350, 230)}  # col0, row0, col1, row1: a third of the scene
    geoms = [shapely.box(500000 + c0, 5000000 - r1, 500000 + c1, 5000000 - r0) for c0, r0, c1, r1 in
             boxes.values()]
    gpd.GeoDataFrame({"landcover": list(boxes)}, geometry=geoms, crs=UTM).to_file(tmp_path / "digitised.gpkg")
    (tmp_path / "region").mkdir()
    write_raster(tmp_path / "region/west.tif", image[:, :, :360], Affine(1, 0, 500000, 0, -1, 5000000))
    write_raster(tmp_path / "region/east.tif", image[:, :, 360:], Affine(1, 0, 500360, 0, -1, 5000000))
    aoi = shapely.box(500100, 4999800, 500600, 4999950)
    gpd.GeoDataFrame(geometry=[aoi], crs=UTM).to_file(tmp_path / "district.gpkg")
    project = tmp_path / "myproject"
    assert not project.exists()  # init creates it

    out = run_as_printed(commands[0], tmp_path).stdout
    assert "classes from 'landcover': forest (1), urban (2), Water (3)" in out
    config = yaml.safe_load((project / "geoseg.yaml").read_text())
    assert [c["name"] for c in config["classes"]] == ["forest", "urban", "Water"]
    assert config["chip_size"] == 64 and config["normalization"] == "mean_std"
    # the CPU recipe: a time budget, a light U-Net, no loader process on 2 cores
    assert (config["budget"], config["lr_schedule"], config["model_config"]["decoder_channels"]) == (
        "15m", "cosine", [128, 64, 32, 16, 16])
    assert config["num_workers"] == loader_workers()
    config.update(budget=None, epochs=3, chips_per_epoch=24, batch_size=4, val_chips=8)
    config["model_config"].update(encoder_depth=3, decoder_channels=[32, 16, 8])
    (project / "geoseg.yaml").write_text(yaml.safe_dump(config, sort_keys=False))

    run_as_printed(commands[1], tmp_path)
    run = next(p for p in (project / "runs").iterdir() if not p.name.startswith("."))
    labels = json.loads((run / "labels.json").read_text())
    assert labels["urban"]["train_polygons"] + labels["urban"]["val_polygons"] >= 2
    assert yaml.safe_load((run / "config.yaml").read_text())["epochs"] == 3

    out = run_as_printed(commands[2], tmp_path).stdout
    # --model myproject: this project's newest run, named
    assert f"model: {run.relative_to(tmp_path) / 'best.ckpt'} (the newest of 1 run" in out
    polygons = gpd.read_file(project / "region.gpkg", layer="landcover")
    assert set(polygons.class_name) <= {"forest", "urban", "Water"}
    assert polygons.union_all().difference(aoi).area < 1e-6  # masked to the area
    assert abs(polygons.area.sum() - aoi.area) < 1e-6
    with rasterio.open(project / "region.vrt") as mosaic:
        assert mosaic.shape == (240, 720) and mosaic.colormap(1)[3][:3] == (0x4d, 0xaf, 0x4a)

    run_as_printed(commands[3], tmp_path)
    metrics = json.loads((run / "evaluation_test" / "metrics.json").read_text())  # beside the model
    assert 0 <= metrics["miou"] <= 1
    assert not (tmp_path / "evaluation").exists()  # never the current folder unasked


def test_walkthrough_a_16_bit_multispectral_scene(tmp_path):
    scene = l2a_scene(tmp_path / "S2_L2A.tif")
    with rasterio.open(scene) as src:
        left, bottom, right, top = src.bounds
    mid = (left + right) / 2
    gpd.GeoDataFrame({"class": ["water", "cropland", "cropland"]},
                     geometry=[shapely.box(left + 4, bottom + 4, mid - 8, top - 4),
                               shapely.box(mid + 8, bottom + 4, right - 4, bottom + 24),
                               shapely.box(mid + 8, top - 24, right - 4, top - 4)],
                     crs=UTM).to_file(tmp_path / "fields.gpkg")
    geoseg("init", "--images", scene, "--labels", tmp_path / "fields.gpkg", "--label-field", "class", "--out",
           tmp_path)
    config = yaml.safe_load((tmp_path / "geoseg.yaml").read_text())
    assert config["bands"] == ["B02", "B03", "B04", "B08"]
    assert config["normalization"] == "percentile 2 98"
    geoseg("train", "--config", tmp_path / "geoseg.yaml", "--set", "epochs=2", *SMALL_MODEL)
    run = next(p for p in (tmp_path / "runs").iterdir() if not p.name.startswith("."))
    geoseg("predict", scene, "-o", tmp_path / "map.tif", "--model", run / "best.ckpt", "--quiet")
    with rasterio.open(tmp_path / "map.tif") as out, rasterio.open(scene) as src:
        assert out.transform == src.transform and set(np.unique(out.read(1))) <= {1, 2}


def test_loader_processes_only_where_cores_are_spare():
    assert [loader_workers(n) for n in (1, 2, 3, 4, 8, 16)] == [0, 0, 1, 2, 4, 4]


def test_init_creates_its_folder_and_a_refused_init_leaves_none(tmp_path):
    scene = write_raster(tmp_path / "ortho.tif", ground(120, 120), Affine(1, 0, 500000, 0, -1, 5000000))
    far = shapely.box(600000, 4000000, 600050, 4000050)  # nowhere near the scene
    gpd.GeoDataFrame({"landcover": ["water"]}, geometry=[far], crs=UTM).to_file(tmp_path / "far.gpkg")
    refused = subprocess.run([sys.executable, "-m", "geoseg", "init", "--images", str(scene), "--labels",
                              str(tmp_path / "far.gpkg"), "--label-field", "landcover", "--out",
                              str(tmp_path / "a/b")], capture_output=True, text=True)
    assert refused.returncode == 2 and "falls on any of the 1 scenes" in refused.stderr
    assert not (tmp_path / "a/b").exists()
    near = shapely.box(500010, 4999900, 500060, 4999990)
    gpd.GeoDataFrame({"landcover": ["water"]}, geometry=[near], crs=UTM).to_file(tmp_path / "near.gpkg")
    geoseg("init", "--images", scene, "--labels", tmp_path / "near.gpkg", "--label-field", "landcover",
           "--out", tmp_path / "a/b")
    assert (tmp_path / "a/b/geoseg.yaml").is_file() and (tmp_path / "a/b/manifest.csv").is_file()
