"""Writing class rasters: a tiled uint8 GeoTIFF with nodata 255, colour table, tags, category names
(``.aux.xml``) and a QGIS style (``.qml``) beside it; optionally rewritten as a Cloud-Optimized GeoTIFF.

Prediction (through :mod:`geoseg.inference.resume`) and evaluation's error map write their rasters with these
helpers, so every class raster geoseg writes opens the same way in QGIS.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Iterator

import rasterio
from rasterio.enums import Resampling
from rasterio.errors import RasterioIOError

from geoseg.errors import WriteError
from geoseg.io.atomic import atomic_output, atomic_write_text
from geoseg.io.classes import NODATA, ClassSchema
from geoseg.io.grid import GeoGrid
from geoseg.outputs.style import category_aux_xml, raster_qml


def class_raster_profile(grid: GeoGrid, count: int = 1, block: int = 256) -> dict:
    """Profile of a tiled, deflate-compressed uint8 class raster with nodata 255."""
    profile = {
        "driver": "GTiff",
        "width": grid.width,
        "height": grid.height,
        "count": count,
        "dtype": "uint8",
        "crs": grid.crs,
        "transform": grid.transform,
        "nodata": NODATA,
        "compress": "deflate",
        "predictor": 2,
        "zlevel": 6,
        "interleave": "band",
        "bigtiff": "IF_SAFER",  # a compressed mosaic (or its probabilities) may pass 4 GB
    }
    if grid.width >= block and grid.height >= block:
        profile.update(tiled=True, blockxsize=block, blockysize=block)
    if not grid.has_geotransform:  # the scene's own georeferencing, carried over as it is
        profile.pop("transform")
        if grid.gcps:
            profile.update(gcps=list(grid.gcps), crs=grid.gcp_crs)
        if grid.rpcs:
            profile["rpcs"] = grid.rpcs
    return profile


def probability_raster_profile(grid: GeoGrid, classes: int, dtype: str) -> dict:
    """Profile of a per-class probability raster: ``uint8`` (0–254, nodata 255), ``float16`` (NaN):
    half floats stored by GDAL's GeoTIFF driver as Float32 with ``NBITS=16``, which every GDAL reads, or
    ``float32`` (NaN; the intermediate of prediction at the model's sampling)."""
    profile = class_raster_profile(grid)
    profile.update(count=classes, interleave="band")
    if dtype == "float16":
        profile.update(dtype="float32", nbits=16, nodata=float("nan"), predictor=1)
    elif dtype == "float32":
        profile.update(dtype="float32", nodata=float("nan"), predictor=1, zlevel=1)
    return profile


def write_class_metadata(dst, schema: ClassSchema, tags: dict[str, str] | None = None) -> None:
    """Attach the class colour table, band description and tags to an open class raster."""
    dst.write_colormap(1, schema.colormap())
    dst.set_band_description(1, "class")
    all_tags = {"classes": ",".join(f"{c.code}:{c.name}" for c in schema.classes)}
    all_tags.update(tags or {})
    dst.update_tags(**all_tags)


def write_categories(path: str | os.PathLike, schema: ClassSchema) -> None:
    """Write the class names as GDAL category names (``<path>.aux.xml``) beside a closed class raster."""
    if Path(path).exists():
        Path(str(path) + ".aux.xml").write_text(category_aux_xml(schema), encoding="utf-8")


def write_raster_style(path: str | os.PathLike, schema: ClassSchema) -> Path:
    """Write the QGIS paletted style (``.qml``, one legend entry per class) beside a class raster."""
    qml = Path(path).with_suffix(".qml")
    atomic_write_text(qml, raster_qml(schema))
    return qml


def copy_pam_sidecar(source: str | os.PathLike, target: str | os.PathLike) -> None:
    """Carry GDAL's ``.aux.xml`` (class names) over when a raster is rewritten under a new name."""
    aux, new = Path(str(source) + ".aux.xml"), Path(str(target) + ".aux.xml")
    if aux.exists() and not new.exists():
        new.write_text(aux.read_text(encoding="utf-8"), encoding="utf-8")


def finish_raster(path: str | os.PathLike, cog: bool = False) -> None:
    """Rewrite a raster written block by block into its final layout, in one pass: tiles in order, without
    the space that rewrites of partial blocks leave behind; internal overviews (mode for class rasters,
    average otherwise) so a large raster opens fast; BigTIFF when it may pass 4 GB; a Cloud-Optimized
    GeoTIFF with ``cog``. The new file is read back in full before it replaces ``path``."""
    from rasterio.shutil import copy as rio_copy

    with rasterio.open(path) as src:
        categorical = src.colorinterp[0].name == "palette"
        structure = src.tags(1, ns="IMAGE_STRUCTURE")
        width, height = src.width, src.height
    resampling = Resampling.mode if categorical else Resampling.average
    options = {"compress": "DEFLATE", "bigtiff": "IF_SAFER"}
    if "NBITS" in structure:
        options["nbits"] = structure["NBITS"]
    with atomic_output(path, checked=True) as tmp:  # rewritten in place
        if cog:
            rio_copy(path, tmp, driver="COG", overview_resampling=resampling.name.upper(), **options)
        else:
            tiled = {"tiled": True, "blockxsize": 256, "blockysize": 256} if min(width, height) >= 256 else {}
            rio_copy(path, tmp, driver="GTiff", predictor=structure.get("PREDICTOR", "2"), zlevel=6,
                     **tiled, **options)
            factors = _overview_factors(width, height)
            if factors:
                with rasterio.open(tmp, "r+") as dst:
                    dst.build_overviews(factors, resampling)
        copy_pam_sidecar(path, tmp)
        verify_raster(tmp, name=path)


def _overview_factors(width: int, height: int, smallest: int = 256) -> list[int]:
    """Decimation factors 2, 4, 8 … until the overview fits in ``smallest`` pixels (as gdaladdo does)."""
    factors, f = [], 2
    while max(width, height) / f >= smallest:
        factors.append(f)
        f *= 2
    return factors


def verify_raster(path: str | os.PathLike, windows=None, name: str | os.PathLike | None = None) -> None:
    """Read ``windows`` of every band of ``path`` (default: all of it, block by block) back from disk: a
    write that did not reach it (a full disk, a file-size limit) is a :class:`WriteError` naming
    ``name`` (default ``path``)."""
    try:
        with rasterio.open(path) as ds:
            for window in windows if windows is not None else [w for _, w in ds.block_windows(1)]:
                ds.read(window=window)
    except RasterioIOError as exc:
        raise WriteError(f"{name or path} could not be written to disk ({str(exc).splitlines()[0]}); free "
                          f"some space or choose another folder") from None


@contextlib.contextmanager
def styled_class_raster(path: str | os.PathLike, grid: GeoGrid, schema: ClassSchema,
                        tags: dict[str, str] | None = None) -> Iterator[rasterio.io.DatasetWriter]:
    """An open class raster on ``grid`` written under a temporary name; on success it is closed, given its
    category names and renamed to ``path``, and its ``.qml`` is written. On failure nothing is left."""
    with atomic_output(path) as tmp:
        with rasterio.open(tmp, "w", **class_raster_profile(grid)) as dst:
            write_class_metadata(dst, schema, tags)
            yield dst
        write_categories(tmp, schema)
    write_raster_style(path, schema)
