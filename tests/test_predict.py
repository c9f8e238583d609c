import numpy as np
import pytest
import rasterio

from geoseg.errors import OutputError, RasterError
from geoseg.inference.blocks import blend_weights
from geoseg.inference.predict import PredictOptions, predict_scene
from geoseg.io.classes import NODATA

from conftest import write_raster

FP32 = dict(precision="fp32", processes=False, batch_size=4)


def _predict(scene, ckpt, out, **kw):
    opts = PredictOptions(**{**FP32, **kw})
    predict_scene(scene, ckpt, out, opts, overwrite=True)
    with rasterio.open(out) as ds:
        return ds.read(1), ds.profile, ds.colormap(1)


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


def _reference_prediction(scene, ckpt_path, overlap, tta="none", tile=None):
    """Whole-scene blending written out plainly (chips of ``tile``, default the training chip): the answer
    block-wise prediction must give."""
    import torch
    from rasterio.windows import Window

    from geoseg.io.grid import ChipGrid
    from geoseg.io.raster import open_raster, read_padded
    from geoseg.models.checkpoint import load_checkpoint

    ckpt = load_checkpoint(ckpt_path)
    model = ckpt.build()
    with open_raster(scene) as src:
        g = ChipGrid.for_scene(src.width, src.height, tile or ckpt.chip_size, overlap)
        span = Window(-g.offset, -g.offset, (g.cols - 1) * g.stride + g.chip,
                      (g.rows - 1) * g.stride + g.chip)
        data, valid, content = read_padded(src, span, ckpt.bands)
        h, w = src.height, src.width
    data = (data - np.array(ckpt.mean, np.float32)[:, None, None]) / np.array(ckpt.std, np.float32)[:, None,
                                                                                                    None]
    data[:, ~content] = 0  # nodata; outside the scene, the reflected pixels
    weight = blend_weights(g.chip, overlap)
    acc = np.zeros((len(ckpt.classes), data.shape[1], data.shape[2]), np.float64)
    for i in range(g.rows):
        for j in range(g.cols):
            r, c = i * g.stride, j * g.stride
            if not valid[r:r + g.chip, c:c + g.chip].any():
                continue
            x = torch.from_numpy(data[None, :, r:r + g.chip, c:c + g.chip])
            flips = [()] if tta == "none" else [(), (3,), (2,), (2, 3)]
            with torch.no_grad():
                p = sum(torch.flip(torch.softmax(model(torch.flip(x, d)), 1), d) for d in flips)[0].numpy()
            p = p / len(flips)
            acc[:, r:r + g.chip, c:c + g.chip] += p * weight
    o = g.offset
    classes = acc[:, o:o + h, o:o + w].argmax(0).astype(np.uint8)
    classes[~valid[o:o + h, o:o + w]] = NODATA
    return classes


@pytest.mark.parametrize("overlap", [0, 16, 32])
def test_block_wise_prediction_equals_whole_scene_blending(rgb_scene, tiny_checkpoint, tmp_path, overlap):
    """200×150 px is no multiple of the stride (tile - overlap) and has a nodata corner; the default tile
    (64 px, or one 224 px tile where an overlap of 32 makes 64 px chips compute more) blended over the
    whole scene."""
    from geoseg.models.checkpoint import load_checkpoint
    from geoseg.models.tiling import default_tile

    got, _, _ = _predict(rgb_scene, tiny_checkpoint, tmp_path / "out.tif", block_chips=2, overlap=overlap,
                         batch_size=1)
    tile = default_tile(load_checkpoint(tiny_checkpoint), 200, 150, overlap)
    with rasterio.open(tmp_path / "out.tif") as ds:
        assert ds.tags()["tile"] == str(tile)
    expected = _reference_prediction(rgb_scene, tiny_checkpoint, overlap, tile=tile)
    assert (got == expected).mean() >= 0.9999
    assert ((got == NODATA) == (expected == NODATA)).all()


@pytest.mark.parametrize("tile,overlap", [(96, 16), (128, 40)])
def test_larger_tiles_than_the_training_chip_blend_as_the_whole_scene(rgb_scene, tiny_checkpoint, tmp_path,
                                                                       tile, overlap):
    """A model trained on 64 px chips predicting 96 and 128 px tiles: block by block as whole-scene blending
    of those tiles, the same for any block size, the tile recorded in the raster's tags."""
    got, _, _ = _predict(rgb_scene, tiny_checkpoint, tmp_path / "a.tif", block_chips=1, overlap=overlap,
                         batch_size=1, tile=tile)
    again, _, _ = _predict(rgb_scene, tiny_checkpoint, tmp_path / "b.tif", block_chips=3, overlap=overlap,
                           batch_size=1, tile=tile)
    expected = _reference_prediction(rgb_scene, tiny_checkpoint, overlap, tile=tile)
    assert (got == expected).mean() >= 0.9999 and (got == again).all()
    assert ((got == NODATA) == (expected == NODATA)).all()
    plain = _reference_prediction(rgb_scene, tiny_checkpoint, overlap)
    assert (expected != plain).any()  # another tiling: a different blend, so the tile was really used
    with rasterio.open(tmp_path / "a.tif") as ds:
        assert (ds.tags()["tile"], ds.tags()["chip_size"]) == (str(tile), "64")


def test_confidence_probabilities_and_cog(rgb_scene, tiny_checkpoint, tmp_path):
    out = tmp_path / "lc.tif"
    res = predict_scene(rgb_scene, tiny_checkpoint, out,
                        PredictOptions(**FP32, confidence=True, probabilities="uint8", cog=True))
    assert set(res.extra) == {"confidence", "probabilities"}
    with rasterio.open(out) as c, rasterio.open(tmp_path / "lc_confidence.tif") as conf, \
            rasterio.open(tmp_path / "lc_probabilities.tif") as prob:
        assert c.tags(ns="IMAGE_STRUCTURE").get("LAYOUT") == "COG"
        assert conf.transform == c.transform and prob.count == 7
        classes, confidence, probs = c.read(1), conf.read(1), prob.read()
        assert c.colormap(1)[4] == (0, 0, 255, 255)
    valid = classes != NODATA
    assert ((confidence == NODATA) == ~valid).all()
    assert confidence[valid].min() >= 14 and confidence[valid].max() <= 100  # ≥ 1/7 for 7 classes
    # the class is the most probable one and probabilities sum to ~1 (uint8, scaled by 254)
    pv = probs[:, valid].astype(int)
    chosen = np.take_along_axis(pv, classes[valid][None].astype(int), 0)[0]
    assert (chosen >= pv.max(0) - 1).all()  # equal to the maximum up to uint8 rounding
    assert np.abs(probs[:, valid].astype(int).sum(0) - 254).max() <= 4


def test_tta_flips_averages_flipped_predictions_and_keeps_the_grid(rgb_scene, tiny_checkpoint, tmp_path):
    a, profile, _ = _predict(rgb_scene, tiny_checkpoint, tmp_path / "a.tif", tta="flips", block_chips=2)
    with rasterio.open(rgb_scene) as src:
        assert profile["transform"] == src.transform
    plain, _, _ = _predict(rgb_scene, tiny_checkpoint, tmp_path / "b.tif", block_chips=2)
    expected = _reference_prediction(rgb_scene, tiny_checkpoint, 8, tta="flips")
    assert a.shape == (150, 200) and (a == expected).mean() >= 0.9999
    assert (a != plain).sum() > 100  # TTA changes the answer of a model that is not flip-equivariant


def test_two_worker_processes_match_in_process(rgb_scene, tiny_checkpoint, tmp_path):
    a, _, _ = _predict(rgb_scene, tiny_checkpoint, tmp_path / "a.tif", block_chips=1, batch_size=1)
    b, _, _ = _predict(rgb_scene, tiny_checkpoint, tmp_path / "b.tif", block_chips=1, batch_size=1, workers=2,
                       processes=True)
    assert (a == b).all()


def test_one_predict_loads_the_checkpoint_once_and_checks_each_output_once(rgb_scene, tiny_checkpoint,
                                                                           tmp_path,
                                                                            monkeypatch):
    """Spies on the real torch.load and path check (they still run): the loaded checkpoint is passed down."""
    from pathlib import Path

    import torch

    import geoseg.inference.predict
    import geoseg.io.atomic
    from geoseg.inference.blocks import _MODELS
    from geoseg.inference.predict import VectorOptions, predict

    _MODELS.clear()
    loads, checks = [], []
    real_load, real_check = torch.load, geoseg.io.atomic.check_output_path

    def load(f, *args, **kwargs):
        loads.append(Path(f).name)
        return real_load(f, *args, **kwargs)

    def check(path, overwrite=True):
        checks.append(Path(path).name)
        return real_check(path, overwrite)

    monkeypatch.setattr(torch, "load", load)
    monkeypatch.setattr(geoseg.io.atomic, "check_output_path", check)
    monkeypatch.setattr(geoseg.inference.predict, "check_output_path", check)
    predict(rgb_scene, tmp_path / "lc.gpkg", tiny_checkpoint, options=PredictOptions(**FP32, confidence=True),
            vector=VectorOptions(min_area=1.0))
    assert loads == ["tiny.ckpt"]
    assert [checks.count(n) for n in ("lc.gpkg", "lc.tif", "lc_confidence.tif")] == [1, 1, 1]
    assert (tmp_path / "lc.gpkg").exists() and (tmp_path / "lc_confidence.tif").exists()
    _MODELS.clear()


def test_nan_pixels_of_a_float_scene_are_nodata(tiny_checkpoint, tmp_path):
    """A float reflectance-like scene without a nodata value and a 20 × 20 NaN hole: exactly the hole is
    nodata in the class raster; the NaN does not spread into neighbouring pixels."""
    rng = np.random.default_rng(4)
    data = (rng.random((3, 130, 150)) * 200 + 20).astype(np.float32)
    data[:, 40:60, 70:90] = np.nan
    data[1, 100, 10] = np.inf  # one band infinite: the pixel is nodata too
    scene = write_raster(tmp_path / "float.tif", data)
    classes, _, _ = _predict(scene, tiny_checkpoint, tmp_path / "out.tif")
    hole = np.zeros((130, 150), bool)
    hole[40:60, 70:90] = True
    hole[100, 10] = True
    assert ((classes == NODATA) == hole).all()
