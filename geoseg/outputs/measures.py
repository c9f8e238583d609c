"""True ground measures: geodesic area and perimeter of geometries in any CRS, on the CRS's own ellipsoid.

Planar measures are only right in equal-area projections (and perimeters only
where the scale is true): EPSG:3857 inflates areas by 1/cos²(latitude), 8.5×
at 70°. geoseg measures every polygon on the ellipsoid instead (Karney's
algorithm in PROJ, through :class:`pyproj.Geod`): edges are first densified in
the scene's CRS, so a long straight edge of the raster grid keeps its course,
then the vertices are taken to longitude/latitude. Without a CRS the measures
are planar, in pixel-grid units.
"""

from __future__ import annotations

import numpy as np
import pyproj
import shapely

from geoseg.io.geodesy import lonlat_degrees, unwrap_longitudes
from geoseg.io.grid import metres_per_unit

#: Longest edge, in metres (or 0.005° in geographic CRSs), before measuring on the ellipsoid.
DENSIFY_METRES = 500.0
DENSIFY_DEGREES = 0.005


def ground_measures(geoms: np.ndarray, crs) -> tuple[np.ndarray, np.ndarray]:
    """Area (m²) and perimeter (m, holes included) of each polygon or multipolygon in ``geoms`` (in ``crs``).

    Without a CRS: planar area and length in the grid's units.
    """
    geoms = np.asarray(geoms, dtype=object)
    if crs is None:
        return shapely.area(geoms).astype(float), shapely.length(geoms).astype(float)
    crs = pyproj.CRS.from_user_input(crs)
    geod = crs.get_geod()
    if geod is None:  # an engineering CRS without an ellipsoid: planar in metres
        factor = metres_per_unit(crs)
        return shapely.area(geoms) * factor**2, shapely.length(geoms) * factor
    step = DENSIFY_DEGREES if crs.is_geographic else DENSIFY_METRES / metres_per_unit(crs)
    dense = shapely.segmentize(geoms, step)
    to_lonlat = lonlat_degrees(crs)
    lonlat = shapely.transform(dense, lambda xy: _unwrapped(*to_lonlat(xy[:, 0], xy[:, 1])))
    measured = [_polygon_measures(geod, g) for g in lonlat]
    if not measured:
        return np.zeros(0), np.zeros(0)
    area, perimeter = np.array(measured, dtype=float).T
    return area, perimeter


def _unwrapped(lon: np.ndarray, lat: np.ndarray) -> np.ndarray:
    """Vertices [n, 2] with their longitudes unwrapped (:func:`~geoseg.io.geodesy.unwrap_longitudes`); the
    geodesic measures do not depend on which turn of 360° a vertex is written in."""
    return np.column_stack([unwrap_longitudes(lon), lat])


def _polygon_measures(geod: pyproj.Geod, geom) -> tuple[float, float]:
    """Area and perimeter of one (multi)polygon in lon/lat, whatever its rings' orientation."""
    area = perimeter = 0.0
    for polygon in shapely.get_parts(geom):
        for k, ring in enumerate([polygon.exterior, *polygon.interiors]):
            lon, lat = ring.xy
            a, p = geod.polygon_area_perimeter(lon, lat)
            area += abs(a) if k == 0 else -abs(a)
            perimeter += p
    return area, perimeter


def pixel_ground_area(transform, crs, col: float, row: float) -> float | None:
    """Ground area (m²) of the pixel at (``col``, ``row``) of a grid; planar in grid units without a CRS."""
    corners = [(col, row), (col + 1, row), (col + 1, row + 1), (col, row + 1)]
    pixel = shapely.Polygon([transform @ c for c in corners])
    area, _ = ground_measures(np.array([pixel], dtype=object), crs)
    return float(area[0])
