"""Writing land-cover polygons: formats, attributes, dissolve/simplify, QGIS styles, class summary.

The format follows the output's extension (``.gpkg``, ``.geojson``, ``.shp``,
``.fgb``, ``.parquet``). A GeoPackage is written as polygons arrive, in bounded
memory, and carries its QGIS default style in ``layer_styles``; the other
formats are written at once and get a ``.qml`` sidecar. Simplification and
dissolving need all polygons together and also write at once.
"""

from __future__ import annotations

import csv
import io
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Mapping

import geopandas as gpd
import numpy as np
import pyogrio
import shapely

from geoseg import __version__
from geoseg.errors import OutputError
from geoseg.io.atomic import atomic_output, atomic_write_text
from geoseg.io.classes import NODATA, ClassSchema
from geoseg.io.formats import DEFAULT_LAYER, VECTOR_FORMATS
from geoseg.io.grid import GeoGrid, blocks
from geoseg.io.raster import open_raster
from geoseg.outputs.measures import ground_measures
from geoseg.outputs.style import add_gpkg_default_style, vector_qml
from geoseg.outputs.vectorize import DEFAULT_BLOCK, Region, iter_regions, pixel_to_world

SHAPEFILE_FIELDS = {"perimeter_m": "perim_m", "confidence_mean": "conf_mean"}
BATCH = 20000


@dataclass
class VectorResult:
    path: Path
    polygons: int
    summary: list[dict]


def _frame(batch: list[Region], grid: GeoGrid, schema: ClassSchema,
           with_confidence: bool) -> gpd.GeoDataFrame:
    geoms = np.array([r.polygon for r in batch], dtype=object)
    geoms = pixel_to_world(geoms, grid.transform) if len(geoms) else geoms
    codes = np.array([r.value for r in batch], dtype=np.int32)
    names = {c.code: c.name for c in schema.classes}
    gdf = gpd.GeoDataFrame(
        {"class_id": codes, "class_name": [names.get(int(v), str(v)) for v in codes]},
        geometry=gpd.GeoSeries(geoms, crs=grid.crs), crs=grid.crs,
    )
    return _add_measures(gdf, [r.pixels for r in batch],
                        [r.confidence_sum for r in batch] if with_confidence else None)


def _add_measures(gdf: gpd.GeoDataFrame, pixels: list[int] | None = None,
                 confidence_sums: list[float] | None = None) -> gpd.GeoDataFrame:
    """Add ``area_m2`` and ``perimeter_m``, true ground measures on the CRS's ellipsoid (see
    :mod:`geoseg.outputs.measures`), and ``confidence_mean`` (0–100) when sums are given."""
    area, perimeter = ground_measures(gdf.geometry.to_numpy(), gdf.crs)
    gdf["area_m2"] = area
    gdf["perimeter_m"] = perimeter
    if confidence_sums is not None and pixels is not None:
        gdf["confidence_mean"] = np.asarray(confidence_sums, float) / np.maximum(np.asarray(pixels, float), 1)
    return gdf


def _class_summary(raster: str | os.PathLike | list, schema: ClassSchema, areas: Mapping[int, float],
                  block: int = DEFAULT_BLOCK) -> list[dict]:
    """Pixels, ground area and share of each class: pixels counted in the class raster (or rasters; nodata
    left out), ``areas`` (class code → m²) summed from the class's polygons, and the share of the ground
    area (of the pixels where no area is known), so pixels of different ground sizes are not mixed."""
    counts = np.zeros(256, np.int64)
    for path in raster if isinstance(raster, list) else [raster]:
        with open_raster(path) as src:
            for window in blocks(src.width, src.height, block):
                counts += np.bincount(src.read(1, window=window).ravel(), minlength=256)
    counts[NODATA] = 0
    total = counts.sum()
    ground = sum(float(areas.get(c.code, 0.0)) for c in schema.classes)
    rows = []
    for c in schema.classes:
        n, area = int(counts[c.code]), float(areas.get(c.code, 0.0))
        share = area / ground if ground > 0 else (n / total if total else 0.0)
        rows.append({"class_id": c.code, "class_name": c.name, "pixels": n, "area_m2": area, "share": share})
    return rows


def _areas_by_class(gdf: gpd.GeoDataFrame, into: dict[int, float]) -> None:
    for code, area in gdf.groupby("class_id")["area_m2"].sum().items():
        into[int(code)] = into.get(int(code), 0.0) + float(area)


def _summary_csv(rows: list[dict]) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(rows[0]))
    w.writeheader()
    for r in rows:
        w.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in r.items()})
    return buf.getvalue()


def summary_table(rows: list[dict], ground: bool = True) -> str:
    """The printed class summary; ``ground=False`` (a raster without a CRS) heads the area column with the
    raster's own units, since no size in metres is known."""
    lines = [f"{'class':<14}{'pixels':>12}{'area (m²)' if ground else 'area (units²)':>16}{'share':>9}"]
    for r in rows:
        lines.append(f"{r['class_name']:<14}{r['pixels']:>12,}{r['area_m2']:>16,.0f}{r['share']:>8.1%}")
    if not ground:
        lines.append("(no CRS: areas are in the raster's own units, not square metres)")
    return "\n".join(lines)


def vectorize_blocks(raster: str | os.PathLike, block: int = DEFAULT_BLOCK) -> int:
    """How many blocks :func:`write_polygons` reads from ``raster`` (its progress total)."""
    with open_raster(raster) as src:
        return math.ceil(src.width / block) * math.ceil(src.height / block)


def write_polygons(raster: str | os.PathLike, output: str | os.PathLike, schema: ClassSchema, *,
                   layer: str = DEFAULT_LAYER, block: int = DEFAULT_BLOCK, simplify: float | None = None,
                   dissolve: bool = False, confidence: str | os.PathLike | None = None,
                   overwrite: bool = True, checked: bool = False, metadata: dict[str, str] | None = None,
                   summary: bool = True, progress: Callable[[int], None] | None = None) -> VectorResult:
    """Vectorize a class raster into ``output`` (format from the extension), with attributes and style.

    ``simplify`` (CRS units) simplifies the polygons as one coverage, so
    neighbours keep sharing their edges; ``dissolve`` merges each class into one
    multipolygon. Also writes ``<output>_summary.csv``. ``checked``: the caller
    has validated ``output`` already (see :func:`~geoseg.io.atomic.check_output_path`).
    """
    output = Path(output)
    suffix = output.suffix.lower()
    if suffix not in VECTOR_FORMATS:
        raise OutputError(f"cannot write {output}: use one of {', '.join(sorted(VECTOR_FORMATS))}")
    with open_raster(raster) as src:
        grid = GeoGrid.from_dataset(src)
    meta = {"geoseg_version": __version__, "classes": ",".join(f"{c.code}:{c.name}" for c in schema.classes)}
    meta.update(metadata or {})
    regions = iter_regions(raster, block, confidence, progress)
    with_conf = confidence is not None
    if suffix == ".geojson" or suffix == ".json":
        _check_geojson_crs(grid, raster)
    count, areas = 0, {}
    geometry_type = "MultiPolygon" if dissolve else "Polygon"
    with atomic_output(output, overwrite, checked) as tmp:
        if suffix == ".gpkg" and not simplify and not dissolve:
            count = _stream_gpkg(regions, tmp, layer, grid, schema, with_conf, meta, areas)
        else:
            gdf = _frame(list(regions), grid, schema, with_conf)
            gdf = _finish_polygons(gdf, simplify, dissolve)
            count = len(gdf)
            _areas_by_class(gdf, areas)
            _write_once(gdf, tmp, suffix, layer if suffix == ".gpkg" else output.stem, meta, geometry_type)
        if suffix == ".gpkg":
            add_gpkg_default_style(tmp, layer, vector_qml(schema))
    if suffix != ".gpkg":
        atomic_write_text(output.with_suffix(".qml"), vector_qml(schema))
    rows = _class_summary(raster, schema, areas, block) if summary else []
    if summary:
        atomic_write_text(output.with_name(f"{output.stem}_summary.csv"), _summary_csv(rows))
    return VectorResult(output, count, rows)


def _stream_gpkg(regions: Iterable[Region], path: Path, layer: str, grid: GeoGrid, schema: ClassSchema,
                 with_conf: bool, meta: dict[str, str], areas: dict[int, float]) -> int:
    count, batch, written = 0, [], False
    for r in regions:
        batch.append(r)
        if len(batch) >= BATCH:
            gdf = _frame(batch, grid, schema, with_conf)
            _areas_by_class(gdf, areas)
            _append(gdf, path, layer, meta, written)
            count, batch, written = count + len(batch), [], True
    if batch or not written:
        gdf = _frame(batch, grid, schema, with_conf)
        _areas_by_class(gdf, areas)
        _append(gdf, path, layer, meta, written)
        count += len(batch)
    return count


def _append(gdf: gpd.GeoDataFrame, path: Path, layer: str, meta: dict[str, str], append: bool) -> None:
    kw = {} if append else {"layer_metadata": meta}
    pyogrio.write_dataframe(gdf, path, layer=layer, driver="GPKG", append=append, promote_to_multi=False,
                            geometry_type="Polygon", **kw)


def _write_once(gdf: gpd.GeoDataFrame, path: Path, suffix: str, layer: str, meta: dict[str, str],
                geometry_type: str) -> None:
    """Write all polygons at once; ``layer`` names the layer (the output file's name for single-layer
    formats, never the temporary name it is written under)."""
    kw = {"layer": layer, "geometry_type": geometry_type, "driver": VECTOR_FORMATS[suffix]}
    if suffix == ".parquet":
        gdf.to_parquet(path)
    elif suffix == ".gpkg":
        pyogrio.write_dataframe(gdf, path, layer_metadata=meta, **kw)
    elif suffix == ".shp":  # dBase field names stop at 10 characters
        pyogrio.write_dataframe(gdf.rename(columns=SHAPEFILE_FIELDS), path, **kw)
    elif kw["driver"] == "GeoJSON":  # RFC 7946: longitude/latitude on WGS 84, reprojected by GDAL
        pyogrio.write_dataframe(gdf, path, RFC7946="YES", **kw)
    else:
        pyogrio.write_dataframe(gdf, path, **kw)


def _check_geojson_crs(grid: GeoGrid, raster: str | os.PathLike) -> None:
    if grid.crs is None:
        raise OutputError(f"GeoJSON holds longitude/latitude (RFC 7946) but {raster} has no CRS to reproject "
                          f"from; write .gpkg or .fgb instead")


def _finish_polygons(gdf: gpd.GeoDataFrame, simplify: float | None, dissolve: bool) -> gpd.GeoDataFrame:
    """Coverage-preserving simplification and/or dissolving by class; measures recomputed."""
    if simplify and len(gdf):
        gdf = gdf.copy()
        gdf["geometry"] = shapely.coverage_simplify(gdf.geometry.to_numpy(), simplify)
        gdf = gdf[~gdf.geometry.is_empty]
    if dissolve and len(gdf):
        conf = "confidence_mean" in gdf.columns
        if conf:
            gdf = gdf.assign(_w=gdf["confidence_mean"] * gdf["area_m2"])
        parts = []
        for (code, name), group in gdf.groupby(["class_id", "class_name"], sort=True):
            polys = [p for g in group.geometry for p in shapely.get_parts(g)]
            row = {"class_id": code, "class_name": name, "geometry": shapely.MultiPolygon(polys)}
            if conf:
                row["confidence_mean"] = group["_w"].sum() / max(group["area_m2"].sum(), 1e-12)
            parts.append(row)
        gdf = gpd.GeoDataFrame(parts, geometry="geometry", crs=gdf.crs)
    if simplify or dissolve:
        conf = gdf["confidence_mean"] if "confidence_mean" in gdf.columns else None
        gdf = _add_measures(gdf.drop(columns=[c for c in ("area_m2", "perimeter_m") if c in gdf.columns]))
        if conf is not None:
            gdf["confidence_mean"] = conf.to_numpy()
    return gdf
