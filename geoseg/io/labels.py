"""Label sources: class-id rasters, RGB colour-coded masks, polygons.

Each reader turns a window of labels into model *indices* (0..n-1, and
:data:`~geoseg.io.classes.IGNORE_INDEX` for no label), whatever the source form.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
import rasterio
from affine import Affine
from rasterio.enums import Resampling
from rasterio.features import rasterize
from rasterio.windows import Window

from geoseg.errors import GeoSegWarning, LabelError, RasterError
from geoseg.io.classes import IGNORE_INDEX, ClassSchema
from geoseg.io.formats import VECTOR_SUFFIXES
from geoseg.io.grid import GeoGrid
from geoseg.io.raster import open_raster, read_boundless


def label_kind(path: str | os.PathLike) -> str:
    """'polygons', 'rgb' or 'ids', from the file's extension and band count."""
    if Path(path).suffix.lower() in VECTOR_SUFFIXES:
        return "polygons"
    with open_raster(path) as src:
        return "rgb" if src.count >= 3 else "ids"


def _rgb_decoder(schema: ClassSchema) -> np.ndarray | None:
    """An 8-entry table from binarized (R,G,B) to index, if all class colours are binary (as in DeepGlobe)."""
    table = np.full(8, -1, np.int16)
    for i, c in enumerate(schema.classes):
        if any(v not in (0, 255) for v in c.color):
            return None
        key = (c.color[0] // 255) * 4 + (c.color[1] // 255) * 2 + c.color[2] // 255
        table[key] = IGNORE_INDEX if c.ignore else i
    return table


def decode_rgb(rgb: np.ndarray, schema: ClassSchema, source: str = "mask",
               unlabelled: np.ndarray | None = None) -> np.ndarray:
    """Decode an RGB mask [3, h, w] to indices, as DeepGlobe's authors specify.

    Each channel is binarized at 128 (compression moves values off the palette),
    then mapped to the palette. A colour outside the palette is an error naming it.
    """
    table = _rgb_decoder(schema)
    if table is not None:
        key = ((rgb[0] >= 128).astype(np.uint8) * 4 + (rgb[1] >= 128) * 2 + (rgb[2] >= 128)).astype(np.uint8)
        out = table[key]
    else:
        out = np.full(rgb.shape[1:], -1, np.int16)
        for i, c in enumerate(schema.classes):
            hit = (rgb[0] == c.color[0]) & (rgb[1] == c.color[1]) & (rgb[2] == c.color[2])
            out[hit] = IGNORE_INDEX if c.ignore else i
    if unlabelled is not None:
        out[unlabelled] = IGNORE_INDEX  # past the raster's edge: whatever colour the read filled in
    bad = out < 0
    if bad.any():
        r, col = np.argwhere(bad)[0]
        colour = tuple(int(v) for v in rgb[:, r, col])
        raise LabelError(f"{source} has colour {colour} that matches no class colour")
    return out.astype(np.uint8)


def decode_ids(codes: np.ndarray, schema: ClassSchema, nodata: float | None, source: str = "label",
               unlabelled: np.ndarray | None = None) -> np.ndarray:
    """Map class codes to indices. Nodata (any value the file declares: 65535, -9999, NaN …), NaN and the
    ``unlabelled`` pixels are no label (ignore); any other value outside the class list is an error."""
    unlabelled = _missing_values(codes, nodata) | (False if unlabelled is None else unlabelled)
    labelled = codes[~unlabelled]
    whole = labelled == np.round(labelled) if np.issubdtype(codes.dtype, np.floating) else True
    in_range = whole & (labelled >= 0) & (labelled <= 255)
    known = np.zeros(256, bool)
    known[schema.codes] = True
    bad = ~in_range
    bad[in_range] = ~known[labelled[in_range].astype(np.int64)]
    if bad.any():
        values = sorted(set(np.unique(labelled[bad]).tolist()))[:5]
        values = [int(v) if float(v).is_integer() else v for v in values]
        raise LabelError(f"{source} has value(s) {values} that are not class codes {schema.codes}")
    out = np.full(codes.shape, IGNORE_INDEX, np.uint8)
    out[~unlabelled] = schema.code_to_index_lut()[labelled.astype(np.int64)]
    return out


def _missing_values(codes: np.ndarray, nodata: float | None) -> np.ndarray:
    """Where a label raster holds no label: its nodata value, and NaN in float rasters."""
    missing = np.isnan(codes) if np.issubdtype(codes.dtype, np.floating) else np.zeros(codes.shape, bool)
    if nodata is not None and not np.isnan(nodata):
        missing |= codes == nodata
    return missing


def _polygon_classes(values, schema: ClassSchema, source: str) -> np.ndarray:
    """Model indices of polygon attribute ``values``: integer class codes, or class names (text, matched
    case-insensitively, as analysts type them in QGIS). An unknown value is an error listing the classes."""
    if values.dtype == object or str(values.dtype).startswith(("string", "str")):
        names = values.astype(str).str.strip().str.lower()
        lookup = {name.lower(): (IGNORE_INDEX if c.ignore else i)
                  for i, (name, c) in enumerate(zip(schema.names, schema.classes))}
        bad = sorted(set(names) - set(lookup))
        if bad:
            raise LabelError(f"{source} has class name(s) {bad[:5]} that are not classes; the classes are "
                             f"{', '.join(schema.names)}")
        return names.map(lookup).to_numpy(np.int64)
    codes = values.to_numpy()
    bad = sorted(set(int(c) for c in codes if int(c) not in schema.codes))
    if bad:
        raise LabelError(f"{source} has class code(s) {bad[:5]} not in {schema.codes}")
    return schema.code_to_index_lut()[codes.astype(int)].astype(np.int64)


def check_label_grid(label: str | os.PathLike, label_grid: GeoGrid, image_grid: GeoGrid) -> None:
    """Refuse a label raster that is not on its image's grid (CRS, size, transform)."""
    g = image_grid
    if label_grid.crs != g.crs and label_grid.crs is not None and g.crs is not None:
        raise RasterError(f"label {label} is in {label_grid.crs} but its image is in {g.crs}; reproject one "
                          "of them")
    if (label_grid.width, label_grid.height) != (g.width, g.height) or not label_grid.transform.almost_equals(
            g.transform, 1e-9):
        raise RasterError(
            f"label {label} ({label_grid.width}×{label_grid.height}) is not on its image's grid "
            f"({g.width}×{g.height}, same transform); labels must align pixel for pixel"
        )


class LabelReader:
    """Reads label windows on an image's grid, in model indices."""

    def __init__(self, path: str | os.PathLike, image_grid: GeoGrid, schema: ClassSchema,
                 class_field: str = "class_id", align: bool = False, name: str | None = None):
        """With ``align``, a label raster on another grid is reprojected onto the image's grid
        (nearest neighbour, with a warning) instead of refused. ``name`` is the file named in messages
        (default ``path``; differs when ``path`` is a cached copy)."""
        self.path = str(path)
        self.name = name or self.path
        self.grid = image_grid
        self.schema = schema
        self.kind = label_kind(path)
        self.class_field = class_field
        self.warp = False
        self._src = None
        self._gdf = None
        if self.kind != "polygons":
            with open_raster(path) as src:
                grid = GeoGrid.from_dataset(src)
                nodata = src.nodata
            if nodata is not None and nodata in schema.codes:
                shadowed = schema.classes[schema.codes.index(int(nodata))].name
                warnings.warn(f"label {self.name} declares nodata {nodata:g}, which is also the code of "
                              f"class '{shadowed}'; those pixels are read as unlabelled", GeoSegWarning)
            try:
                check_label_grid(self.name, grid, self.grid)
            except RasterError:
                if not align:
                    raise
                self.warp = True
                warnings.warn(f"{self.name} is not on the grid of the raster it is compared with; it is "
                              f"reprojected onto that grid with nearest neighbour", GeoSegWarning)

    def _open(self):
        if self._src is None:
            src = rasterio.open(self.path)
            if self.warp:
                from rasterio.vrt import WarpedVRT
                nodata = src.nodata if src.nodata is not None else (0 if self.kind == "rgb" else IGNORE_INDEX)
                src = WarpedVRT(src, crs=self.grid.crs or src.crs, transform=self.grid.transform,
                                width=self.grid.width, height=self.grid.height, resampling=Resampling.nearest,
                                nodata=nodata)
            self._src = src
        return self._src

    def _polygons(self):
        if self._gdf is None:
            import geopandas as gpd
            gdf = gpd.read_file(self.path)
            if self.class_field not in gdf.columns:
                raise LabelError(f"label {self.name} has no '{self.class_field}' field")
            if gdf.crs is not None and self.grid.crs is not None and gdf.crs != self.grid.crs:
                gdf = gdf.to_crs(self.grid.crs)
            values = gdf[self.class_field]
            gdf = gdf[values.notna()]  # a polygon without a class is no label
            gdf = gdf.assign(_index=_polygon_classes(gdf[self.class_field], self.schema,
                                                    f"label {self.name} field '{self.class_field}'"))
            self._gdf = gdf
        return self._gdf

    def polygons_in_image(self) -> dict[int, int]:
        """The polygons that reach into the image: their row in the label file → class index."""
        gdf = self._polygons()
        scene = _footprint(Window(0, 0, self.grid.width, self.grid.height), self.grid.transform)
        hits = np.sort(gdf.sindex.query(scene, predicate="intersects"))
        classes = gdf["_index"].to_numpy()[hits]
        return {int(row): int(c) for row, c in zip(gdf.index.to_numpy()[hits], classes) if c != IGNORE_INDEX}

    def read(self, window: Window, out_shape: tuple[int, int]) -> np.ndarray:
        """Label indices for ``window`` (image pixels) resampled to ``out_shape``; outside → ignore."""
        if self.kind == "polygons":
            gdf = self._polygons()
            # in file order, so where polygons overlap the later one is drawn over the earlier ones
            hits = gdf.iloc[np.sort(gdf.sindex.query(_footprint(window, self.grid.transform),
                                                     predicate="intersects"))]
            out = np.full(out_shape, IGNORE_INDEX, np.uint8)
            if len(hits):
                t = self.grid.transform @ Affine.translation(window.col_off, window.row_off) @ Affine.scale(
                    window.width / out_shape[1], window.height / out_shape[0])
                out = rasterize(zip(hits.geometry, hits["_index"].astype(int)), out_shape=out_shape,
                                transform=t, fill=IGNORE_INDEX, dtype="uint8")
            return out
        src = self._open()
        bands = [1, 2, 3] if self.kind == "rgb" else [1]
        nodata = src.nodata
        fill = 0 if nodata is None or self.kind == "rgb" else nodata
        # a warped label is read inside the grid it was warped to; the pixels past the raster's edge are
        # no label (whatever value the read filled them with)
        if self.warp:
            data = src.read(bands, window=window, out_shape=(len(bands), *out_shape),
                            resampling=Resampling.nearest)
        else:
            data = read_boundless(src, bands, window, (len(bands), *out_shape), fill)
        outside = ~_inside(window, (src.height, src.width), out_shape)
        if self.kind == "rgb":
            return decode_rgb(data, self.schema, source=f"label {self.name}", unlabelled=outside)
        return decode_ids(data[0], self.schema, nodata, source=f"label {self.name}", unlabelled=outside)

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_src"] = None
        return state


def _footprint(window: Window, transform: Affine):
    """The window's true footprint (four corners: right on rotated and sheared grids too)."""
    import shapely
    c0, r0 = window.col_off, window.row_off
    c1, r1 = c0 + window.width, r0 + window.height
    return shapely.Polygon([transform @ (c, r) for c, r in ((c0, r0), (c1, r0), (c1, r1), (c0, r1))])


def _inside(window: Window, shape: tuple[int, int], out_shape: tuple[int, int]) -> np.ndarray:
    """Which pixels of a read of ``window`` into ``out_shape`` have their centre inside a raster of
    ``shape``."""
    rows = window.row_off + (np.arange(out_shape[0]) + 0.5) * window.height / out_shape[0]
    cols = window.col_off + (np.arange(out_shape[1]) + 0.5) * window.width / out_shape[1]
    return ((rows >= 0) & (rows < shape[0]))[:, None] & ((cols >= 0) & (cols < shape[1]))[None, :]
