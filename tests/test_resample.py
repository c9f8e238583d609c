"""Prediction at the model's sampling: a model trained at 1 m pixels reads 0.5 m and 2 m scenes at 1 m, and
the outputs stay on each scene's own grid."""

from __future__ import annotations

import warnings
from dataclasses import replace

import numpy as np
import pyproj
import pytest
import rasterio
import torch
from affine import Affine
from rasterio.crs import CRS
from rasterio.windows import Window

from geoseg.data.model_input import sampling_scale
from geoseg.errors import ConfigError
from geoseg.inference.predict import PredictOptions, predict_scene
from geoseg.inference.resample import axis_taps, model_scale, resampled_block
from geoseg.io.classes import DEEPGLOBE
from geoseg.io.grid import GeoGrid
from geoseg.models.checkpoint import Checkpoint, build_model, load_checkpoint, save_checkpoint

from conftest import TINY_MODEL, write_raster

EXTENT = 192  # metres on a side


def ground(res: float, kind: str) -> tuple[np.ndarray, np.ndarray]:
    """The same 192 m of ground at ``res`` m pixels (rendered 4× finer and averaged, as a sensor does) and its
    class at each pixel. ``texture``: two classes of one colour told apart only by the size of their stripes
    (9 m and 36 m apart), in a 2 × 2 checkerboard; ``colour``: four classes of distinct colours with faint
    stripes."""
    n, f = int(EXTENT / res), 4
    y, x = (np.mgrid[0:n * f, 0:n * f] + 0.5) * res / f
    if kind == "texture":
        region = ((x // 96).astype(int) + (y // 96).astype(int)) % 2
        period = np.where(region == 0, 12.0, 48.0)
        img = 120 + 50 * np.sin(2 * np.pi * (x + 0.5 * y) / period)[None] * np.array([1, 0.8, 0.6])[:, None,
                                                                                                       None]
    else:
        region = ((x // 64).astype(int) + 2 * (y // 64).astype(int)) % 4
        base = np.array([[150, 90, 90], [90, 150, 90], [90, 90, 150], [150, 150, 90]])[region]
        img = base.transpose(2, 0, 1) + 10 * np.sin(2 * np.pi * x / 8) * (region >= 2)
    img = img.reshape(3, n, f, n, f).mean(axis=(2, 4))
    return np.clip(img, 0, 255).astype(np.uint8), region[f // 2::f, f // 2::f]


def scene(tmp_path, res: float, kind: str, crs="EPSG:32633"):
    return write_raster(tmp_path / f"{kind}_{res}.tif", ground(res, kind)[0],
                        Affine(res, 0, 500000, 0, -res, 5000000), crs=crs)


def train_at_1m(path, kind: str, steps: int, config: dict) -> Checkpoint:
    """A tiny U-Net trained on the 1 m rendering (and, every other step, the 2 m one brought to 1 m, so that
    it knows blurrier imagery too), saved with ``config`` as its training config."""
    torch.manual_seed(0)
    model = build_model("Unet", TINY_MODEL)
    sharp, labels = ground(1.0, kind)
    coarse = torch.from_numpy(ground(2.0, kind)[0].astype(np.float32))
    images = [torch.from_numpy(sharp.astype(np.float32)),
              torch.nn.functional.interpolate(coarse[None], scale_factor=2, mode="bilinear")[0]]
    labels = torch.from_numpy(labels).long()
    optimiser = torch.optim.Adam(model.parameters(), 1e-2)
    generator = torch.Generator().manual_seed(0)
    for step in range(steps):
        corners = torch.randint(0, EXTENT - 64, (8, 2), generator=generator).tolist()
        image = (images[step % 2] - 120) / 40
        x = torch.stack([image[:, r:r + 64, c:c + 64] for r, c in corners])
        y = torch.stack([labels[r:r + 64, c:c + 64] for r, c in corners])
        loss = torch.nn.functional.cross_entropy(model(x), y)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    ckpt = Checkpoint(architecture="Unet", model_config=dict(TINY_MODEL),
                      state_dict=model.eval().state_dict(), classes=DEEPGLOBE, bands=[1, 2, 3],
                      mean=[120.0] * 3, std=[40.0] * 3, chip_size=64, resolution=1.0, train_config=config)
    return load_checkpoint(save_checkpoint(ckpt, path))


@pytest.fixture(scope="module")
def texture_model(tmp_path_factory):
    return train_at_1m(tmp_path_factory.mktemp("texture") / "m.ckpt", "texture", 150, {"resolution": 1.0})


@pytest.fixture(scope="module")
def colour_model(tmp_path_factory):
    return train_at_1m(tmp_path_factory.mktemp("colour") / "m.ckpt", "colour", 60, {"resolution": 1.0})


def classes(path) -> np.ndarray:
    with rasterio.open(path) as src:
        return src.read(1)


def predicted(tmp_path, scene_path, ckpt, sampling="model"):
    out = tmp_path / f"{scene_path.stem}_{sampling}_classes.tif"
    predict_scene(scene_path, ckpt, out, PredictOptions(sampling=sampling))
    with rasterio.open(out) as dst, rasterio.open(scene_path) as src:
        assert (dst.transform, dst.crs, dst.shape) == (src.transform, src.crs, src.shape)  # exactly
    assert not any(p.name.startswith(f".{out.stem}") for p in tmp_path.iterdir())  # the work folder is gone
    return classes(out)


def enlarge(a: np.ndarray, k: int) -> np.ndarray:
    return np.repeat(np.repeat(a, k, 0), k, 1)


def test_a_1m_model_reads_half_metre_pixels_at_1m(texture_model, tmp_path):
    """The classes differ only in the size of their stripes: read at its own 0.5 m pixels the scene looks
    twice as large to the model and one class is taken for the other; read at 1 m, as the model was trained,
    the map is right and matches the map of the same ground imaged at 1 m."""
    truth = ground(0.5, "texture")[1]
    half = scene(tmp_path, 0.5, "texture")
    at_model = predicted(tmp_path, half, texture_model)
    native = predicted(tmp_path, half, texture_model, sampling="native")
    one_metre = predicted(tmp_path, scene(tmp_path, 1.0, "texture"), texture_model)
    assert (at_model == truth).mean() >= 0.97
    assert (native == truth).mean() <= 0.7
    assert (at_model == enlarge(one_metre, 2)).mean() >= 0.99


def test_half_and_two_metre_scenes_of_the_same_ground_agree(colour_model, tmp_path):
    half = predicted(tmp_path, scene(tmp_path, 0.5, "colour"), colour_model)
    two = predicted(tmp_path, scene(tmp_path, 2.0, "colour"), colour_model)
    assert half.shape == (384, 384) and two.shape == (96, 96)
    assert (half == enlarge(two, 4)).mean() >= 0.99
    assert (half == ground(0.5, "colour")[1]).mean() >= 0.98


def test_a_downsize_res_model_reads_pixel_grids_at_its_size(colour_model, tmp_path):
    """A model trained with ``downsize_res`` on scenes without a CRS (DeepGlobe) reads a 2× larger image at
    half size, like its training chips, and writes the image's own grid."""
    downsized = replace(colour_model, train_config={"downsize_res": 192}, resolution=None)
    ckpt = save_checkpoint(downsized, tmp_path / "downsized.ckpt")
    half = scene(tmp_path, 0.5, "colour", crs=None)
    assert model_scale(downsized, GeoGrid(384, 384, Affine.identity(), None), half) == (2.0, 2.0)
    out = predicted(tmp_path, half, ckpt)
    assert (out == ground(0.5, "colour")[1]).mean() >= 0.98


def test_a_scene_in_degrees_is_read_at_the_models_ground_sampling(colour_model, tmp_path):
    """A 1 m model on a scene in degrees reads it at 1 m on the ground: the pixel's geodesic width and height
    at the scene's centre (pyproj's Geod, computed here independently), and writes the scene's own grid."""
    path = write_raster(tmp_path / "wgs84.tif", ground(1.0, "colour")[0], Affine(1e-5, 0, 10, 0, -1e-5, 50),
                        crs="EPSG:4326")
    geod = pyproj.Geod(ellps="WGS84")
    lat = 50 - 96e-5
    width = geod.inv(10 + 96e-5, lat, 10 + 97e-5, lat)[2]
    height = geod.inv(10 + 96e-5, lat, 10 + 96e-5, lat - 1e-5)[2]
    with rasterio.open(path) as src:
        scale = model_scale(colour_model, GeoGrid.from_dataset(src), path)
    assert scale == pytest.approx((1 / width, 1 / height), rel=1e-6)
    out = predicted(tmp_path, path, colour_model.path)
    assert out.shape == (192, 192)


@pytest.mark.parametrize("n_scene, n_model", [(384, 192), (96, 192), (100, 37), (37, 100), (50, 50)])
def test_resampling_weights_sum_to_one_and_stay_inside(n_scene, n_model):
    """Bilinear weights sum to 1; area weights to the model pixels a scene pixel covers."""
    index, weight = axis_taps(n_scene, n_model, 0, n_scene)
    assert np.allclose(weight.sum(axis=1), max(1.0, n_model / n_scene))
    assert index.min() >= 0 and index.max() < n_model


def test_resampled_blocks_equal_one_whole_scene_block(colour_model, tmp_path):
    """Taking probabilities back to the scene block by block gives exactly what one block gives."""
    probs = np.random.default_rng(0).random((7, 40, 30)).astype(np.float32)
    probs[:, 5:9, 3:7] = np.nan
    pp = write_raster(tmp_path / "p.tif", probs)
    sp = write_raster(tmp_path / "s.tif", np.full((3, 101, 77), 9, np.uint8))
    lut = DEEPGLOBE.index_to_code_lut()
    with rasterio.open(pp) as p, rasterio.open(sp) as s:
        whole = resampled_block(p, s, [1, 2, 3], Window(0, 0, 77, 101), lut, True, "float32")
        for r in range(0, 101, 33):
            for c in range(0, 77, 20):
                w = Window(c, r, min(20, 77 - c), min(33, 101 - r))
                part = resampled_block(p, s, [1, 2, 3], w, lut, True, "float32")
                sl = np.s_[r:r + w.height, c:c + w.width]
                assert np.array_equal(part.codes, whole.codes[sl])
                assert np.array_equal(part.confidence, whole.confidence[sl])
                assert np.array_equal(part.probabilities, whole.probabilities[(slice(None), *sl)],
                                      equal_nan=True)
    hole = whole.codes[10:25, 5:20] == 255  # nothing predicted there: nodata, not a guess
    assert hole[5:10, 5:10].all() and (whole.codes == 255).sum() == hole.sum() < 15 * 15


def web_mercator_ground(lat: float) -> tuple[float, float]:
    """Ground metres per EPSG:3857 unit along x and y at latitude ``lat``, from the projection's formulas
    (x = aλ, y = a·ln tan(π/4 + φ/2) on WGS84's geodetic latitude, so dx = a·cosφ⁻¹·dλ·cosφ ... ) and the
    ellipsoid's radii of curvature: N·cosφ/a along a parallel, M·cosφ/a along a meridian."""
    a, e2 = 6378137.0, 0.0066943799901413165
    phi = np.radians(lat)
    w = 1 - e2 * np.sin(phi) ** 2
    n, m = a / np.sqrt(w), a * (1 - e2) / w ** 1.5
    return n * np.cos(phi) / a, m * np.cos(phi) / a


def test_web_mercator_at_60_north_is_read_at_its_ground_size(texture_model, tmp_path):
    """Half-metre imagery from a tile service at 60° N has pixels of about 1 Web Mercator unit: read as 1 m
    the stripes look twice as large and the classes swap; read by their ground size they are right."""
    x, y = pyproj.Transformer.from_crs("EPSG:4326", "EPSG:3857", always_xy=True).transform(10.0, 60.0)
    per_unit = web_mercator_ground(60.0)
    image, truth = ground(0.5, "texture")
    path = write_raster(tmp_path / "mercator.tif", image,
                        Affine(0.5 / per_unit[0], 0, x, 0, -0.5 / per_unit[1], y), crs="EPSG:3857")
    with rasterio.open(path) as src:
        scale = model_scale(texture_model, GeoGrid.from_dataset(src), path)
    assert scale == pytest.approx((2.0, 2.0), rel=1e-4)
    assert (predicted(tmp_path, path, texture_model) == truth).mean() >= 0.97


def test_non_square_pixels_are_sampled_per_axis(colour_model, tmp_path):
    """0.5 m × 1 m pixels: two scene columns and one scene row per model pixel, not 1 m × 2 m pixels."""
    image = ground(0.5, "colour")[0][:, ::2, :]
    path = write_raster(tmp_path / "oblong.tif", image, Affine(0.5, 0, 500000, 0, -1.0, 5000000))
    with rasterio.open(path) as src:
        grid = GeoGrid.from_dataset(src)
        scale = model_scale(colour_model, grid, path)
    assert scale == pytest.approx((2 * 0.9996, 0.9996), rel=1e-4)
    assert grid.zoom(scale).shape == (192, 192)
    truth = ground(0.5, "colour")[1][::2, :]
    assert (predicted(tmp_path, path, colour_model) == truth).mean() >= 0.97


@pytest.mark.parametrize("res", [0.5, 0.25])
def test_nan_holes_stay_exactly_nodata_at_the_models_sampling(colour_model, tmp_path, res):
    """A float scene with NaN holes and no declared nodata: exactly the NaN pixels are nodata in the classes
    (bilinear reads used to spread NaN and lose a ring of valid pixels around every hole)."""
    image = ground(res, "colour")[0].astype(np.float32)
    n = image.shape[1]
    holes = np.zeros((n, n), bool)
    holes[n // 4:n // 4 + 40, n // 3:n // 3 + 60] = True
    holes[n - 7:, :5] = True  # a hole at the scene's corner
    holes[n // 2, n // 2] = True  # a single pixel
    image[:, holes] = np.nan
    path = write_raster(tmp_path / f"holes_{res}.tif", image, Affine(res, 0, 500000, 0, -res, 5000000))
    out = predicted(tmp_path, path, colour_model)
    assert np.array_equal(out == 255, holes)


def test_a_coarse_scene_and_a_fine_model_are_refused_before_any_work(colour_model, tmp_path):
    """300 m pixels read by a 1 m model would be 90,000 times the pixels: one sentence naming both sizes and
    the way out, nothing written; a 2 m scene (4× the pixels) is predicted."""
    path = write_raster(tmp_path / "landsat.tif", np.full((3, 40, 30), 100, np.uint8),
                        Affine(300, 0, 500000, 0, -300, 5000000))
    out = tmp_path / "landsat_classes.tif"
    with pytest.raises(ConfigError, match=r"300 m × 300 m pixels .* 1 m pixels.*--sampling native"):
        predict_scene(path, colour_model, out, PredictOptions())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["landsat.tif"]
    assert predicted(tmp_path, scene(tmp_path, 2.0, "colour"), colour_model).shape == (96, 96)


def test_a_scene_whose_scale_varies_gets_one_warning(tmp_path):
    """EPSG:4326 across 20° of latitude: pixel widths vary by a third; one warning says so."""
    grid = GeoGrid(200, 200, Affine(0.1, 0, 10, 0, -0.1, 60), CRS.from_epsg(4326))
    with pytest.warns(UserWarning, match="measure from") as caught:
        sampling_scale(grid, None, 5000.0, "wide.tif")
    assert len([w for w in caught if "measure from" in str(w.message)]) == 1
    small = GeoGrid(200, 200, Affine(1e-4, 0, 10, 0, -1e-4, 60), CRS.from_epsg(4326))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        sampling_scale(small, None, 10.0, "small.tif")
