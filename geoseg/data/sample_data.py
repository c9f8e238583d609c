"""Write synthetic sample scenes: imagery, labels in three forms, and a manifest.

Used by ``geoseg sample-data`` and to make the bundled ``sample_data/``.
"""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import rasterio
from affine import Affine
from rasterio.crs import CRS

from geoseg.data.scenes import SYNTHETIC_TAG
from geoseg.data.synth import make_landscape, render
from geoseg.io.atomic import atomic_output, check_output_path
from geoseg.io.classes import DEEPGLOBE, ClassSchema
from geoseg.io.grid import GeoGrid, blocks
from geoseg.outputs.class_raster import class_raster_profile, write_class_metadata
from geoseg.outputs.polygons import write_polygons

CRS_UTM33N = CRS.from_epsg(32633)
PIXEL_SIZE = 0.5
RENDER_BLOCK = 1024


@dataclass(frozen=True)
class SampleScene:
    name: str
    split: str
    image: Path
    classes: Path
    rgb_mask: Path
    polygons: Path | None
    class_counts: tuple[int, ...]


def scene_grid(size: int, index: int) -> GeoGrid:
    """A 0.5 m grid in UTM 33N; scenes sit side by side 10 km apart."""
    origin_x = 400000.0 + 10000.0 * index
    origin_y = 5100000.0
    return GeoGrid(size, size, Affine(PIXEL_SIZE, 0, origin_x, 0, -PIXEL_SIZE, origin_y), CRS_UTM33N)


def _image_profile(grid: GeoGrid, compress: str) -> dict:
    profile = {
        "driver": "GTiff", "width": grid.width, "height": grid.height, "count": 3, "dtype": "uint8",
        "crs": grid.crs, "transform": grid.transform, "tiled": True, "blockxsize": 256, "blockysize": 256,
        "photometric": "RGB",
    }
    if compress == "jpeg":
        profile.update(compress="jpeg", jpeg_quality=90, photometric="YCbCr", interleave="pixel")
    else:
        profile.update(compress="deflate", predictor=2, interleave="pixel", nodata=0)
    return profile


def write_scene(out_dir: Path, name: str, split: str, size: int, seed: int, index: int,
                compress: str = "jpeg", polygons: bool = True, schema: ClassSchema = DEEPGLOBE,
                progress: Callable[[int], None] | None = None) -> SampleScene:
    """Render one scene block by block into ``out_dir``."""
    land = make_landscape(size, size, seed)
    grid = scene_grid(size, index)
    image = out_dir / f"{name}.tif"
    classes = out_dir / f"{name}_classes.tif"
    rgb_mask = out_dir / f"{name}_mask.tif"
    counts = np.zeros(256, np.int64)
    lut = np.zeros((256, 3), np.uint8)
    for c in schema.classes:
        lut[c.code] = c.color
    mask_profile = _image_profile(grid, "deflate")
    mask_profile.pop("nodata")
    with rasterio.Env(GDAL_TIFF_INTERNAL_MASK=True), \
            atomic_output(image) as tmp_img, atomic_output(classes) as tmp_cls, \
            atomic_output(rgb_mask) as tmp_rgb:
        with rasterio.open(tmp_img, "w", **_image_profile(grid, compress)) as dst_img, \
                rasterio.open(tmp_cls, "w", **class_raster_profile(grid)) as dst_cls, \
                rasterio.open(tmp_rgb, "w", **mask_profile) as dst_rgb:
            write_class_metadata(dst_cls, schema, {"source": f"geoseg synthetic scene seed={seed}"})
            dst_img.update_tags(**{SYNTHETIC_TAG: f"seed={seed}"})  # models trained on it say so
            for window in blocks(size, size, RENDER_BLOCK):
                r0, c0 = int(window.row_off), int(window.col_off)
                rgb, cls, valid = render(land, (r0, r0 + int(window.height)), (c0, c0 + int(window.width)))
                dst_img.write(rgb, window=window)
                if compress == "jpeg":
                    dst_img.write_mask(valid.astype(np.uint8) * 255, window=window)
                dst_cls.write(cls, 1, window=window)
                dst_rgb.write(np.moveaxis(lut[cls], -1, 0), window=window)  # nodata → (0,0,0) = unknown
                counts += np.bincount(cls.ravel(), minlength=256)
                if progress:
                    progress(1)
    gpkg = None
    if polygons:
        gpkg = out_dir / f"{name}_labels.gpkg"
        write_polygons(classes, gpkg, schema, layer="labels", summary=False)
    return SampleScene(name, split, image, classes, rgb_mask, gpkg,
                       tuple(int(counts[c.code]) for c in schema.classes))


def make_sample_data(out_dir: str | os.PathLike, size: int = 1024, seed: int = 7,
                     splits: tuple[str, ...] = ("train", "train", "val", "test"),
                     compress: str = "jpeg", polygons: bool = True,
                     progress: Callable[[int], None] | None = None,
                     overwrite: bool = False) -> list[SampleScene]:
    """Write one scene per entry of ``splits`` and a ``manifest.csv`` listing them; files already in
    ``out_dir`` under those names are refused unless ``overwrite``."""
    out = Path(out_dir)
    names, numbers = [], {}
    for split in splits:
        numbers[split] = numbers.get(split, 0) + 1
        names.append(f"{split}_{numbers[split]}")
    if out.is_dir():
        for name in names:
            for ending in (".tif", "_classes.tif", "_mask.tif", *(["_labels.gpkg"] if polygons else [])):
                check_output_path(out / f"{name}{ending}", overwrite)
        check_output_path(out / "manifest.csv", overwrite)
    out.mkdir(parents=True, exist_ok=True)
    scenes = []
    for index, (split, name) in enumerate(zip(splits, names)):
        scenes.append(write_scene(out, name, split, size, seed * 1000 + index, index, compress, polygons,
                                  progress=progress))
    with atomic_output(out / "manifest.csv") as tmp, open(tmp, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["image", "label", "split"])
        for s in scenes:
            writer.writerow([s.image.name, s.classes.name, s.split])
    return scenes


def render_blocks(size: int) -> int:
    """Number of render blocks per scene (for progress bars)."""
    return len(list(blocks(size, size, RENDER_BLOCK)))
