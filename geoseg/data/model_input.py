"""How pixels become model input: the one place training and prediction share.

The scale a scene is sampled at (:func:`sampling_scale`: the scene's ground
pixel size, per axis, against the model's), the copy of a scene at that
sampling both read from (:func:`sampled_copy`: training's scene preparation in
:mod:`geoseg.data.scenes` and prediction's in :mod:`geoseg.inference.resample`)
and how values are normalised
(:func:`normalise`: the chip dataset in :mod:`geoseg.data.chips`, prediction's
per-block work in :mod:`geoseg.inference.blocks` and the int8 engine's
calibration chips) are decided here, so a change reaches both sides at once.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import rasterio
from rasterio.enums import MaskFlags, Resampling
from rasterio.windows import Window

from geoseg.errors import GeoSegWarning
from geoseg.io.atomic import atomic_output
from geoseg.io.fingerprint import cache_key, file_identity
from geoseg.io.grid import GeoGrid
from geoseg.io.raster import finite_pixels, open_raster, read_errors


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
    invalid = ~valid
    if invalid.any():
        data[:, invalid] = 0.0
    return data


Scale = tuple[float, float]

#: Scenes within 1 % of the model's sampling (on both axes) are read as they are.
SAME_SAMPLING = 0.01

#: A scene whose ground pixel size varies more than this across its extent gets a warning (it is sampled by
#: the size at its centre).
SCALE_VARIATION = 0.03


def sampling_scale(grid: GeoGrid, downsize_res: int | None, resolution: float | None,
                   name: str = "the scene") -> Scale | None:
    """Scene pixels per model pixel along x and y: the scene resized to ``downsize_res`` pixels on its longer
    side, or sampled at ``resolution`` metres per pixel on the ground (the geodesic pixel size at the scene's
    centre, per axis, in any CRS), or as it is; (1, 1) within :data:`SAME_SAMPLING` of that. None where
    ``resolution`` is asked for but the scene has no place on Earth (no CRS, no GCPs)."""
    if downsize_res:
        scale = max(grid.width, grid.height) / downsize_res
        return _snapped((scale, scale))
    if not resolution:
        return (1.0, 1.0)
    size = grid.ground_pixel_size
    if size is None:
        return None
    _warn_if_scale_varies(grid, name)
    return _snapped((resolution / size[0], resolution / size[1]))


def _snapped(scale: Scale) -> Scale:
    return (1.0, 1.0) if all(abs(s - 1) <= SAME_SAMPLING for s in scale) else scale


def _warn_if_scale_varies(grid: GeoGrid, name: str) -> None:
    """One warning when the ground size of the scene's pixels varies by more than :data:`SCALE_VARIATION`
    between its corners, edges' middles and centre (Web Mercator or geographic scenes spanning many degrees
    of latitude)."""
    cols = np.array([0.5, grid.width / 2, grid.width - 0.5] * 3)
    rows = np.repeat([0.5, grid.height / 2, grid.height - 0.5], 3)
    steps = grid.ground_steps(cols, rows)
    if steps is None:
        return
    spans = []
    for sizes in steps:  # along x, then along y
        sizes = sizes[np.isfinite(sizes) & (sizes > 0)]
        if sizes.size:
            spans.append((sizes.min(), sizes.max()))
    low, high = min(spans, key=lambda s: s[0] / s[1], default=(1, 1))
    if high / low > 1 + SCALE_VARIATION:
        warnings.warn(f"the pixels of {name} measure from {low:.3g} to {high:.3g} m on "
                      f"the ground across the scene; it is sampled by their size at its centre, so the model "
                      f"sees objects at other sizes near its edges (reproject it to a local projected CRS, "
                      f"e.g. its UTM zone, to avoid that)", GeoSegWarning)


#: Rows of a sampled copy read and written at a time (fewer for wide scenes read at a coarse sampling).
COPY_ROWS = 256

#: Bytes of scene pixels read at a time while making a sampled copy.
COPY_BYTES = 256 * 2**20

#: Changes when the rule a sampled copy is made by changes, so cached copies are made again.
COPY_RULE = "sampled-copy-2"


def sampled_copy(path: str | os.PathLike, sampled: GeoGrid, folder: Path, bands: Sequence[int] | None = None,
                 labels: bool = False) -> Path:
    """``bands`` (every band when None) of the raster ``path`` on ``sampled`` (its extent at the model's
    sampling) as a tiled GeoTIFF in ``folder``, named by the file's content, the grid and the bands (made
    once). Training and prediction both read scenes at the model's sampling through this copy.

    Images are sampled bilinearly. A sampled pixel is valid where any scene
    pixel it covers (or, sampled finer than the scene, the scene pixel under its
    centre) is valid, and where the bilinear value reached into invalid pixels
    (NaN, nodata) it is the mean of the valid scene pixels it covers: so the
    pixels that are nodata at the scene's sampling are exactly those nodata
    after the round trip through the model's. Label rasters (``labels``) are
    sampled by nearest neighbour.
    """
    key = cache_key(COPY_RULE, file_identity(path), sampled.shape, list(bands or []), labels)
    target = Path(folder) / f"{Path(str(path)).stem}-{key}.tif"
    if target.exists():
        return target
    Path(folder).mkdir(parents=True, exist_ok=True)
    with open_raster(path) as src, warnings.catch_warnings():
        warnings.simplefilter("ignore", rasterio.errors.NotGeoreferencedWarning)
        indexes = list(bands or range(1, src.count + 1))
        same = (src.height, src.width) == sampled.shape
        resampling = Resampling.nearest if labels or same else Resampling.bilinear
        masked = any(MaskFlags.all_valid not in f for f in src.mask_flag_enums)
        profile = {"driver": "GTiff", "width": sampled.width, "height": sampled.height, "count": len(indexes),
                   "dtype": src.dtypes[indexes[0] - 1], "crs": sampled.crs, "transform": sampled.transform,
                   "nodata": src.nodata, "tiled": True, "blockxsize": 256, "blockysize": 256,
                   "compress": "deflate", "zlevel": 1, "bigtiff": "IF_SAFER"}
        with atomic_output(target) as tmp, rasterio.Env(GDAL_TIFF_INTERNAL_MASK=True), \
                rasterio.open(tmp, "w", **profile) as dst:
            dst.scales = [src.scales[b - 1] for b in indexes]
            dst.offsets = [src.offsets[b - 1] for b in indexes]
            dst.descriptions = [src.descriptions[b - 1] for b in indexes]
            for row, rows in _copy_chunks(src, sampled, len(indexes)):
                data, valid = _sampled_rows(src, indexes, sampled, row, rows, resampling, masked, labels)
                out = Window(0, row, sampled.width, rows)
                dst.write(data, window=out)
                if valid is not None:
                    dst.write_mask(valid.astype(np.uint8) * 255, window=out)
    return target


def _copy_chunks(src, sampled: GeoGrid, count: int):
    """(first sampled row, number of rows) of each chunk of a sampled copy, about :data:`COPY_BYTES` of scene
    pixels each."""
    scene_rows_per_row = max(1.0, src.height / sampled.height)
    row_bytes = scene_rows_per_row * src.width * max(count, 1) * 8
    step = int(max(1, min(COPY_ROWS, COPY_BYTES // max(row_bytes, 1))))
    for row in range(0, sampled.height, step):
        yield row, min(step, sampled.height - row)


def _sampled_rows(src, indexes: list[int], sampled: GeoGrid, row: int, rows: int, resampling: Resampling,
                  masked: bool, labels: bool) -> tuple[np.ndarray, np.ndarray | None]:
    """Sampled rows ``row .. row+rows`` of ``indexes`` and their validity (None: all valid, or left to the
    file's nodata value)."""
    fy = src.height / sampled.height
    window = Window(0, row * fy, src.width, rows * fy)
    with read_errors(src):
        data = src.read(indexes, window=window, out_shape=(len(indexes), rows, sampled.width),
                        resampling=resampling)
        if labels or resampling == Resampling.nearest:
            if not masked:
                return data, None
            mask = src.dataset_mask(window=window, out_shape=(rows, sampled.width),
                                    resampling=Resampling.nearest)
            return data, (mask > 0) & finite_pixels(data)
    finite = finite_pixels(data)
    if not masked and finite.all():
        return data, None
    floats = np.issubdtype(data.dtype, np.floating)  # NaN is possible: the scene's values decide validity
    valid, fill = _covered_validity(src, indexes, sampled, row, rows, with_values=floats)
    repair = valid & ~finite
    if repair.any():  # only where bilinear reads reached into NaN
        data[:, repair] = fill()[:, repair].astype(data.dtype)
    return data, valid


def _covered_validity(src, indexes: list[int], sampled: GeoGrid, row: int, rows: int,
                      with_values: bool) -> tuple[np.ndarray, Callable[[], np.ndarray]]:
    """For sampled rows ``row .. row+rows``: whether each sampled pixel covers a valid scene pixel (or, finer
    than the scene, lies on one), and a function giving the mean of the valid scene pixels each covers (else
    the value under its centre), computed only when asked for. ``with_values``: the scene's values count
    for validity (NaN and ±inf); otherwise its mask alone does."""
    fy, fx = src.height / sampled.height, src.width / sampled.width
    r0 = int(np.floor(row * fy))
    r1 = min(src.height, max(r0 + 1, int(np.ceil((row + rows) * fy))))
    native = Window(0, r0, src.width, r1 - r0)

    def read_values() -> np.ndarray:
        with read_errors(src):
            return src.read(indexes, window=native).astype(np.float64)

    values = read_values() if with_values else None
    with read_errors(src):
        ok = src.dataset_mask(window=native) > 0
    if values is not None:
        ok &= finite_pixels(values)
    # each scene pixel belongs to the sampled pixel under its centre
    to_row = np.clip(np.floor((np.arange(r0, r1) + 0.5) / fy).astype(int) - row, 0, rows - 1)
    to_col = np.clip(np.floor((np.arange(src.width) + 0.5) / fx).astype(int), 0, sampled.width - 1)
    cell = (to_row[:, None] * sampled.width + to_col[None, :])[ok]
    size = rows * sampled.width
    count = np.bincount(cell, minlength=size).reshape(rows, sampled.width)
    # the scene pixel under each sampled pixel's centre, for samplings finer than the scene
    under_row = np.clip(np.floor((np.arange(row, row + rows) + 0.5) * fy).astype(int) - r0, 0, r1 - r0 - 1)
    under_col = np.clip(np.floor((np.arange(sampled.width) + 0.5) * fx).astype(int), 0, src.width - 1)
    valid = (count > 0) | ok[under_row[:, None], under_col[None, :]]

    def fill() -> np.ndarray:
        scene = values if values is not None else read_values()
        sums = np.stack([np.bincount(cell, weights=band[ok], minlength=size) for band in scene])
        mean = sums.reshape(len(indexes), rows, sampled.width) / np.maximum(count, 1)
        return np.where(count > 0, mean, scene[:, under_row[:, None], under_col[None, :]])

    return valid, fill
