"""Reading scenes: opening with one-sentence errors, band checks, padded windowed reads."""

from __future__ import annotations

import contextlib
import os
import warnings
from pathlib import Path
from typing import Sequence

import numpy as np
import rasterio
from rasterio.errors import NotGeoreferencedWarning, RasterioIOError
from rasterio.windows import Window

from geoseg.errors import RasterError
from geoseg.formats import is_remote
from geoseg.grid import GeoGrid


def open_raster(path: str | os.PathLike):
    """Open a raster for reading, turning GDAL's failures into one clear sentence."""
    p = Path(path)
    if not is_remote(path):  # GDAL resolves /vsi… paths and URLs itself
        if not p.exists():
            raise RasterError(f"{path} does not exist")
        if p.is_dir():
            raise RasterError(f"{path} is a directory, not a raster file")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            return rasterio.open(path)
    except RasterioIOError as exc:
        raise RasterError(f"{path} is not a readable raster ({str(exc).splitlines()[0]})") from None


def check_bands(src, path: str | os.PathLike, bands: Sequence[int]) -> None:
    """Refuse a scene that lacks one of ``bands`` (1-based)."""
    missing = [b for b in bands if not 1 <= b <= src.count]
    if missing:
        raise RasterError(
            f"{path} has {src.count} band(s) but band(s) {missing} are needed; "
            f"choose bands with --bands"
        )


def read_padded(src, window: Window, bands: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    """Read ``bands`` in ``window`` (which may extend past the raster) as float32.

    Parts outside the raster are filled by reflecting the pixels inside it, so
    edge chips see plausible context instead of invented zeros. Returns
    ``(data[bands, h, w], valid[h, w])`` where ``valid`` is False for nodata
    (scene nodata, alpha or mask band), for pixels with a NaN or infinite value
    in any band, and for every pixel outside the raster.
    """
    grid = GeoGrid.from_dataset(src)
    inner = grid.clip(window)
    h, w = int(window.height), int(window.width)
    if inner.width == 0 or inner.height == 0:
        return np.zeros((len(bands), h, w), np.float32), np.zeros((h, w), bool)
    with read_errors(src):
        data = src.read(list(bands), window=inner, out_dtype="float32")
        valid = (src.dataset_mask(window=inner) > 0) & finite_pixels(data)
    top = int(inner.row_off - window.row_off)
    left = int(inner.col_off - window.col_off)
    bottom = h - top - int(inner.height)
    right = w - left - int(inner.width)
    if top or left or bottom or right:
        data = _reflect_pad(data, top, bottom, left, right)
        valid_out = np.zeros((h, w), bool)
        valid_out[top:top + valid.shape[0], left:left + valid.shape[1]] = valid
        valid = valid_out
    return data, valid


def finite_pixels(data: np.ndarray) -> np.ndarray:
    """[h, w]: True where every band of ``data`` [bands, h, w] is finite. NaN and ±inf are nodata in every
    scene, whether or not the file declares them as its nodata value."""
    if not np.issubdtype(data.dtype, np.floating):
        return np.ones(data.shape[-2:], bool)
    return np.isfinite(data).all(axis=0)


@contextlib.contextmanager
def read_errors(src):
    """Turn GDAL's failure to decode part of a raster into one sentence naming the file."""
    try:
        yield
    except RasterioIOError:
        raise RasterError(f"{src.name} could not be read: the file is truncated or corrupt") from None


def _reflect_pad(a: np.ndarray, top: int, bottom: int, left: int, right: int) -> np.ndarray:
    """Pad the last two axes by reflection (edge replication for 1-pixel-wide axes)."""
    pads = [(0, 0)] * (a.ndim - 2) + [(top, bottom), (left, right)]
    for axis in (-2, -1):
        only = [(0, 0)] * a.ndim
        only[axis] = pads[axis]
        mode = "reflect" if a.shape[axis] > 1 else "edge"
        a = np.pad(a, only, mode=mode)
    return a
