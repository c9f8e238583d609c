"""Ground truth of a CRS: positions as longitude/latitude in degrees east of Greenwich, and lengths on the
CRS's own ellipsoid.

Every ground measure in geoseg (polygon areas and perimeters, a scene's ground
pixel size, footprints) starts here, so a CRS whose geographic base is in grads
from the Paris meridian (NTF, the French Lambert zones), in radians, or whose
projection is not conformal or equal-area (Web Mercator) is measured as the
ground is, never as its units read.
"""

from __future__ import annotations

import math
from typing import Callable

import numpy as np
import pyproj

LonLat = Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]


def _as_pyproj(crs) -> pyproj.CRS:
    """``crs`` (rasterio, pyproj, WKT, EPSG code) as a pyproj CRS."""
    return crs if isinstance(crs, pyproj.CRS) else pyproj.CRS.from_user_input(crs)


def lonlat_degrees(crs) -> LonLat:
    """A function taking x, y arrays in ``crs`` to longitude and latitude in degrees east of Greenwich on the
    CRS's own datum (no datum shift: measures stay on the CRS's ellipsoid).

    pyproj takes a projected CRS to its geographic base CRS in that CRS's own
    angular unit and from its own prime meridian; both are converted here.
    """
    crs = _as_pyproj(crs)
    base = crs.geodetic_crs if crs.geodetic_crs is not None else crs
    to_base = pyproj.Transformer.from_crs(crs, base, always_xy=True)
    to_degrees = math.degrees(base.axis_info[0].unit_conversion_factor) if base.axis_info else 1.0
    meridian = base.prime_meridian
    shift = 0.0 if meridian is None else math.degrees(meridian.longitude * meridian.unit_conversion_factor)

    def transform(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        lon, lat = to_base.transform(np.asarray(x, float), np.asarray(y, float))
        lon = np.asarray(lon) * to_degrees + shift
        return (lon + 180.0) % 360.0 - 180.0, np.asarray(lat) * to_degrees

    return transform


def unwrap_longitudes(lon: np.ndarray) -> np.ndarray:
    """Longitudes (degrees) without jumps of 360° between consecutive vertices, so each edge of a ring that
    crosses the antimeridian goes the short way round (the values may then run past ±180°)."""
    lon = np.asarray(lon, float)
    if lon.size < 2:
        return lon
    steps = np.diff(lon)
    return np.concatenate([lon[:1], lon[0] + np.cumsum(steps - 360.0 * np.round(steps / 360.0))])


def ground_steps(transform, crs, cols: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """Ground length in metres of one pixel step along the columns (x) and along the rows (y) at pixel
    positions (``cols``, ``rows``) of a grid placed by ``transform`` in ``crs``: geodesic distances between
    the positions and their neighbours one pixel to the right and one pixel down. None where the CRS has no
    ellipsoid."""
    crs = _as_pyproj(crs)
    geod = crs.get_geod()
    if geod is None:
        return None
    to_lonlat = lonlat_degrees(crs)
    cols, rows = np.asarray(cols, float), np.asarray(rows, float)
    t = transform
    points = [(t.a * (cols + dc) + t.b * (rows + dr) + t.c, t.d * (cols + dc) + t.e * (rows + dr) + t.f)
              for dc, dr in ((0, 0), (1, 0), (0, 1))]
    (lon0, lat0), (lon1, lat1), (lon2, lat2) = (to_lonlat(*p) for p in points)
    _, _, step_x = geod.inv(lon0, lat0, lon1, lat1)
    _, _, step_y = geod.inv(lon0, lat0, lon2, lat2)
    return np.atleast_1d(step_x), np.atleast_1d(step_y)


def same_crs(a, b) -> bool:
    """Whether two CRSs place coordinates on the ground the same way, whatever their text: the same UTM zone
    written by EPSG code, as WKT1 or WKT2, or with a null ``TOWGS84[0,0,0]`` is one CRS."""
    if a is None or b is None:
        return a is None and b is None
    a, b = _without_null_shift(_as_pyproj(a)), _without_null_shift(_as_pyproj(b))
    return a.equals(b, ignore_axis_order=True)


def _without_null_shift(crs: pyproj.CRS) -> pyproj.CRS:
    """``crs`` without a bound transformation that does nothing (all its parameters 0)."""
    if crs.is_bound and crs.coordinate_operation is not None and all(
            not p.value for p in crs.coordinate_operation.params):
        return crs.source_crs
    return crs
