"""Predicting at the model's sampling: the scene read as the model's training chips were, the probabilities
taken back onto the scene's own pixels.

A model trained with ``resolution:`` (metres per pixel) or ``downsize_res:``
(each scene resized to that many pixels on its longer side) has learnt objects
at that size. :func:`model_scale` gives a scene's pixels per model pixel;
:func:`sampled_copy` writes the scene at that sampling (the same windowed
``out_shape`` reads as training, bilinear) as a tiled GeoTIFF that prediction
runs on; :func:`resampled_block` takes the class probabilities predicted on that
grid back onto a block of the scene's own pixels (bilinear where the model's
pixels are larger, area-weighted where they are smaller) before the argmax, so
classes and polygons line up pixel for pixel with the imagery. Every output
pixel is a fixed weighted sum of a few model pixels, so the result does not
depend on how the scene is cut into blocks.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Sequence

import numpy as np
import rasterio
from rasterio.enums import MaskFlags, Resampling
from rasterio.windows import Window

from geoseg.data.model_input import sampling_scale
from geoseg.errors import GeoSegWarning
from geoseg.inference.blocks import FinishedBlock, encode_block, top_class
from geoseg.io.aoi import area_mask
from geoseg.io.atomic import atomic_output
from geoseg.io.fingerprint import cache_key, file_identity
from geoseg.io.grid import GeoGrid
from geoseg.io.raster import open_raster, read_errors, read_padded
from geoseg.models.checkpoint import Checkpoint

#: Scenes within 1 % of the model's sampling are read as they are.
SAME_SAMPLING = 0.01

#: Sampled rows read and written at a time while making the copy.
COPY_ROWS = 256


def model_scale(ckpt: Checkpoint, grid: GeoGrid, scene: str | os.PathLike) -> float:
    """Scene pixels per model pixel for ``scene`` (1 when the model was trained on native pixels, or when the
    scene's pixel size in metres is unknown; a warning says so)."""
    config = ckpt.train_config
    scale = sampling_scale(grid, config.get("downsize_res"), config.get("resolution"))
    if scale is None:
        where = "has no CRS" if grid.crs is None else f"is in the geographic CRS {grid.crs}"
        warnings.warn(f"the model was trained at {config['resolution']:g} m pixels but {scene} {where}, "
                      "so it is predicted at its own pixels; reproject it to a projected CRS (e.g. its "
                      "UTM zone) to predict at the model's sampling", GeoSegWarning)
        return 1.0
    return 1.0 if abs(scale - 1) <= SAME_SAMPLING else scale


def describe_sampling(ckpt: Checkpoint) -> str:
    """How the model's chips were sampled, for messages."""
    config = ckpt.train_config
    if config.get("downsize_res"):
        return f"each scene resized to {config['downsize_res']} px on its longer side"
    return f"{config['resolution']:g} m pixels"


def sampled_copy(scene: str | os.PathLike, bands: Sequence[int], grid: GeoGrid, sampled: GeoGrid,
                 folder: Path) -> Path:
    """``bands`` of ``scene`` resampled onto ``sampled`` (bilinear, as training reads chips), as a tiled
    GeoTIFF in ``folder`` named by the scene's content, grid and bands (made once; memory bounded by
    :data:`COPY_ROWS` rows)."""
    target = folder / f"scene-{cache_key(file_identity(scene), sampled.shape, list(bands))}.tif"
    if target.exists():
        return target
    fy = grid.height / sampled.height
    with open_raster(scene) as src:
        masked = any(MaskFlags.all_valid not in f for f in src.mask_flag_enums)
        profile = {"driver": "GTiff", "width": sampled.width, "height": sampled.height, "count": len(bands),
                   "dtype": src.dtypes[bands[0] - 1], "crs": sampled.crs, "transform": sampled.transform,
                   "nodata": src.nodata, "tiled": True, "blockxsize": 256, "blockysize": 256,
                   "compress": "deflate", "zlevel": 1, "bigtiff": "IF_SAFER"}
        with atomic_output(target) as tmp, rasterio.Env(GDAL_TIFF_INTERNAL_MASK=True), \
                rasterio.open(tmp, "w", **profile) as dst:
            dst.scales = [src.scales[b - 1] for b in bands]
            dst.offsets = [src.offsets[b - 1] for b in bands]
            for row in range(0, sampled.height, COPY_ROWS):
                rows = min(COPY_ROWS, sampled.height - row)
                window = Window(0, row * fy, grid.width, rows * fy)
                with read_errors(src):
                    data = src.read(list(bands), window=window, out_shape=(len(bands), rows, sampled.width),
                                    resampling=Resampling.bilinear)
                    mask = src.dataset_mask(window=window, out_shape=(rows, sampled.width),
                                            resampling=Resampling.nearest) if masked else None
                out = Window(0, row, sampled.width, rows)
                dst.write(data, window=out)
                if mask is not None:  # nodata, alpha and mask bands stay nodata
                    dst.write_mask(mask, window=out)
    return target


def axis_taps(n_scene: int, n_model: int, start: int, count: int) -> tuple[np.ndarray, np.ndarray]:
    """Which model pixels, with which weights, make scene pixels ``start .. start+count`` along one axis of
    ``n_scene`` scene pixels and ``n_model`` model pixels: ``(index[count, taps], weight[count, taps])``.

    Model pixels larger than the scene's: bilinear between the two nearest pixel
    centres (the edge pixel repeated past the edge). Smaller: the area of each
    model pixel inside the scene pixel.
    """
    ratio = n_scene / n_model  # scene pixels per model pixel
    x = np.arange(start, start + count, dtype=np.float64)
    if ratio >= 1:
        u = (x + 0.5) / ratio - 0.5
        first = np.floor(u)
        t = u - first
        index = first[:, None].astype(np.int64) + np.arange(2)
        weight = np.stack([1 - t, t], axis=1)
    else:
        lo, hi = x / ratio, (x + 1) / ratio
        index = np.floor(lo)[:, None].astype(np.int64) + np.arange(int(np.ceil(1 / ratio)) + 1)
        weight = np.clip(np.minimum(hi[:, None], index + 1) - np.maximum(lo[:, None], index), 0, None)
    return np.clip(index, 0, n_model - 1), weight.astype(np.float32)


def resampled_block(probabilities, scene, bands: Sequence[int], window: Window, lut: np.ndarray,
                    confidence: bool, kind: str | None, area: bytes | None = None) -> FinishedBlock:
    """The outputs of one block ``window`` of the open ``scene``'s own grid from the class ``probabilities``
    (an open float32 raster, NaN where nothing was predicted) on the model's grid; nodata where the scene
    is (``bands`` tell which bands' NaNs count) and outside the ``area`` of interest."""
    grid = GeoGrid.from_dataset(scene)
    h, w = int(window.height), int(window.width)
    rows, row_w = axis_taps(grid.height, probabilities.height, int(window.row_off), h)
    cols, col_w = axis_taps(grid.width, probabilities.width, int(window.col_off), w)
    r0, c0 = int(rows.min()), int(cols.min())
    source = Window(c0, r0, int(cols.max()) + 1 - c0, int(rows.max()) + 1 - r0)
    with read_errors(probabilities):
        p = probabilities.read(window=source)
    rows, cols = rows - r0, cols - c0
    predicted = np.isfinite(p).all(axis=0)
    p = np.where(predicted, p, 0)
    total = np.zeros((p.shape[0], h, w), np.float32)
    weight_sum = np.zeros((h, w), np.float32)
    for a in range(rows.shape[1]):
        for b in range(cols.shape[1]):
            r, c = rows[:, a, None], cols[None, :, b]
            weight = row_w[:, a, None] * col_w[None, :, b] * predicted[r, c]
            total += p[:, r, c] * weight
            weight_sum += weight
    probs = total / np.maximum(weight_sum, 1e-12)
    top, index = top_class(probs)
    with rasterio.Env(GDAL_NUM_THREADS="ALL_CPUS"):
        _, valid, _ = read_padded(scene, window, bands)
    if area is not None:
        valid &= area_mask(area, scene.transform, window)
    nodata = ~valid | (weight_sum <= 0)
    return encode_block(window, index, top if confidence else None, probs if kind else None, nodata, lut,
                        kind, 0)
