import numpy as np
import pytest
import rasterio

from geoseg.classes import NODATA
from geoseg.errors import OutputError, RasterError
from geoseg.predict import PredictOptions, blend_weights, predict_scene

from conftest import write_raster

FP32 = dict(precision="fp32", processes=False, batch_size=4)


def _predict(scene, ckpt, out, **kw):
    opts = PredictOptions(**{**FP32, **kw})
    predict_scene(scene, ckpt, out, opts, overwrite=True)
    with rasterio.open(out) as ds:
        return ds.read(1), ds.profile, ds.colormap(1)


def test_blend_weights_are_positive_and_cross_fade():
    w = blend_weights(64, 16)
    assert w.min() > 0 and w.max() == 1.0
    one = w[32]  # a row through the middle: ramps sum to 1 across a 16 px overlap
    assert np.allclose(one[48:64] + one[0:16], 1.0)
    assert (blend_weights(8, 0) == 1).all()


def test_output_grid_palette_and_nodata(rgb_scene, tiny_checkpoint, tmp_path):
    classes, profile, cmap = _predict(rgb_scene, tiny_checkpoint, tmp_path / "out.tif")
    with rasterio.open(rgb_scene) as src:
        assert profile["crs"] == src.crs and profile["transform"] == src.transform
        assert (profile["width"], profile["height"]) == (src.width, src.height)
        valid = src.dataset_mask() > 0
    assert profile["nodata"] == NODATA
    assert cmap[1] == (255, 255, 0, 255) and cmap[4] == (0, 0, 255, 255)
    assert ((classes == NODATA) == ~valid).all()
    assert set(np.unique(classes[valid])) <= set(range(7))
    assert (tmp_path / "out.qml").exists()


def test_result_independent_of_block_size(rgb_scene, tiny_checkpoint, tmp_path):
    a, _, _ = _predict(rgb_scene, tiny_checkpoint, tmp_path / "a.tif", block_chips=1, overlap=16)
    b, _, _ = _predict(rgb_scene, tiny_checkpoint, tmp_path / "b.tif", block_chips=3, overlap=16)
    c, _, _ = _predict(rgb_scene, tiny_checkpoint, tmp_path / "c.tif", block_chips=50, overlap=16)
    assert (a == b).all() and (a == c).all()


def test_result_independent_of_worker_count(rgb_scene, tiny_checkpoint, tmp_path):
    a, _, _ = _predict(rgb_scene, tiny_checkpoint, tmp_path / "a.tif", block_chips=1, workers=1)
    b, _, _ = _predict(rgb_scene, tiny_checkpoint, tmp_path / "b.tif", block_chips=1, workers=2)
    assert (a == b).all()


def test_scene_smaller_than_a_chip(tiny_checkpoint, tmp_path):
    rng = np.random.default_rng(1)
    scene = write_raster(tmp_path / "small.tif", rng.integers(1, 255, (3, 20, 37), dtype=np.uint8))
    classes, profile, _ = _predict(scene, tiny_checkpoint, tmp_path / "out.tif")
    assert classes.shape == (20, 37) and (classes != NODATA).all()


def test_all_nodata_scene_runs_no_chips(tiny_checkpoint, tmp_path):
    scene = write_raster(tmp_path / "empty.tif", np.zeros((3, 70, 70), np.uint8), nodata=0)
    res = predict_scene(scene, tiny_checkpoint, tmp_path / "out.tif", PredictOptions(**FP32))
    assert res.chips == 0
    with rasterio.open(tmp_path / "out.tif") as ds:
        assert (ds.read(1) == NODATA).all()


def test_existing_output_needs_overwrite(rgb_scene, tiny_checkpoint, tmp_path):
    out = tmp_path / "out.tif"
    out.write_text("precious")
    with pytest.raises(OutputError, match="--overwrite"):
        predict_scene(rgb_scene, tiny_checkpoint, out, PredictOptions(**FP32))
    assert out.read_text() == "precious"


def test_wrong_band_count_is_refused(tiny_checkpoint, tmp_path):
    scene = write_raster(tmp_path / "gray.tif", np.ones((1, 30, 30), np.uint8))
    with pytest.raises(RasterError, match="has 1 band"):
        predict_scene(scene, tiny_checkpoint, tmp_path / "out.tif", PredictOptions(**FP32))
    assert not list(tmp_path.glob("out*"))
