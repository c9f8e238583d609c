"""Class raster → land-cover polygons, block by block, never cut by the block grid.

Each block is vectorized with :func:`rasterio.features.shapes` (4-connectivity:
one polygon per 4-connected region of one class, holes kept). Polygons that
touch an inner block edge are held back and merged with the same-class
polygons they share an edge with across the block edge, so the result equals
vectorizing the whole raster at once while memory stays bounded by one block
plus the edge-touching polygons. Vertices are computed in integer pixel
coordinates and placed in the CRS only at the end, so merges are exact.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Callable, Iterator

import numpy as np
import shapely
from affine import Affine
from rasterio.features import rasterize, shapes
from shapely.geometry import shape

from geoseg.io.classes import NODATA
from geoseg.io.grid import blocks
from geoseg.io.raster import open_raster

DEFAULT_BLOCK = 2048


@dataclass
class Region:
    """One polygon (global pixel coordinates) with its class and pixel statistics."""

    polygon: shapely.Polygon
    value: int
    pixels: int
    confidence_sum: float = 0.0


@dataclass
class BlockPolygons:
    interior: list[Region]
    edge: list[Region]


def vectorize_block(classes: np.ndarray, col_off: int, row_off: int, width: int, height: int,
                    nodata: int = NODATA, confidence: np.ndarray | None = None) -> BlockPolygons:
    """Vectorize one block of a ``width`` × ``height`` raster; sort out polygons on inner edges."""
    h, w = classes.shape
    transform = Affine.translation(col_off, row_off)
    inner = (col_off if col_off > 0 else None, col_off + w if col_off + w < width else None,
             row_off if row_off > 0 else None, row_off + h if row_off + h < height else None)
    out = BlockPolygons([], [])
    mask = classes != nodata
    if not mask.any():
        return out
    found = shapes(classes, mask=mask, connectivity=4, transform=transform)
    regions = [Region(shape(g), int(v), 0) for g, v in found]
    for r in regions:
        r.pixels = int(round(r.polygon.area))
    if confidence is not None and regions:
        ids = rasterize(((r.polygon, k + 1) for k, r in enumerate(regions)), out_shape=(h, w),
                        transform=transform, fill=0, dtype="int32")
        sums = np.bincount(ids.ravel(), weights=confidence.ravel().astype(np.float64),
                           minlength=len(regions) + 1)
        for k, r in enumerate(regions):
            r.confidence_sum = float(sums[k + 1])
    for r in regions:
        x0, y0, x1, y1 = r.polygon.bounds
        touches = x0 == inner[0] or x1 == inner[1] or y0 == inner[2] or y1 == inner[3]
        (out.edge if touches else out.interior).append(r)
    return out


def merge_edge_regions(regions: list[Region]) -> list[Region]:
    """Union same-class regions that share an edge (not just a corner) across block edges."""
    if not regions:
        return []
    geoms = np.array([r.polygon for r in regions], dtype=object)
    values = np.array([r.value for r in regions])
    left, right = shapely.STRtree(geoms).query(geoms, predicate="intersects")
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
            merged.append(regions[root])
            continue
        # drop the collinear vertices the union leaves where block edges were
        geom = shapely.simplify(shapely.union_all(geoms[members]), 0)
        merged.append(Region(geom, int(values[root]), sum(regions[m].pixels for m in members),
                             sum(regions[m].confidence_sum for m in members)))
    return merged


def iter_regions(path: str | os.PathLike, block: int = DEFAULT_BLOCK,
                 confidence: str | os.PathLike | None = None,
                 progress: Callable[[int], None] | None = None) -> Iterator[Region]:
    """All regions of a class raster (pixel coordinates), block by block; edge regions merged at the end."""
    with open_raster(path) as src:
        conf_src = open_raster(confidence) if confidence else None
        try:
            nodata = int(src.nodata) if src.nodata is not None else NODATA
            edge: list[Region] = []
            for window in blocks(src.width, src.height, block):
                data = src.read(1, window=window)
                conf = conf_src.read(1, window=window).astype(np.float32) if conf_src else None
                result = vectorize_block(data, int(window.col_off), int(window.row_off), src.width,
                                         src.height, nodata, conf)
                yield from result.interior
                edge.extend(result.edge)
                if progress:
                    progress(1)
            yield from merge_edge_regions(edge)
        finally:
            if conf_src:
                conf_src.close()


def pixel_to_world(geoms: np.ndarray, transform: Affine) -> np.ndarray:
    """Place pixel-coordinate geometries in the CRS with the raster's affine transform."""
    a, b, c, d, e, f = transform[:6]
    matrix = np.array([[a, d], [b, e]])
    offset = np.array([c, f])
    return shapely.transform(geoms, lambda pts: pts @ matrix + offset)
