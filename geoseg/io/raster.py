"""Reading scenes: opening with one-sentence errors, band checks, padded windowed reads."""

from __future__ import annotations

import contextlib
import os
import warnings
from pathlib import Path
from typing import Sequence

import numpy as np
import rasterio
from rasterio.enums import Resampling
from rasterio.errors import NotGeoreferencedWarning, RasterioIOError
from rasterio.windows import Window

from geoseg.errors import RasterError
from geoseg.io.formats import is_remote
from geoseg.io.grid import GeoGrid


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


def resolve_bands(src, path: str | os.PathLike, bands: Sequence[int | str]) -> list[int]:
    """Band numbers (1-based) of ``bands`` given by number or by band description (``B04``, ``nir``: as the
    scene describes its bands, any case), checked against the scene."""
    described = {(d or "").strip().lower(): i + 1 for i, d in enumerate(src.descriptions) if d}
    numbers = []
    for band in bands:
        if isinstance(band, str):
            if band.strip().lower() not in described:
                names = ", ".join(d for d in src.descriptions if d) or "none"
                raise RasterError(f"{path} has no band described as '{band}' (its band descriptions: "
                                  f"{names}); name bands as the scene describes them, or by number")
            band = described[band.strip().lower()]
        numbers.append(band)
    check_bands(src, path, numbers)
    return numbers


def _band_scaling(src, bands: Sequence[int]) -> tuple[np.ndarray, np.ndarray] | None:
    """GDAL's per-band scale and offset of ``bands`` ([bands, 1, 1] each; value = stored × scale + offset,
    e.g. Sentinel-2 L2A reflectance), or None when every band is stored as it is."""
    scales = np.array([src.scales[b - 1] for b in bands], np.float32)
    offsets = np.array([src.offsets[b - 1] for b in bands], np.float32)
    if (scales == 1).all() and (offsets == 0).all():
        return None
    return scales[:, None, None], offsets[:, None, None]


def to_physical(data: np.ndarray, src, bands: Sequence[int]) -> np.ndarray:
    """``data`` [bands, h, w] as float32 values with the bands' scale and offset applied."""
    data = data.astype(np.float32, copy=False)
    scaling = _band_scaling(src, bands)
    if scaling is not None:
        data *= scaling[0]
        data += scaling[1]
    return data


def read_boundless(src, indexes, window: Window, out_shape: tuple[int, ...], fill_value=0,
                   resampling: Resampling = Resampling.nearest, mask: bool = False) -> np.ndarray:
    """``src.read`` (or ``src.dataset_mask`` with ``mask``) of a window that may reach past the raster's
    edges, filled there with ``fill_value`` (0 for the mask). A window of whole pixels read at its own size
    is read directly, the part inside the raster into a filled array: the same values without the VRT
    rasterio builds for every boundless read (a third of a training chip's read time, and more at the
    edges)."""
    size = (out_shape[-2], out_shape[-1])
    whole = ((window.height, window.width) == size
             and all(float(v).is_integer() for v in (window.col_off, window.row_off)))
    if not whole:
        if mask:
            return src.dataset_mask(window=window, out_shape=size, boundless=True, resampling=resampling)
        return src.read(indexes, window=window, out_shape=out_shape, boundless=True, fill_value=fill_value,
                        resampling=resampling)
    r0, c0 = int(window.row_off), int(window.col_off)
    h, w = size
    top, left = max(0, -r0), max(0, -c0)
    bottom, right = min(h, src.height - r0), min(w, src.width - c0)
    inside = Window(c0 + left, r0 + top, max(0, right - left), max(0, bottom - top))
    if mask:
        out = np.zeros(size, np.uint8)
        if inside.width and inside.height:
            out[top:bottom, left:right] = src.dataset_mask(window=inside)
        return out
    if indexes is None:
        indexes = list(range(1, src.count + 1))
    single = isinstance(indexes, (int, np.integer))
    shape = size if single else (len(indexes), *size)
    dtype = src.dtypes[(indexes if single else indexes[0]) - 1]
    out = np.full(shape, fill_value, dtype)
    if inside.width and inside.height:
        out[..., top:bottom, left:right] = src.read(indexes, window=inside)
    return out


def read_padded(src, window: Window, bands: Sequence[int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Read ``bands`` in ``window`` (which may extend past the raster) as float32, scale and offset
    applied.

    Parts outside the raster hold the scene reflected at its edges, as
    ``numpy.pad(mode="reflect")`` of the whole scene would: the same values
    whatever the window, so results do not depend on how a scene is cut into
    blocks. Returns ``(data[bands, h, w], valid[h, w], content[h, w])``:
    ``valid`` is False for nodata (scene nodata, alpha or mask band), for pixels
    with a NaN or infinite value in any band, and for every pixel outside the
    raster; ``content`` is the validity of the pixel whose value each position
    holds (the reflected one outside the raster).
    """
    h, w = int(window.height), int(window.width)
    r0, c0 = int(window.row_off), int(window.col_off)
    inner = GeoGrid.from_dataset(src).clip(window)
    if inner.width == 0 or inner.height == 0:
        empty = np.zeros((h, w), bool)
        return np.zeros((len(bands), h, w), np.float32), empty, empty
    rows = _reflect_index(np.arange(r0, r0 + h), src.height)
    cols = _reflect_index(np.arange(c0, c0 + w), src.width)
    source = Window(int(cols.min()), int(rows.min()), int(cols.max() - cols.min() + 1),
                    int(rows.max() - rows.min() + 1))
    with read_errors(src):
        data = to_physical(src.read(list(bands), window=source, out_dtype="float32"), src, bands)
        ok = (src.dataset_mask(window=source) > 0) & finite_pixels(data)
    if (inner.width, inner.height) == (w, h):  # all inside: nothing to reflect
        return data, ok, ok
    rows, cols = rows - int(rows.min()), cols - int(cols.min())
    data, content = _reflected(data, rows, cols), _reflected(ok, rows, cols)
    inside = np.zeros((h, w), bool)
    inside[int(inner.row_off) - r0:int(inner.row_off + inner.height) - r0,
           int(inner.col_off) - c0:int(inner.col_off + inner.width) - c0] = True
    return data, content & inside, content


def _reflected(data: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """``data[..., rows[:, None], cols]``: copied run by run, each run of consecutive rows or columns (either
    way) a slice, which costs a fraction of a gather of every pixel; a gather where the indices make many
    runs (a scene a few pixels across, reflected many times)."""
    row_runs, col_runs = _runs(rows), _runs(cols)
    if len(row_runs) * len(col_runs) > _MOST_RUNS:
        return data[..., rows[:, None], cols]
    out = np.empty((*data.shape[:-2], len(rows), len(cols)), data.dtype)
    for r0, r1, source_rows in row_runs:
        for c0, c1, source_cols in col_runs:
            out[..., r0:r1, c0:c1] = data[..., source_rows, source_cols]
    return out


#: Above this many blocks of runs, :func:`_reflected` gathers instead.
_MOST_RUNS = 16


def _runs(index: np.ndarray) -> list[tuple[int, int, slice]]:
    """``index`` cut into runs of consecutive values, ascending or descending: ``(start, stop, source)`` for
    each, where ``index[start:stop]`` is ``range(...)[source]``."""
    runs, start, n = [], 0, len(index)
    while start < n:
        stop = start + 1
        step = int(index[stop] - index[start]) if stop < n else 1
        if step in (1, -1):
            while stop < n and index[stop] - index[stop - 1] == step:
                stop += 1
        else:
            step = 1
        first, last = int(index[start]), int(index[stop - 1])
        runs.append((start, stop, slice(first, last + 1) if step == 1 else
                     slice(first, last - 1 if last > 0 else None, -1)))
        start = stop
    return runs


def _reflect_index(index: np.ndarray, n: int) -> np.ndarray:
    """Indices into an axis of length ``n``, reflected at both ends without repeating the edge (numpy.pad's
    "reflect", repeated as often as needed); every index is 0 when ``n`` is 1."""
    if n == 1:
        return np.zeros_like(index)
    period = 2 * (n - 1)
    index = np.abs(index) % period
    return np.where(index >= n, period - index, index)


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
