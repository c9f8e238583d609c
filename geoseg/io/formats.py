"""The file formats geoseg writes and reads, by extension, and where files may live."""

from __future__ import annotations

#: Class rasters: GeoTIFF.
RASTER_SUFFIXES = (".tif", ".tiff")

#: Scenes found in a folder or by a glob (``geoseg init``, several scenes to predict).
IMAGE_SUFFIXES = (".tif", ".tiff", ".jp2", ".vrt", ".img", ".png", ".jpg", ".jpeg")

#: Vector formats by extension → OGR driver (polygons written by predict; polygon labels read by training).
#: The polygon layer's name in formats with named layers.
DEFAULT_LAYER = "landcover"
VECTOR_FORMATS = {".gpkg": "GPKG", ".geojson": "GeoJSON", ".json": "GeoJSON", ".shp": "ESRI Shapefile",
                  ".fgb": "FlatGeobuf", ".parquet": "Parquet"}
VECTOR_SUFFIXES = tuple(VECTOR_FORMATS)


def is_remote(path: object) -> bool:
    """Whether GDAL, not the local file system, resolves ``path``: ``/vsi…`` paths and URLs (``https://``,
    ``s3://``, ``gs://`` …)."""
    text = str(path)
    return text.startswith("/vsi") or "://" in text
