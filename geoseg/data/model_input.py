"""How pixels become model input: the one place training and prediction share.

The scale a scene is sampled at (:func:`sampling_scale`: training's scene
preparation in :mod:`geoseg.data.scenes` and prediction's in
:mod:`geoseg.inference.resample`) and how values are normalised
(:func:`normalise`: the chip dataset in :mod:`geoseg.data.chips`, prediction's
per-block work in :mod:`geoseg.inference.blocks` and the int8 engine's
calibration chips) are decided here, so a change reaches both sides at once.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from geoseg.io.grid import GeoGrid


def normalise(data: np.ndarray, valid: np.ndarray, mean: Sequence[float], std: Sequence[float],
              clip: tuple[Sequence[float], Sequence[float]] | None = None) -> np.ndarray:
    """In place, and returned: (data - mean) / std per band of ``data`` [bands, h, w] (clipped to ``clip`` =
    (low, high) per band first), 0 where ``valid`` [h, w] is False."""
    def per_band(values) -> np.ndarray:
        return np.asarray(values, dtype=data.dtype)[:, None, None]

    if clip is not None:
        np.clip(data, per_band(clip[0]), per_band(clip[1]), out=data)
    data -= per_band(mean)
    data /= per_band(std)
    data[:, ~valid] = 0.0
    return data


def sampling_scale(grid: GeoGrid, downsize_res: int | None, resolution: float | None) -> float | None:
    """Scene pixels per model pixel: the scene resized to ``downsize_res`` pixels on its longer side, or
    sampled at ``resolution`` metres per pixel, or as it is (1); None where ``resolution`` is asked for but
    the scene's ground pixel size is unknown (no CRS, or a geographic one)."""
    if downsize_res:
        return max(grid.width, grid.height) / downsize_res
    if resolution:
        size = grid.ground_resolution
        return None if size is None else resolution / size
    return 1.0
