"""STAC metadata for a prediction: ``<name>.stac.json`` beside the outputs, a STAC Item (pystac) that a
catalogue understands.

The Item's geometry is the scene's footprint in WGS 84 (its edges densified, so
it contains every pixel of the scene also where the projection bends them);
the projection extension gives the grid (EPSG code or WKT2, shape, transform);
the class raster's asset lists every class (classification extension: value,
name, colour) and its nodata (raster extension); polygons, confidence and
probabilities are assets too; ``processing:*`` and ``geoseg:*`` say how it was
made (geoseg version, checkpoint, options).
"""

from __future__ import annotations

import os
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import shapely

from geoseg import __version__
from geoseg.io.atomic import atomic_write_text
from geoseg.io.classes import NODATA, ClassSchema
from geoseg.io.grid import GeoGrid

#: Points per footprint edge before it is taken to WGS 84.
EDGE_POINTS = 64


def stac_path(raster: Path) -> Path:
    return raster.with_suffix(".stac.json")


def footprint(grid: GeoGrid):
    """The scene's outline in WGS 84 (shapely), or None without georeferencing."""
    from pyproj import Transformer

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
    to_wgs84 = Transformer.from_crs(crs, "EPSG:4326", always_xy=True)
    lon, lat = to_wgs84.transform(np.asarray(xs), np.asarray(ys))
    outline = shapely.geometry.polygon.orient(shapely.Polygon(np.column_stack([lon, lat])), 1.0)
    return outline if outline.is_valid else shapely.make_valid(outline)


def write_stac_item(raster: Path, grid: GeoGrid, schema: ClassSchema, *, scene: str, checkpoint: Path,
                    options: dict, vector: Path | None = None, extra: dict[str, Path] | None = None) -> Path:
    """Write ``<raster>.stac.json``: a STAC Item describing the prediction's outputs."""
    import pystac
    from pystac.extensions.classification import Classification, ClassificationExtension
    from pystac.extensions.projection import ProjectionExtension
    from pystac.extensions.raster import DataType, RasterBand, RasterExtension

    outline = footprint(grid)
    geometry = shapely.geometry.mapping(outline) if outline is not None else None
    item = pystac.Item(id=raster.stem, geometry=geometry, bbox=list(outline.bounds) if outline else None,
                       datetime=datetime.now(timezone.utc), properties={
                           "processing:software": {"geoseg": __version__},
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
            proj.wkt2 = crs.to_wkt()
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
    """A class name as the classification extension's ``name`` wants it (no spaces)."""
    return "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in name)


def _json(d: dict) -> str:
    import json

    return json.dumps(d, indent=1, default=str) + "\n"
