"""Preparing a run's scenes: each scene's grid and sampling scale (``downsize_res`` / ``resolution``), and
tiled GeoTIFF copies of scenes that windowed reads would otherwise decode from the top."""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import rasterio
from rasterio.enums import MaskFlags, Resampling

from geoseg.data.model_input import sampling_scale
from geoseg.errors import ConfigError, GeoSegWarning
from geoseg.io.atomic import atomic_output
from geoseg.io.fingerprint import cache_key, file_identity
from geoseg.io.formats import VECTOR_SUFFIXES
from geoseg.io.grid import GeoGrid
from geoseg.io.labels import check_label_grid
from geoseg.io.manifest import SceneRecord
from geoseg.io.raster import open_raster, resolve_bands

#: The tag geoseg's synthetic sample scenes carry (written by :mod:`geoseg.data.sample_data`).
SYNTHETIC_TAG = "GEOSEG_SYNTHETIC"


@dataclass
class SceneInfo:
    """A scene of a run: its record, its grid and the scale it is sampled at."""

    record: SceneRecord
    grid: GeoGrid
    scale: float  # source pixels per sampled pixel (downsize_res / resolution)
    label_name: str | None = None  # the label file to name in messages (when reading a cached copy)
    bands: list[int] | None = None  # the run's bands as this scene numbers them (names resolved)
    synthetic: bool = False  # one of geoseg's synthetic sample scenes

    @property
    def sampled_grid(self) -> GeoGrid:
        """The scene's grid at its sampling resolution."""
        return self.grid.zoom(self.scale)

    @property
    def sampled_shape(self) -> tuple[int, int]:
        return self.sampled_grid.shape


def scene_infos(records: Sequence[SceneRecord], bands: Sequence[int | str], downsize_res: int | None = None,
                resolution: float | None = None) -> list[SceneInfo]:
    """Open each scene once to check it and note its grid, sampling scale and band numbers (``bands`` by
    number or by band description).

    ``downsize_res`` samples each scene as if resized to that many pixels on its
    longer side (the reference experiment's whole-image resize); ``resolution``
    samples every scene at that ground resolution in metres per pixel.
    """
    infos, no_crs = [], {}
    for rec in records:
        with open_raster(rec.image) as src:
            numbers = resolve_bands(src, rec.image, bands)
            grid = GeoGrid.from_dataset(src)
            synthetic = SYNTHETIC_TAG in src.tags() or _synthetic_label(rec.label)
        if grid.crs is None:
            no_crs[str(rec.image)] = None
        scale = sampling_scale(grid, downsize_res, resolution)
        if scale is None:
            raise _no_ground_size(rec.image, grid)
        infos.append(SceneInfo(rec, grid, scale, bands=numbers, synthetic=synthetic))
    no_crs = list(no_crs)
    if len(no_crs) == 1:
        warnings.warn(f"{no_crs[0]} has no CRS; it is used for training as it is (pixel grid only)",
                      GeoSegWarning)
    elif no_crs:
        warnings.warn(f"{len(no_crs)} scenes have no CRS (e.g. {no_crs[0]}); they are used for training as "
                      "they "
                      f"are (pixel grid only)", GeoSegWarning)
    return infos


def _synthetic_label(label: Path | None) -> bool:
    """Whether ``label`` is a class raster of geoseg's synthetic sample data (tagged by its generator; scenes
    made before the images were tagged too)."""
    if label is None or Path(label).suffix.lower() in VECTOR_SUFFIXES:
        return False
    with open_raster(label) as src:
        return src.tags().get("source", "").startswith("geoseg synthetic scene")


def _no_ground_size(image: Path, grid: GeoGrid) -> ConfigError:
    """Why a scene cannot be sampled at a ground resolution in metres."""
    if grid.crs is None:
        return ConfigError(f"config key 'resolution' needs georeferenced scenes, but {image} has no CRS; "
                           f"use downsize_res instead")
    return ConfigError(f"config key 'resolution' is in metres, but {image} is in the geographic CRS "
                       f"{grid.crs}; "
                       f"reproject it to a projected CRS (e.g. its UTM zone) or use downsize_res")


def tiled_copies(scenes: Sequence[SceneInfo], cache_dir: Path) -> list[SceneInfo]:
    """Scenes in formats without tiles (JPEG, PNG: every window decodes the image from its top), and scenes
    sampled at a ground resolution 2× coarser or more (every chip decodes a large area), converted once to
    tiled GeoTIFFs at their sampling resolution, cached in ``cache_dir``; other scenes are returned as they
    are.

    Measured in ``tests/benchmarks/bench_loader.py``: windowed reads from the
    copies are several times faster than from the JPEG/PNG files themselves.
    """
    out = []
    for info in scenes:
        rec = info.record
        polygons = rec.label is not None and Path(rec.label).suffix.lower() in VECTOR_SUFFIXES
        label_reads_windows = rec.label is None or polygons or _is_gtiff(rec.label)
        if info.scale < 2 and _is_gtiff(rec.image) and label_reads_windows:
            out.append(info)
            continue
        if rec.label is not None and not polygons:
            with open_raster(rec.label) as src:
                check_label_grid(rec.label, GeoGrid.from_dataset(src), info.grid)  # before the copies hide it
        sampled = info.sampled_grid
        image = _tiled_copy(rec.image, cache_dir, sampled, Resampling.bilinear if info.scale != 1
                            else Resampling.nearest)
        label = rec.label
        if label is not None and not polygons:
            label = _tiled_copy(label, cache_dir, sampled, Resampling.nearest)
        out.append(SceneInfo(SceneRecord(image, label, rec.split), sampled, 1.0,
                             label_name=str(rec.label) if rec.label else None, bands=info.bands,
                             synthetic=info.synthetic))
    return out


def _is_gtiff(path: Path) -> bool:
    """GeoTIFFs (tiled or in strips) read windows without decoding the image from its top."""
    with open_raster(path) as src:
        return src.driver == "GTiff"


def _tiled_copy(path: Path, cache_dir: Path, grid: GeoGrid, resampling: Resampling) -> Path:
    """``path`` resampled onto ``grid`` as a tiled GeoTIFF in ``cache_dir`` (made once)."""
    shape, transform = grid.shape, grid.transform
    target = cache_dir / f"{Path(path).stem}-{cache_key(file_identity(path), shape)}.tif"
    if target.exists():
        return target
    cache_dir.mkdir(parents=True, exist_ok=True)
    with open_raster(path) as src, warnings.catch_warnings():
        warnings.simplefilter("ignore", rasterio.errors.NotGeoreferencedWarning)
        data = src.read(out_shape=(src.count, *shape), resampling=resampling)
        masked = src.nodata is None and any(MaskFlags.all_valid not in f for f in src.mask_flag_enums)
        mask = src.dataset_mask(out_shape=shape, resampling=Resampling.nearest) if masked else None
        profile = {"driver": "GTiff", "width": shape[1], "height": shape[0], "count": src.count,
                   "dtype": data.dtype.name, "crs": src.crs, "transform": transform, "nodata": src.nodata,
                   "tiled": True, "blockxsize": 256, "blockysize": 256, "compress": "deflate", "predictor": 2}
        with atomic_output(target) as tmp, rasterio.Env(GDAL_TIFF_INTERNAL_MASK=True), \
                rasterio.open(tmp, "w", **profile) as dst:
            dst.write(data)
            dst.scales, dst.offsets, dst.descriptions = src.scales, src.offsets, src.descriptions
            if mask is not None:  # an alpha band or internal mask stays a mask: nodata stays nodata
                dst.write_mask(mask)
    return target
