"""STAC metadata for a prediction: ``<name>.stac.json`` beside the outputs, a STAC Item (pystac) that a
catalogue understands.

The Item's geometry is the scene's footprint in WGS 84 (its edges densified, so
it contains every pixel of the scene also where the projection bends them; cut
to the area of interest when one was given), as RFC 7946 wants it: split into a
MultiPolygon at the antimeridian (with a bbox whose west is east of its east)
and closed over the pole for a scene that covers one. ``datetime`` is the
acquisition time the scene records (GDAL/TIFF metadata or a STAC item beside
it), else ``--acquired``, else null with an interval from the epoch to the
scene file's last change; the processing time is ``processing:datetime``.
The projection extension gives the grid (EPSG code or WKT2, shape, transform);
the class raster's asset lists every class (classification extension: value,
name, colour) and its nodata (raster extension); polygons, confidence and
probabilities are assets too; ``processing:*`` and ``geoseg:*`` say how it was
made (geoseg version, checkpoint, options).
"""

from __future__ import annotations

import json
import os
import unicodedata
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import rasterio
import shapely
import shapely.affinity

from geoseg import __version__
from geoseg.errors import InputError
from geoseg.io.atomic import atomic_write_text
from geoseg.io.classes import NODATA, ClassSchema
from geoseg.io.geodesy import unwrap_longitudes
from geoseg.io.grid import GeoGrid

#: Points per footprint edge before it is taken to WGS 84.
EDGE_POINTS = 64


def stac_path(raster: Path) -> Path:
    return raster.with_suffix(".stac.json")


def footprint(grid: GeoGrid, area=None):
    """The scene's outline in WGS 84 as RFC 7946 wants it (shapely), or None without georeferencing: split
    into a MultiPolygon at the antimeridian, closed over the pole where the scene covers one, and cut to
    ``area`` (a shapely geometry in the scene's CRS: the area of interest) when given."""
    n = EDGE_POINTS
    t = np.linspace(0, 1, n, endpoint=False)
    w, h = grid.width, grid.height
    cols = np.concatenate([t * w, np.full(n, w), (1 - t) * w, np.zeros(n)])
    rows = np.concatenate([np.zeros(n), t * h, np.full(n, h), (1 - t) * h])
    if grid.has_geotransform and grid.crs is not None:
        a, b, c, d, e, f = list(grid.transform)[:6]
        xs, ys = a * cols + b * rows + c, d * cols + e * rows + f
        crs = grid.crs
    elif grid.gcps and grid.gcp_crs is not None:
        from rasterio.transform import GCPTransformer

        with GCPTransformer(list(grid.gcps)) as transformer:
            xs, ys = transformer.xy(rows, cols, offset="ul")
        crs = grid.gcp_crs
    else:
        return None
    outline = shapely.Polygon(np.column_stack([xs, ys]))
    if area is not None:
        outline = shapely.intersection(shapely.make_valid(outline), area)
        outline = shapely.segmentize(outline, max(outline.length, 1e-9) / (4 * n))
    pieces = [_lonlat_polygon(p, crs) for p in shapely.get_parts(outline) if isinstance(p, shapely.Polygon)]
    return _on_the_globe([p for p in pieces if p is not None])


def _lonlat_polygon(polygon, crs):
    """``polygon`` (in ``crs``) in WGS 84 longitude/latitude, its longitudes unwrapped (an outline crossing
    the antimeridian runs past ±180°) and, where its outline winds around a pole, closed over that pole."""
    from pyproj import Transformer

    to_wgs84 = Transformer.from_crs(crs, "EPSG:4326", always_xy=True)

    def ring(coords) -> np.ndarray:
        x, y = np.asarray(coords)[:-1].T
        lon, lat = (np.asarray(v, float) for v in to_wgs84.transform(x, y))
        keep = np.isfinite(lon) & np.isfinite(lat)
        lon, lat = lon[keep], lat[keep]
        if lon.size < 3:
            return np.zeros((0, 2))
        return np.column_stack([unwrap_longitudes(lon), lat])

    exterior = ring(polygon.exterior.coords)
    if len(exterior) < 3:
        return None
    close = exterior[0, 0] - exterior[-1, 0]
    winding = (exterior[-1, 0] + close - 360.0 * round(close / 360.0)) - exterior[0, 0]
    if abs(winding) > 180:  # the outline goes once round a pole: close it over that pole
        pole = 90.0 if exterior[:, 1].mean() > 0 else -90.0
        end = exterior[0, 0] + winding
        exterior = np.vstack([exterior, [[end, exterior[0, 1]], [end, pole], [exterior[0, 0], pole]]])
    holes = []
    for interior in polygon.interiors:
        hole = ring(interior.coords)
        if len(hole) >= 3:
            hole[:, 0] += 360.0 * round((exterior[0, 0] - hole[0, 0]) / 360.0)
            holes.append(hole)
    result = shapely.Polygon(exterior, holes)
    return result if result.is_valid else shapely.make_valid(result)


def _on_the_globe(pieces: list):
    """Unwrapped lon/lat polygons cut into the −180…180° window they belong to (a MultiPolygon where they
    cross the antimeridian), counter-clockwise."""
    if not pieces:
        return None
    unwrapped = shapely.union_all(pieces)
    west, _, east, _ = unwrapped.bounds
    parts = []
    for turn in range(int(np.floor((west + 180) / 360)), int(np.floor((east + 180) / 360)) + 1):
        window = shapely.box(-180 + 360 * turn, -90, 180 + 360 * turn, 90)
        part = shapely.intersection(unwrapped, window)
        if not part.is_empty:
            parts.extend(p for p in shapely.get_parts(shapely.affinity.translate(part, -360 * turn))
                         if isinstance(p, shapely.Polygon) and p.area > 0)
    parts = [shapely.geometry.polygon.orient(p, 1.0)
             for p in shapely.get_parts(shapely.union_all(parts)) if isinstance(p, shapely.Polygon)]
    return parts[0] if len(parts) == 1 else shapely.MultiPolygon(parts)


def bbox(outline) -> list[float]:
    """RFC 7946 bounding box: west, south, east, north, with west > east where the outline crosses the
    antimeridian (parts touching both +180° and −180°)."""
    parts = list(shapely.get_parts(outline))
    west, south, east, north = outline.bounds
    crosses = (len(parts) > 1 and any(p.bounds[2] >= 180 - 1e-9 for p in parts)
               and any(p.bounds[0] <= -180 + 1e-9 for p in parts) and north < 90 and south > -90)
    if crosses:
        west = min(p.bounds[0] for p in parts if p.bounds[2] >= 180 - 1e-9)
        east = max(p.bounds[2] for p in parts if p.bounds[0] <= -180 + 1e-9)
    return [west, south, east, north]


def write_stac_item(raster: Path, grid: GeoGrid, schema: ClassSchema, *, scene: str, checkpoint: Path,
                    options: dict, vector: Path | None = None, extra: dict[str, Path] | None = None,
                    area=None, acquired: str | None = None) -> Path:
    """Write ``<raster>.stac.json``: a STAC Item describing the prediction's outputs. ``area``: the area of
    interest (shapely, in the scene's CRS) the footprint is cut to; ``acquired``: the acquisition time when
    the scene does not tell it (ISO 8601)."""
    import pystac
    from pystac.extensions.classification import Classification, ClassificationExtension
    from pystac.extensions.projection import ProjectionExtension
    from pystac.extensions.raster import DataType, RasterBand, RasterExtension

    outline = footprint(grid, area)
    geometry = shapely.geometry.mapping(outline) if outline is not None else None
    when, start, end = _item_time(scene, acquired)
    item = pystac.Item(id=raster.stem, geometry=geometry, bbox=bbox(outline) if outline else None,
                       datetime=when, start_datetime=start, end_datetime=end, properties={
                           "processing:software": {"geoseg": __version__},
                           "processing:datetime": _iso(datetime.now(timezone.utc)),
                           "processing:lineage": f"land cover predicted from {scene} with {checkpoint}",
                           "geoseg:checkpoint": str(checkpoint), "geoseg:scene": str(scene),
                           "geoseg:options": options})
    item.stac_extensions.append("https://stac-extensions.github.io/processing/v1.2.0/schema.json")
    proj = ProjectionExtension.ext(item, add_if_missing=True)
    crs = grid.crs if grid.has_geotransform else grid.gcp_crs
    if crs is not None:
        epsg = crs.to_epsg()
        if epsg:
            proj.epsg = epsg
        else:
            from pyproj import CRS

            proj.wkt2 = CRS.from_user_input(crs).to_wkt("WKT2_2019")
    proj.shape = [grid.height, grid.width]
    if grid.has_geotransform:
        proj.transform = list(grid.transform)[:6]
    asset = pystac.Asset(_href(raster, raster), media_type=pystac.MediaType.GEOTIFF,
                         title="land-cover classes", roles=["data"])
    item.add_asset("classes", asset)
    ClassificationExtension.ext(asset, add_if_missing=True).classes = [
        Classification.create(value=c.code, name=_identifier(c.name), description=c.name,
                              color_hint="%02X%02X%02X" % c.color) for c in schema.classes]
    RasterExtension.ext(asset, add_if_missing=True).bands = [RasterBand.create(nodata=NODATA,
                                                                               data_type=DataType.UINT8)]
    for name, path in (extra or {}).items():
        item.add_asset(name, pystac.Asset(_href(path, raster), media_type=pystac.MediaType.GEOTIFF,
                                          title=name, roles=["data"]))
    if vector is not None:
        media = "application/geopackage+sqlite3" if vector.suffix.lower() == ".gpkg" else None
        item.add_asset("polygons", pystac.Asset(_href(vector, raster), media_type=media,
                                                title="land-cover polygons", roles=["data"]))
    path = stac_path(raster)
    atomic_write_text(path, _json(item.to_dict(include_self_link=False)))
    return path


def _href(path: Path, beside: Path) -> str:
    return os.path.relpath(Path(path).resolve(), Path(beside).resolve().parent)


def _identifier(name: str) -> str:
    """A class name as the classification extension's ``name`` wants it: ASCII letters, digits, ``-`` and
    ``_`` (accents dropped: ``Forêt`` → ``Foret``; anything else → ``_``); the display name stays in
    ``description``."""
    plain = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode()
    return "".join(ch if ch.isascii() and (ch.isalnum() or ch in "-_") else "_" for ch in plain) or "class"


#: GDAL metadata items that hold a scene's acquisition time, most specific first.
ACQUISITION_TAGS = ("ACQUISITION_DATETIME", "ACQUISITIONDATETIME", "DATATAKE_1_DATATAKE_SENSING_START",
                    "PRODUCT_START_TIME", "SENSING_TIME", "ACQUISITION_DATE", "DATE_ACQUIRED",
                    "TIFFTAG_DATETIME", "DATETIME")

#: The earliest time a file's timestamp can express: the start of the interval given for a scene whose
#: acquisition time nothing tells.
EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


def _item_time(scene: str, acquired: str | None = None) -> tuple[datetime | None, datetime | None,
                                                                 datetime | None]:
    """The Item's ``datetime`` and, where that is unknown, ``start_datetime``/``end_datetime``: the
    acquisition time the scene records (its GDAL/TIFF metadata, or a STAC item beside it:
    ``<scene>.json`` or ``<scene stem>.stac.json``), else ``acquired``; else null with the interval from
    the epoch to the scene file's last change (it was acquired before it was written)."""
    when = _scene_time(scene) or (parse_time(acquired) if acquired else None)
    if when is not None:
        return when, None, None
    try:
        written = datetime.fromtimestamp(os.stat(scene).st_mtime, timezone.utc)
    except OSError:  # a remote scene
        written = datetime.now(timezone.utc)
    return None, EPOCH, written


def _scene_time(scene: str) -> datetime | None:
    for sidecar in (Path(f"{scene}.json"), Path(scene).with_suffix(".stac.json")):
        if sidecar.is_file():
            try:
                props = json.loads(sidecar.read_text()).get("properties", {})
            except (OSError, ValueError, AttributeError):
                continue
            for key in ("datetime", "start_datetime"):
                if props.get(key):
                    parsed = parse_time(str(props[key]), strict=False)
                    if parsed is not None:
                        return parsed
    try:
        with rasterio.open(scene) as src:
            tags = {k.upper(): v for k, v in src.tags().items()}
    except rasterio.errors.RasterioIOError:
        return None
    for key in ACQUISITION_TAGS:
        if tags.get(key):
            parsed = parse_time(tags[key], strict=False)
            if parsed is not None:
                return parsed
    return None


def parse_time(text: str, strict: bool = True) -> datetime | None:
    """An ISO 8601 date or time (or TIFF's ``YYYY:MM:DD HH:MM:SS``), in UTC where no zone is given."""
    value = text.strip()
    if len(value) >= 10 and value[4] == ":" and value[7] == ":":  # TIFF DateTime
        value = value[:4] + "-" + value[5:7] + "-" + value[8:]
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        if strict:
            raise InputError(f"--acquired must be an ISO 8601 date or time such as 2024-06-01 or "
                             f"2024-06-01T10:30:00Z, got {text!r}") from None
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)


def _iso(when: datetime) -> str:
    return when.isoformat().replace("+00:00", "Z")


def _json(d: dict) -> str:
    return json.dumps(d, indent=1, default=str) + "\n"
