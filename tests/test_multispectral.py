"""Multispectral imagery: bands by description, GDAL scale/offset (Sentinel-2 L2A's −1000 offset), percentile
normalisation recorded in the checkpoint; 16-bit scenes trained and predicted without manual rescaling."""

from __future__ import annotations

import numpy as np
import pytest
import rasterio

from geoseg.errors import RasterError
from geoseg.inference.predict import PredictOptions, predict_scene
from geoseg.io.raster import read_padded, resolve_bands
from geoseg.models.checkpoint import load_checkpoint
from geoseg.training.config import parse_config
from geoseg.training.trainer import train

from conftest import TINY_MODEL, write_raster

S2_ORDER = ["B02", "B03", "B04", "B08"]


def l2a_scene(path, order=S2_ORDER, seed=0):
    """A 4-band uint16 scene stored as Sentinel-2 L2A after baseline 04.00 stores it: DN = reflectance ×
    10000 + 1000, with GDAL scale 0.0001 and offset −0.1; water (left half) is dark in B08, fields bright."""
    reflectance = {"B02": 0.05, "B03": 0.07, "B04": 0.06, "B08": 0.35}
    water = {"B02": 0.06, "B03": 0.05, "B04": 0.03, "B08": 0.01}
    bands = []
    for name in order:
        r = np.full((128, 128), reflectance[name])
        r[:, :64] = water[name]
        noise = np.random.default_rng([seed, S2_ORDER.index(name)]).normal(0, 0.005, r.shape)
        bands.append(np.round((r + noise) * 10000 + 1000).astype(np.uint16))
    path = write_raster(path, np.stack(bands))
    with rasterio.open(path, "r+") as dst:
        dst.descriptions = tuple(order)
        dst.scales = [1e-4] * 4
        dst.offsets = [-0.1] * 4
    return path


def labels(path):
    codes = np.full((128, 128), 3, np.uint8)  # agriculture
    codes[:, :64] = 5  # water
    return write_raster(path, codes, nodata=255)


def test_bands_by_description_and_scale_offset(tmp_path):
    scene = l2a_scene(tmp_path / "s.tif")
    with rasterio.open(scene) as src:
        assert resolve_bands(src, scene, ["b04", "B08", 1]) == [3, 4, 1]
        data, valid, _ = read_padded(src, rasterio.windows.Window(0, 0, 128, 128), [4])
        with pytest.raises(RasterError, match="has no band described as 'B11' .*B02, B03, B04, B08"):
            resolve_bands(src, scene, ["B11"])
    assert abs(float(data[0, :, 64:].mean()) - 0.35) < 0.002  # reflectance, not DN
    assert abs(float(data[0, :, :64].mean()) - 0.01) < 0.002


def test_16_bit_l2a_scenes_train_and_predict_by_band_name(tmp_path):
    l2a_scene(tmp_path / "train.tif")
    labels(tmp_path / "train_labels.tif")
    (tmp_path / "m.csv").write_text("image,label,split\ntrain.tif,train_labels.tif,train\n"
                                    "train.tif,train_labels.tif,val\n")
    cfg = parse_config({"manifest": "m.csv", "bands": ["B04", "B03", "B02", "B08"],
                        "normalization": "percentile 2 98", "model_config": {**TINY_MODEL, "in_channels": 4},
                        "chip_size": 64, "chips_per_epoch": 32, "batch_size": 4, "epochs": 5, "lr": 0.01,
                        "num_workers": 0, "val_chips": 4, "output_dir": "runs", "logger": "csv",
                        "ce_weights": [1, 1, 1, 1, 1, 1, 0]}, tmp_path)
    result = train(cfg)
    ckpt = load_checkpoint(result.best)
    assert ckpt.bands == ["B04", "B03", "B02", "B08"]
    low, high = ckpt.clip
    assert all(-0.05 < v < 0.5 for v in low + high)  # reflectance percentiles, not DN
    assert high[3] > 0.3 and low[3] < 0.05  # B08: water dark, fields bright
    # the same ground stored with its bands in another order predicts the same map
    other = l2a_scene(tmp_path / "reordered.tif", order=["B08", "B02", "B04", "B03"])
    out_a, out_b = tmp_path / "a.tif", tmp_path / "b.tif"
    predict_scene(tmp_path / "train.tif", result.best, out_a)
    predict_scene(other, result.best, out_b)
    with rasterio.open(out_a) as a, rasterio.open(out_b) as b:
        classes_a, classes_b = a.read(1), b.read(1)
    assert np.array_equal(classes_a, classes_b)
    assert (classes_a[:, :64] == 5).mean() > 0.95 and (classes_a[:, 64:] == 3).mean() > 0.95
    with pytest.raises(RasterError, match="no band described as 'B04'"):
        plain = write_raster(tmp_path / "plain.tif", np.zeros((4, 64, 64), np.uint16))
        predict_scene(plain, result.best, tmp_path / "c.tif", PredictOptions())
