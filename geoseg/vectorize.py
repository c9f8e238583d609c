"""Class raster → land-cover polygons, block by block, never cut by the block grid.

Each block is vectorized with :func:`rasterio.features.shapes` (4-connectivity:
one polygon per 4-connected region of one class, holes kept). Polygons that
touch an inner block edge are held back and merged with their neighbours across
the edge, so the result equals vectorizing the whole raster at once while
memory stays bounded by one block plus the edge-touching polygons.
Vertices are computed in integer pixel coordinates and placed in the CRS only
at the end, so merges are exact.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import geopandas as gpd
import numpy as np
import pyogrio
import shapely
from affine import Affine
from rasterio.features import shapes
from shapely.geometry import shape

from geoseg import __version__
from geoseg.atomic import atomic_output
from geoseg.classes import NODATA, ClassSchema
from geoseg.grid import GeoGrid, blocks
from geoseg.raster import open_raster
from geoseg.style import add_gpkg_default_style, vector_qml

DEFAULT_BLOCK = 2048
DEFAULT_LAYER = "landcover"


@dataclass
class BlockPolygons:
    """Polygons of one block, in global pixel coordinates."""

    interior: list[tuple[shapely.Polygon, int]]
    edge: list[tuple[shapely.Polygon, int]]


def vectorize_block(classes: np.ndarray, col_off: int, row_off: int, width: int, height: int,
                    nodata: int = NODATA) -> BlockPolygons:
    """Vectorize one block of a ``width`` × ``height`` raster; sort out polygons on inner edges."""
    h, w = classes.shape
    transform = Affine.translation(col_off, row_off)
    inner_edges = (
        col_off if col_off > 0 else None,
        col_off + w if col_off + w < width else None,
        row_off if row_off > 0 else None,
        row_off + h if row_off + h < height else None,
    )
    out = BlockPolygons([], [])
    mask = classes != nodata
    if not mask.any():
        return out
    for geom, value in shapes(classes, mask=mask, connectivity=4, transform=transform):
        poly = shape(geom)
        x0, y0, x1, y1 = poly.bounds
        touches = (x0 == inner_edges[0] or x1 == inner_edges[1]
                   or y0 == inner_edges[2] or y1 == inner_edges[3])
        (out.edge if touches else out.interior).append((poly, int(value)))
    return out


def merge_edge_polygons(polys: list[tuple[shapely.Polygon, int]]) -> list[tuple[shapely.Polygon, int]]:
    """Union same-class polygons that share an edge (not just a corner) across block edges."""
    if not polys:
        return []
    geoms = np.array([p for p, _ in polys], dtype=object)
    values = np.array([v for _, v in polys])
    tree = shapely.STRtree(geoms)
    left, right = tree.query(geoms, predicate="intersects")
    keep = (left < right) & (values[left] == values[right])
    left, right = left[keep], right[keep]
    if len(left):
        shares_edge = shapely.relate_pattern(geoms[left], geoms[right], "****1****")
        left, right = left[shares_edge], right[shares_edge]
    parent = np.arange(len(geoms))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for a, b in zip(left.tolist(), right.tolist()):
        ra, rb = find(a), find(b)
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)
    groups: dict[int, list[int]] = {}
    for i in range(len(geoms)):
        groups.setdefault(find(i), []).append(i)
    merged = []
    for root in sorted(groups):
        members = groups[root]
        if len(members) == 1:
            geom = geoms[members[0]]
        else:  # drop the collinear vertices the union leaves where block edges were
            geom = shapely.simplify(shapely.union_all(geoms[members]), 0)
        for part in shapely.get_parts(geom):
            merged.append((part, int(values[root])))
    return merged


def iter_polygons(path: str | os.PathLike, block: int = DEFAULT_BLOCK,
                  progress: Callable[[int], None] | None = None) -> Iterator[tuple[shapely.Polygon, int]]:
    """All polygons of a class raster (pixel coordinates, value), block by block."""
    with open_raster(path) as src:
        nodata = int(src.nodata) if src.nodata is not None else NODATA
        edge: list[tuple[shapely.Polygon, int]] = []
        for window in blocks(src.width, src.height, block):
            data = src.read(1, window=window)
            result = vectorize_block(data, int(window.col_off), int(window.row_off), src.width, src.height, nodata)
            yield from result.interior
            edge.extend(result.edge)
            if progress:
                progress(1)
        yield from merge_edge_polygons(edge)


def pixel_to_world(geoms: np.ndarray, transform: Affine) -> np.ndarray:
    """Place pixel-coordinate geometries in the CRS with the raster's affine transform."""
    a, b, c, d, e, f = transform[:6]
    matrix = np.array([[a, d], [b, e]])
    offset = np.array([c, f])
    return shapely.transform(geoms, lambda pts: pts @ matrix + offset)


def _frame(batch: list[tuple[shapely.Polygon, int]], grid: GeoGrid, schema: ClassSchema) -> gpd.GeoDataFrame:
    geoms = pixel_to_world(np.array([p for p, _ in batch], dtype=object), grid.transform) if batch else np.array([], dtype=object)
    codes = np.array([v for _, v in batch], dtype=np.int32)
    names = {c.code: c.name for c in schema.classes}
    gdf = gpd.GeoDataFrame(
        {"class_id": codes, "class_name": [names.get(int(v), str(v)) for v in codes]},
        geometry=gpd.GeoSeries(geoms, crs=grid.crs), crs=grid.crs,
    )
    gdf["area_m2"] = _area_m2(gdf)
    return gdf


def _area_m2(gdf: gpd.GeoDataFrame) -> np.ndarray:
    """Polygon areas in square metres: CRS units for projected CRSs, equal-area for geographic."""
    if len(gdf) == 0:
        return np.zeros(0)
    crs = gdf.crs
    if crs is None:
        return gdf.geometry.area.to_numpy()
    if crs.is_geographic:
        return gdf.geometry.to_crs("EPSG:6933").area.to_numpy()
    factor = crs.axis_info[0].unit_conversion_factor if crs.axis_info else 1.0
    return gdf.geometry.area.to_numpy() * factor**2


def vectorize_raster(raster: str | os.PathLike, output: str | os.PathLike, schema: ClassSchema, *,
                     layer: str = DEFAULT_LAYER, block: int = DEFAULT_BLOCK, overwrite: bool = True,
                     metadata: dict[str, str] | None = None,
                     progress: Callable[[int], None] | None = None) -> int:
    """Write the polygons of a class raster to a vector file (format from the extension).

    Returns the number of polygons written. A GeoPackage gets a default QGIS
    style in ``layer_styles``; other formats get a ``.qml`` sidecar.
    """
    with open_raster(raster) as src:
        grid = GeoGrid.from_dataset(src)
    output = Path(output)
    count = 0
    meta = {"geoseg_version": __version__, "classes": ",".join(f"{c.code}:{c.name}" for c in schema.classes)}
    meta.update(metadata or {})
    with atomic_output(output, overwrite=overwrite) as tmp:
        is_gpkg = output.suffix.lower() == ".gpkg"
        driver_kw = {"layer": layer} if is_gpkg else {}
        batch: list[tuple[shapely.Polygon, int]] = []
        written = False

        def flush() -> None:
            nonlocal written, batch, count
            gdf = _frame(batch, grid, schema)
            extra = dict(driver_kw)
            if not written and is_gpkg:
                extra["layer_metadata"] = meta
            pyogrio.write_dataframe(gdf, tmp, append=written, **extra)
            written = True
            count += len(batch)
            batch = []

        for item in iter_polygons(raster, block, progress):
            batch.append(item)
            if len(batch) >= 20000:
                flush()
        if batch or not written:
            flush()
        if output.suffix.lower() == ".gpkg":
            add_gpkg_default_style(tmp, layer, vector_qml(schema))
    if output.suffix.lower() != ".gpkg":
        from geoseg.atomic import atomic_write_text
        atomic_write_text(output.with_suffix(".qml"), vector_qml(schema))
    return count
