"""Real rasters and real disks: GCP-only scenes, full disks, changed inputs under --resume, half-float
probabilities, COG with a sieve, compact outputs, BigTIFF and overviews, scenes behind a URL."""

import functools
import http.server
import os
import resource
import shutil
import subprocess
import sys
import threading

import numpy as np
import pytest
import rasterio
import torch
from affine import Affine
from rasterio.control import GroundControlPoint

from geoseg.io.classes import DEEPGLOBE, NODATA
from geoseg.io.grid import GeoGrid
from geoseg.models.checkpoint import Checkpoint, build_model, save_checkpoint
from geoseg.outputs.class_raster import class_raster_profile

from conftest import TINY_MODEL, UTM, write_raster


def geoseg(*args, limit_bytes=None, cwd=None, timeout=300):
    def limit():
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit_bytes, limit_bytes))
    return subprocess.run([sys.executable, "-m", "geoseg", *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, preexec_fn=limit if limit_bytes else None, cwd=cwd)


def _scene(tmp_path, name="scene.tif", size=(3, 300, 400), seed=0, **profile):
    rng = np.random.default_rng(seed)
    data = rng.integers(1, 255, size, dtype=np.uint8)
    return write_raster(tmp_path / name, data, **profile)


# --- 4. scenes georeferenced by ground control points only -----------------------------------------------

def _gcp_scene(tmp_path):
    gcps = [GroundControlPoint(0, 0, 500000, 5000000), GroundControlPoint(0, 200, 500100, 5000000),
            GroundControlPoint(150, 0, 500000, 4999925), GroundControlPoint(150, 200, 500100, 4999925)]
    path = tmp_path / "raw.tif"
    data = np.random.default_rng(1).integers(1, 255, (3, 150, 200), dtype=np.uint8)
    with rasterio.open(path, "w", driver="GTiff", width=200, height=150, count=3, dtype="uint8", gcps=gcps,
                       crs=UTM) as dst:
        dst.write(data)
    return path, gcps


def test_gcps_are_carried_into_the_class_raster(tmp_path, tiny_checkpoint):
    scene, gcps = _gcp_scene(tmp_path)
    r = geoseg("predict", scene, "-o", tmp_path / "classes.tif", "--model", tiny_checkpoint, "--quiet")
    assert r.returncode == 0, r.stderr
    assert "has no CRS" not in r.stderr
    with rasterio.open(tmp_path / "classes.tif") as ds:
        got, crs = ds.gcps
        assert crs == UTM and [(g.row, g.col, g.x, g.y) for g in got] == [(g.row, g.col, g.x,
                                                                           g.y) for g in gcps]
        assert ds.crs is None and ds.transform.is_identity


def test_polygons_of_a_gcp_only_scene_are_refused_in_one_sentence(tmp_path, tiny_checkpoint):
    scene, _ = _gcp_scene(tmp_path)
    r = geoseg("predict", scene, "-o", tmp_path / "lc.gpkg", "--model", tiny_checkpoint, "--quiet")
    assert r.returncode == 2 and r.stderr.strip() == (
        f"geoseg: error: {scene} is georeferenced by ground control points only, so polygons cannot be "
        "placed "
        f"on the ground; orthorectify it first (gdalwarp -tps -t_srs EPSG:32633 {scene} ortho.tif) or write "
        f"only the class raster (-o raw_landcover.tif), which keeps its GCPs and RPCs")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["raw.tif", "tiny.ckpt"]


# --- 6. a full disk -----------------------------------------------------------------------------------------

def test_a_full_disk_is_an_error_and_never_a_promoted_file(tmp_path, tiny_checkpoint):
    """A file-size limit stands in for a full disk: GDAL's writes fail part way through."""
    scene = _scene(tmp_path, size=(3, 700, 700), tiled=True, blockxsize=256, blockysize=256)
    out = tmp_path / "out" / "lc.tif"
    out.parent.mkdir()
    r = geoseg("predict", scene, "-o", out, "--model", tiny_checkpoint, "--block-chips", "1", "--quiet",
               limit_bytes=12_000)
    assert r.returncode == 1, r.stderr
    error = r.stderr.strip().splitlines()[-1]
    assert error.startswith(f"geoseg: error: {out} could not be written to disk (") and error.endswith(
        "); free some space or choose another folder")
    assert "Traceback" not in r.stderr
    assert list(out.parent.iterdir()) == []  # no promoted file, no partial or state that --resume would trust
    r = geoseg("predict", scene, "-o", out, "--model", tiny_checkpoint, "--block-chips", "1", "--quiet",
               "--resume")
    assert r.returncode == 0, r.stderr
    with rasterio.open(out) as ds:
        assert (ds.read(1) != NODATA).all()


# --- 11. --resume with another scene under the same name, size and time -----------------------------------

def test_resume_notices_another_scene_with_the_same_name_size_and_time(tmp_path, tiny_checkpoint):
    a = _scene(tmp_path, "a.tif", size=(3, 700, 700), seed=1, tiled=True, blockxsize=256, blockysize=256)
    b = _scene(tmp_path, "b.tif", size=(3, 700, 700), seed=2, tiled=True, blockxsize=256, blockysize=256)
    assert a.stat().st_size == b.stat().st_size
    scene = tmp_path / "scene.tif"
    shutil.copy2(a, scene)
    out = tmp_path / "lc.tif"
    proc = subprocess.Popen([sys.executable, "-m", "geoseg", "predict", scene, "-o", out, "--model",
                             tiny_checkpoint, "--block-chips", "1", "--quiet"], stderr=subprocess.PIPE,
                            text=True)
    state = out.with_name(".lc.geoseg-partial.json")
    for _ in range(2400):
        if state.exists() or proc.poll() is not None:
            break
        threading.Event().wait(0.05)
    proc.send_signal(2)
    proc.communicate(timeout=120)
    if not state.exists():
        pytest.skip("the run finished before it could be interrupted")
    mtime = scene.stat().st_mtime_ns
    shutil.copy2(b, scene)  # as `cp -p` leaves it: same path, size and modification time
    os.utime(scene, ns=(mtime, mtime))
    r = geoseg("predict", scene, "-o", out, "--model", tiny_checkpoint, "--block-chips", "1", "--quiet",
               "--resume")
    assert r.returncode == 2 and "was made with a different scene" in r.stderr


# --- 12. half-float probabilities --------------------------------------------------------------------------

def test_float16_probabilities_are_written_as_half_floats(tmp_path, rgb_scene, tiny_checkpoint):
    r = geoseg("predict", rgb_scene, "-o", tmp_path / "lc.tif", "--model", tiny_checkpoint, "--probabilities",
               "float16", "--quiet")
    assert r.returncode == 0, r.stderr
    with rasterio.open(tmp_path / "lc_probabilities.tif") as ds, rasterio.open(tmp_path / "lc.tif") as c:
        assert ds.count == 7 and ds.tags(1, ns="IMAGE_STRUCTURE")["NBITS"] == "16"
        p, classes = ds.read(), c.read(1)
    valid = classes != NODATA
    assert np.isnan(p[:, ~valid]).all()
    assert np.abs(p[:, valid].sum(0) - 1).max() < 5e-3
    assert (p[:, valid].argmax(0) == classes[valid]).mean() > 0.999


# --- 8, 16, 17. the final layout: COG after the sieve, compact files, overviews, BigTIFF --------------------

def test_cog_with_min_area_is_still_a_cog(tmp_path, rgb_scene, tiny_checkpoint):
    r = geoseg("predict", rgb_scene, "-o", tmp_path / "lc.gpkg", "--model", tiny_checkpoint, "--cog",
               "--min-area", "2", "--quiet")
    assert r.returncode == 0, r.stderr
    with rasterio.open(tmp_path / "lc.tif") as ds:
        assert ds.tags(ns="IMAGE_STRUCTURE").get("LAYOUT") == "COG"
        assert ds.descriptions == ("class",) and ds.tags()["sieve_min_pixels"] == "8"
        assert ds.colormap(1)[4] == (0, 0, 255, 255)


def test_a_finished_raster_is_no_larger_than_one_written_in_one_go(tmp_path, tiny_checkpoint):
    """Blocks not aligned to the tiles and a commit after every block once left a file 5× too large."""
    from geoseg.inference.predict import PredictOptions, predict_scene
    scene = _scene(tmp_path, size=(3, 450, 470))
    out = tmp_path / "lc.tif"
    predict_scene(scene, tiny_checkpoint, out, PredictOptions(block_chips=1, commit_seconds=0.0))
    with rasterio.open(out) as ds:
        classes, grid, tags, colormap = ds.read(1), GeoGrid.from_dataset(ds), ds.tags(), ds.colormap(1)
    with rasterio.open(tmp_path / "one_go.tif", "w", **class_raster_profile(grid)) as dst:
        dst.write(classes, 1)
        dst.write_colormap(1, colormap)
        dst.update_tags(**tags)
        dst.set_band_description(1, "class")
    assert out.stat().st_size <= 1.02 * (tmp_path / "one_go.tif").stat().st_size


def test_large_outputs_get_overviews_and_bigtiff_when_needed(tmp_path, tiny_checkpoint):
    from geoseg.inference.predict import PredictOptions, predict_scene
    scene = _scene(tmp_path, size=(3, 600, 1100))
    predict_scene(scene, tiny_checkpoint, tmp_path / "lc.tif", PredictOptions(block_chips=8))
    with rasterio.open(tmp_path / "lc.tif") as ds:
        assert ds.overviews(1) == [2, 4]  # down to under 256 px
    # a compressed raster that may pass 4 GB is a BigTIFF (its tiles are never written here)
    grid = GeoGrid(70000, 70000, Affine(1, 0, 0, 0, -1, 0), UTM)
    with rasterio.open(tmp_path / "big.tif", "w", **class_raster_profile(grid)):
        pass
    assert (tmp_path / "big.tif").read_bytes()[2:4] == b"\x2b\x00"  # BigTIFF's version 43


# --- 18. scenes behind a URL -------------------------------------------------------------------------------

def test_a_scene_behind_a_url_is_read_with_gdal(tmp_path, rgb_scene, tiny_checkpoint):
    served = tmp_path / "www"
    served.mkdir()
    shutil.copy(rgb_scene, served / "scene.tif")
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(served))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/scene.tif"
        for source in (url, f"/vsicurl/{url}"):
            out = tmp_path / f"lc_{len(source)}.tif"
            r = geoseg("predict", source, "-o", out, "--model", tiny_checkpoint, "--quiet")
            assert r.returncode == 0, r.stderr
            with rasterio.open(out) as ds, rasterio.open(rgb_scene) as src:
                assert ds.transform == src.transform and ds.tags()["scene"] == source
    finally:
        server.shutdown()


# --- odd real rasters, as in rasterio's test data: each ends in seconds, with outputs or one sentence -------

@pytest.fixture
def one_metre_model(tmp_path):
    """A tiny U-Net trained (as far as its file says) at 1 m pixels, like the sample model."""
    torch.manual_seed(0)
    ckpt = Checkpoint(architecture="Unet", model_config=dict(TINY_MODEL),
                      state_dict=build_model("Unet", TINY_MODEL).state_dict(), classes=DEEPGLOBE,
                      bands=[1, 2, 3], mean=[120.0] * 3, std=[60.0] * 3, chip_size=64, resolution=1.0,
                      train_config={"resolution": 1.0})
    return save_checkpoint(ckpt, tmp_path / "one_metre.ckpt")


def _collar(size=(718, 791)):
    """A Landsat-like scene with a rotated footprint inside a nodata collar (RGB.byte.tif's shape)."""
    h, w = size
    y, x = np.mgrid[0:h, 0:w]
    inside = (np.abs((x - w / 2) * 0.9 + (y - h / 2) * 0.4) < w * 0.35) & (np.abs(y - h / 2) < h * 0.4)
    data = (np.random.default_rng(0).integers(1, 255, (3, h, w)) * inside).astype(np.uint8)
    return data, inside


def odd_raster(kind: str, folder) -> tuple:
    """(path, expected) for one odd raster: ``expected`` is "refused" or "outputs"."""
    path = folder / f"{kind}.tif"
    t = Affine(1.0, 0, 500000, 0, -1.0, 5000000)
    rng = np.random.default_rng(1)
    if kind == "collar_300m":
        data, _ = _collar()
        write_raster(path, data, Affine(300, 0, 101985, 0, -300, 2826915), crs="EPSG:32618", nodata=0)
        return path, "refused"
    if kind == "external_msk":
        write_raster(path, rng.integers(1, 255, (3, 150, 200), dtype=np.uint8), t)
        with rasterio.Env(GDAL_TIFF_INTERNAL_MASK=False), rasterio.open(path, "r+") as ds:
            mask = np.full((150, 200), 255, np.uint8)
            mask[:40] = 0
            ds.write_mask(mask)
        assert (folder / f"{kind}.tif.msk").exists()
        return path, "outputs"
    if kind in ("rgba", "rgba_uint16"):
        dtype = np.uint8 if kind == "rgba" else np.uint16
        data = rng.integers(1, 200, (4, 150, 200)).astype(dtype)
        data[3] = np.iinfo(dtype).max
        data[3, :, :30] = 0
        write_raster(path, data, t, photometric="RGB", alpha="YES")
        return path, "outputs"
    if kind == "world_4326":
        write_raster(path, rng.integers(1, 255, (3, 360, 720), dtype=np.uint8),
                     Affine(0.5, 0, -180, 0, -0.5, 90), crs="EPSG:4326")
        return path, "refused"
    if kind == "rotated":
        write_raster(path, rng.integers(1, 255, (3, 150, 200), dtype=np.uint8),
                     Affine.translation(500000, 5000000) * Affine.rotation(20) * Affine.scale(1.0, -1.0))
        return path, "outputs"
    raise ValueError(kind)


ODD = ["collar_300m", "external_msk", "rgba", "rgba_uint16", "world_4326", "rotated"]


@pytest.mark.parametrize("kind", ODD)
def test_odd_real_rasters_end_in_seconds_with_outputs_or_one_sentence(tmp_path, one_metre_model, kind):
    scene, expected = odd_raster(kind, tmp_path)
    out = tmp_path / "out.tif"
    r = geoseg("predict", scene, "-o", out, "--model", one_metre_model, "--quiet", timeout=120)
    if expected == "refused":
        assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
        assert r.stderr.count("geoseg: error:") == 1 and "--sampling native" in r.stderr
        assert not out.exists()
        return
    assert r.returncode == 0, r.stderr
    with rasterio.open(out) as dst, rasterio.open(scene) as src:
        assert (dst.transform, dst.crs, dst.shape) == (src.transform, src.crs, src.shape)
        classes, valid = dst.read(1), src.dataset_mask() > 0
        assert np.array_equal(classes == NODATA, ~valid)  # masks, alpha: exactly the invalid pixels
