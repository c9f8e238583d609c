"""The default tile: for a model that looks only at a neighbourhood, the tile (training chip to 4 chips, a
multiple of 32) that computes the fewest pixels for the scene with the training chip's overlap; the chip for
models that see their whole input, exported ONNX models and predictions restricted to an area."""

import math
from dataclasses import replace

import numpy as np
import pytest
import rasterio
import shapely
from rasterio.transform import xy

from geoseg.inference.predict import PredictOptions, predict_scene
from geoseg.inference.schedule import default_gpu_batch
from geoseg.models.checkpoint import load_checkpoint, save_checkpoint
from geoseg.models.export import export_onnx
from geoseg.models.fields import BASELINE, BLEND
from geoseg.models.tiling import default_tile, is_local, largest_tile

from conftest import UTM, write_raster

FP32 = dict(precision="fp32", processes=False, engine="torch")


def _tiles_along(length: int, tile: int, overlap: int) -> int:
    """Tiles of the global grid (origins k·(tile − overlap) − overlap/2) until one reaches the scene's end,
    counted one by one."""
    count, start = 0, -(overlap // 2)
    while True:
        count += 1
        if start + tile >= length:
            return count
        start += tile - overlap


def _fewest_pixels(width: int, height: int, chip: int, overlap: int) -> int:
    """The tile a brute-force search over every multiple of 32 up to 4 chips (1024 px at most) finds."""
    sides = sorted({chip, *range(32, min(4 * chip, 1024) + 1, 32)} - set(range(chip)))
    costs = [(_tiles_along(width, t, overlap) * _tiles_along(height, t, overlap) * t * t, t) for t in sides]
    return min(costs)[1]


@pytest.mark.parametrize("chip", [64, 128, 256, 512])
def test_the_default_tile_computes_the_fewest_pixels(tiny_checkpoint, chip):
    ckpt = replace(load_checkpoint(tiny_checkpoint), chip_size=chip)
    rng = np.random.default_rng(chip)
    sizes = [(20, 37), (500, 500), (1000, 700), (2048, 2048), (4096, 4096), (10980, 10980),
             *rng.integers(50, 6000, (12, 2)).tolist()]
    for width, height in sizes:
        tile = default_tile(ckpt, width, height)
        assert tile == _fewest_pixels(width, height, chip, chip // 8), (chip, width, height)
        assert tile % 32 == 0 and chip <= tile <= max(chip, min(4 * chip, 1024))
    # a scene that fits in one tile a little larger than the chip gets that one tile
    assert default_tile(ckpt, chip + 5, chip + 5) == math.ceil((chip + 5 + chip // 16) / 32) * 32
    assert largest_tile(chip) == min(4 * chip, 1024)


def test_overlap_asked_for_is_the_one_the_search_uses(tiny_checkpoint):
    ckpt = load_checkpoint(tiny_checkpoint)  # 64 px chips
    for overlap in (0, 8, 24):
        assert default_tile(ckpt, 700, 300, overlap) == _fewest_pixels(700, 300, 64, overlap)
    assert default_tile(ckpt, 700, 300, 0) != default_tile(ckpt, 700, 300, 24)


@pytest.mark.parametrize("architecture,encoder,local", [
    ("Unet", "resnet18", True), ("UnetPlusPlus", "resnet34", True), ("FPN", "resnext50_32x4d", True),
    ("Linknet", "vgg11", True), ("DeepLabV3Plus", "resnet34", False), ("PSPNet", "resnet34", False),
    ("Unet", "efficientnet-b0", False), ("Unet", "se_resnext50_32x4d", False), ("Unet", "mit_b0", False),
    ("Unet", "timm-resnest14d", False), ("Segformer", "mit_b0", False), ("MAnet", "resnet34", False)])
def test_only_models_that_see_a_neighbourhood_take_larger_tiles(tiny_checkpoint, architecture, encoder,
                                                                local):
    ckpt = load_checkpoint(tiny_checkpoint)
    config = {**ckpt.model_config, "encoder_name": encoder}
    model = replace(ckpt, architecture=architecture, model_config=config)
    assert is_local(model) is local
    assert default_tile(model, 1000, 1000) == (_fewest_pixels(1000, 1000, 64, 8) if local else 64)
    assert _fewest_pixels(1000, 1000, 64, 8) > 64


def test_baseline_and_blends_follow_their_network(tiny_checkpoint):
    ckpt = load_checkpoint(tiny_checkpoint)
    assert is_local(replace(ckpt, architecture=BASELINE, model_config={}))
    blend = {"network_architecture": "Unet", "network_config": dict(ckpt.model_config), "network_weight": 0.5}
    assert is_local(replace(ckpt, architecture=BLEND, model_config=blend))
    blend["network_architecture"] = "DeepLabV3"
    assert not is_local(replace(ckpt, architecture=BLEND, model_config=blend))


def test_a_gpu_batch_holds_the_pixels_of_eight_training_chips():
    assert default_gpu_batch(128, 128) == 8
    assert default_gpu_batch(256, 128) == 2
    assert default_gpu_batch(512, 128) == 1 and default_gpu_batch(1024, 128) == 1


@pytest.fixture
def wide_scene(tmp_path):
    """A 360×240 px RGB scene with a nodata strip: 64 px chips compute 1.46× the pixels 128 px tiles do."""
    rng = np.random.default_rng(3)
    y, x = np.mgrid[0:240, 0:360]
    data = np.stack([(x * 2) % 250, (y * 3) % 250, ((x - y) % 250)]).astype(np.uint8) + 1
    data = np.clip(data + rng.integers(0, 5, data.shape), 1, 255).astype(np.uint8)
    data[:, :, :12] = 0
    return write_raster(tmp_path / "wide.tif", data, nodata=0)


def _tags(path):
    with rasterio.open(path) as ds:
        return ds.tags(), ds.read(1)


def test_prediction_takes_the_default_tile_with_the_chips_overlap(wide_scene, tiny_checkpoint, tmp_path):
    ckpt = load_checkpoint(tiny_checkpoint)
    expected = _fewest_pixels(360, 240, 64, 8)
    assert expected == 128
    predict_scene(wide_scene, tiny_checkpoint, tmp_path / "default.tif", PredictOptions(**FP32))
    tags, default = _tags(tmp_path / "default.tif")
    assert (tags["tile"], tags["overlap"], tags["chip_size"]) == (str(expected), "8", "64")
    assert default_tile(ckpt, 360, 240) == expected
    # the same tiling asked for explicitly gives the same raster, block by block or whole
    predict_scene(wide_scene, tiny_checkpoint, tmp_path / "asked.tif",
                  PredictOptions(**FP32, tile=expected, overlap=8, block_chips=1))
    assert (_tags(tmp_path / "asked.tif")[1] == default).all()
    # the training chip is still there to ask for, with its own eighth as overlap
    predict_scene(wide_scene, tiny_checkpoint, tmp_path / "chip.tif", PredictOptions(**FP32, tile=64))
    tags, chip = _tags(tmp_path / "chip.tif")
    assert (tags["tile"], tags["overlap"]) == ("64", "8")
    # a tile asked for overlaps by its own eighth, as --tile always did
    predict_scene(wide_scene, tiny_checkpoint, tmp_path / "96.tif", PredictOptions(**FP32, tile=96))
    assert (_tags(tmp_path / "96.tif")[0]["tile"], _tags(tmp_path / "96.tif")[0]["overlap"]) == ("96", "12")
    assert (chip != default).any()  # another tiling, another blend: the default really changed it


def test_a_model_seeing_its_whole_input_keeps_its_chip(wide_scene, tiny_checkpoint, tmp_path):
    ckpt = load_checkpoint(tiny_checkpoint)
    deeplab = replace(ckpt, architecture="DeepLabV3Plus",
                      model_config={"encoder_name": "resnet18", "encoder_depth": 5, "classes": 7,
                                    "in_channels": 3})
    from geoseg.models.checkpoint import build_model

    path = save_checkpoint(replace(deeplab, state_dict=build_model("DeepLabV3Plus", deeplab.model_config)
                                   .state_dict()), tmp_path / "deeplab.ckpt")
    predict_scene(wide_scene, path, tmp_path / "out.tif", PredictOptions(**FP32))
    assert _tags(tmp_path / "out.tif")[0]["tile"] == "64"


def test_an_exported_model_and_an_area_of_interest_keep_the_chip(wide_scene, tiny_checkpoint, tmp_path):
    onnx = export_onnx(tiny_checkpoint, tmp_path / "tiny.onnx")
    predict_scene(wide_scene, onnx, tmp_path / "onnx.tif", PredictOptions(processes=False))
    assert _tags(tmp_path / "onnx.tif")[0]["tile"] == "64"
    with rasterio.open(wide_scene) as ds:
        x0, y0 = xy(ds.transform, 50, 40)
        x1, y1 = xy(ds.transform, 150, 200)
    import geopandas as gpd

    gpd.GeoDataFrame(geometry=[shapely.box(x0, y1, x1, y0)], crs=UTM).to_file(tmp_path / "aoi.gpkg")
    predict_scene(wide_scene, tiny_checkpoint, tmp_path / "aoi.tif",
                  PredictOptions(**FP32, aoi=str(tmp_path / "aoi.gpkg")))
    assert _tags(tmp_path / "aoi.tif")[0]["tile"] == "64"
