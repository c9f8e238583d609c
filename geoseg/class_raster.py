"""Writing class rasters: a tiled uint8 GeoTIFF with nodata 255, colour table, tags, category names
(``.aux.xml``) and a QGIS style (``.qml``) beside it; optionally rewritten as a Cloud-Optimized GeoTIFF.

Prediction (through :mod:`geoseg.resume`) and evaluation's error map write their rasters with these
helpers, so every class raster geoseg writes opens the same way in QGIS.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Iterator

import rasterio

from geoseg.atomic import atomic_output, atomic_write_text
from geoseg.classes import NODATA, ClassSchema
from geoseg.grid import GeoGrid
from geoseg.style import category_aux_xml, raster_qml


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
    }
    if grid.width >= block and grid.height >= block:
        profile.update(tiled=True, blockxsize=block, blockysize=block)
    return profile


def probability_raster_profile(grid: GeoGrid, classes: int, dtype: str) -> dict:
    """Profile of a per-class probability raster: ``uint8`` (0–254, nodata 255) or ``float16`` (nodata
    NaN)."""
    profile = class_raster_profile(grid)
    profile.update(count=classes, interleave="band")
    if dtype == "float16":
        profile.update(dtype="float16", nodata=float("nan"), predictor=1)
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


def to_cog(path: str | os.PathLike) -> None:
    """Rewrite a finished GeoTIFF as a Cloud-Optimized GeoTIFF (overviews, COG layout), atomically."""
    from rasterio.shutil import copy as rio_copy

    with atomic_output(path, checked=True) as tmp:  # rewritten in place
        with rasterio.open(path) as src:
            categorical = src.colorinterp[0].name == "palette"
        rio_copy(path, tmp, driver="COG", compress="DEFLATE",
                 overview_resampling="MODE" if categorical else "AVERAGE")
        copy_pam_sidecar(path, tmp)


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
