"""Predicting at the model's sampling: the scene read as the model's training chips were, the probabilities
taken back onto the scene's own pixels.

A model trained with ``resolution:`` (metres per pixel) or ``downsize_res:``
(each scene resized to that many pixels on its longer side) has learnt objects
at that size. :func:`model_scale` gives a scene's pixels per model pixel;
:func:`geoseg.data.model_input.sampled_copy` writes the scene at that sampling
(the copy training reads too) as a tiled GeoTIFF that prediction runs on;
:func:`resampled_block` takes the class probabilities predicted on that
grid back onto a block of the scene's own pixels (bilinear where the model's
pixels are larger, area-weighted where they are smaller) before the argmax, so
classes and polygons line up pixel for pixel with the imagery. Every output
pixel is a fixed weighted sum of a few model pixels, so the result does not
depend on how the scene is cut into blocks.
"""

from __future__ import annotations

import os
import warnings
from typing import Sequence

import numpy as np
import rasterio
from rasterio.windows import Window

from geoseg.data.model_input import sampling_scale
from geoseg.errors import ConfigError, GeoSegWarning
from geoseg.inference.blocks import FinishedBlock, encode_block, top_class
from geoseg.io.aoi import area_mask
from geoseg.io.grid import GeoGrid
from geoseg.io.raster import read_errors, read_padded
from geoseg.models.checkpoint import Checkpoint

#: The most pixels the model's sampling may make of each scene pixel before a scene is refused (4× finer on
#: each axis): a 300 m scene read by a 1 m model would be 90,000 times its size.
MAX_PIXEL_GROWTH = 16.0

#: The fewest pixels on a side a scene may shrink to at the model's sampling.
MIN_SAMPLED_SIDE = 8


def model_scale(ckpt: Checkpoint, grid: GeoGrid, scene: str | os.PathLike) -> tuple[float, float]:
    """Scene pixels per model pixel for ``scene`` along x and y ((1, 1) when the model was trained on native
    pixels, or when nothing places the scene on Earth: a warning says so). Refuses, before any work, a
    scene the model's sampling would blow up or shrink to nothing."""
    training = ckpt.training
    scale = sampling_scale(grid, training.downsize_res, training.resolution, str(scene))
    if scale is None:
        warnings.warn(f"the model was trained at {training.resolution:g} m pixels but {scene} has no CRS "
                      "and no ground control points, so it is predicted at its own pixels; georeference it "
                      "to predict at the model's sampling", GeoSegWarning)
        return (1.0, 1.0)
    _check_sampled_size(ckpt, grid, scale, scene)
    return scale


def _check_sampled_size(ckpt: Checkpoint, grid: GeoGrid, scale: tuple[float, float], scene) -> None:
    """Refuse a scene whose copy at the model's sampling would have far more pixels than the scene (a coarse
    scene and a fine model) or almost none."""
    sampled = grid.zoom(scale)
    growth = sampled.width * sampled.height / (grid.width * grid.height)
    if growth <= MAX_PIXEL_GROWTH and min(sampled.shape) >= MIN_SAMPLED_SIDE:
        return
    size = grid.ground_pixel_size
    scene_size = f"{size[0]:.3g} m × {size[1]:.3g} m" if size else "its"
    raise ConfigError(f"{scene} has {scene_size} pixels and the model reads scenes at "
                      f"{describe_sampling(ckpt)}, which would make it {sampled.width}×{sampled.height} px "
                      f"(from {grid.width}×{grid.height}); predict it at its own pixels with --sampling "
                      f"native, or use a model trained near its pixel size")


def describe_sampling(ckpt: Checkpoint) -> str:
    """How the model's chips were sampled, for messages."""
    return ckpt.training.describe_sampling()


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
