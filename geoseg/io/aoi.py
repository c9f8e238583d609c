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
from geoseg.io.geodesy import lonlat_degrees
from geoseg.io.grid import GeoGrid


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


def footprint(grid: GeoGrid) -> shapely.Polygon:
    """The outline of a grid's pixels in its own CRS (the four corners through its transform)."""
    corners = [(0, 0), (grid.width, 0), (grid.width, grid.height), (0, grid.height)]
    return shapely.Polygon([grid.transform * c for c in corners])


def touches_scene(area: bytes, grid: GeoGrid) -> bool:
    """Whether the area of interest (WKB in the grid's CRS) overlaps the grid's footprint."""
    return shapely.intersects(shapely.from_wkb(area), footprint(grid))


def outside_error(path: str | os.PathLike, scenes: str, grids: list[GeoGrid]) -> InputError:
    """The sentence for an area of interest that touches none of the scenes: the AOI's CRS and bounds and
    the scenes' footprint, both also in longitude/latitude (a wrong CRS tag is the usual cause)."""
    import geopandas as gpd

    gdf = gpd.read_file(path)
    aoi_lonlat = _lonlat_bounds([shapely.union_all(gdf.geometry.to_numpy())], gdf.crs)
    scenes_lonlat = _lonlat_bounds([footprint(g) for g in grids], grids[0].crs)
    return InputError(f"area of interest {path} ({gdf.crs.to_string() if gdf.crs else 'no CRS'}, "
                      f"{aoi_lonlat}) touches none of {scenes} ({scenes_lonlat}); nothing was predicted; "
                      f"check the CRS the AOI file declares (in QGIS: Layer → Set CRS)")


def _lonlat_bounds(geoms: list, crs) -> str:
    """Bounds of ``geoms`` in longitude/latitude degrees (in grid units where the CRS is unknown)."""
    bounds = shapely.total_bounds(np.array(geoms, dtype=object))
    if crs is None:
        return "bounds {:.6g}, {:.6g} – {:.6g}, {:.6g} in grid units".format(*bounds)
    to_lonlat = lonlat_degrees(crs)
    dense = shapely.segmentize(shapely.box(*bounds), max(bounds[2] - bounds[0], bounds[3] - bounds[1]) / 16)
    lon, lat = to_lonlat(*np.asarray(dense.exterior.xy))
    return (f"longitude {np.nanmin(lon):.4f}° to {np.nanmax(lon):.4f}°, "
            f"latitude {np.nanmin(lat):.4f}° to {np.nanmax(lat):.4f}°")
