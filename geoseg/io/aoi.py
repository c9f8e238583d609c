"""The area of interest (``--aoi``): polygons that limit prediction to the chips touching them and mask the
outputs to them."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import shapely
from affine import Affine
from rasterio.features import geometry_mask
from rasterio.windows import Window

from geoseg.errors import InputError


def read_area(path: str | os.PathLike, crs) -> bytes:
    """The union of the polygons in ``path``, in ``crs``, as WKB (cheap to hand to dask workers)."""
    import geopandas as gpd

    if not Path(path).is_file():
        raise InputError(f"area of interest {path} does not exist")
    try:
        gdf = gpd.read_file(path)
    except Exception as exc:  # any reading failure means the same to the user
        raise InputError(f"area of interest {path} is not a readable vector file ({type(exc).__name__})") \
            from None
    gdf = gdf[gdf.geometry.notna() & ~gdf.geometry.is_empty]
    gdf = gdf[gdf.geometry.geom_type.isin(["Polygon", "MultiPolygon"])]
    if not len(gdf):
        raise InputError(f"area of interest {path} holds no polygons")
    if crs is not None:
        if gdf.crs is None:
            raise InputError(f"area of interest {path} has no CRS; set it in QGIS (Layer → Set CRS) and save "
                             "again")
        gdf = gdf.to_crs(crs)
    return shapely.to_wkb(shapely.union_all(gdf.geometry.to_numpy()))


def area_mask(area: bytes, transform: Affine, window: Window) -> np.ndarray:
    """[h, w]: True for the pixels of ``window`` whose centre lies in the area."""
    h, w = int(window.height), int(window.width)
    t = transform @ Affine.translation(window.col_off, window.row_off)
    geometry = shapely.from_wkb(area)
    if geometry.is_empty:
        return np.zeros((h, w), bool)
    return geometry_mask([geometry], out_shape=(h, w), transform=t, invert=True)


def touches_window(area: bytes, transform: Affine, window: Window) -> bool:
    """Whether the area reaches into ``window`` at all (a quick test before reading it)."""
    c0, r0 = window.col_off, window.row_off
    c1, r1 = c0 + window.width, r0 + window.height
    footprint = shapely.Polygon([transform @ (c, r) for c, r in ((c0, r0), (c1, r0), (c1, r1), (c0, r1))])
    return bool(shapely.from_wkb(area).intersects(footprint))
