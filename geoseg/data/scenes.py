"""Preparing a run's scenes: each scene's grid and sampling scale (``downsize_res`` / ``resolution``), and
the copies at the model's sampling (or tiled, for formats that windowed reads decode from the top) that
training reads."""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from geoseg.data.model_input import sampled_copy, sampling_scale
from geoseg.errors import ConfigError, GeoSegWarning
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
    scale: tuple[float, float]  # scene pixels per sampled pixel along x and y (downsize_res / resolution)
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
        scale = sampling_scale(grid, downsize_res, resolution, str(rec.image))
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
    """Why a scene cannot be sampled at a ground resolution in metres: nothing places it on Earth."""
    return ConfigError(f"config key 'resolution' needs scenes placed on Earth, but {image} has no CRS and no "
                       f"ground control points; georeference it, or use downsize_res instead")


def tiled_copies(scenes: Sequence[SceneInfo], cache_dir: Path) -> list[SceneInfo]:
    """The scenes as the model reads them: scenes sampled at another scale than their own pixels, and
    scenes in formats without tiles (JPEG, PNG: every window decodes the image from its top), as tiled
    GeoTIFF copies at the model's sampling (:func:`geoseg.data.model_input.sampled_copy`, the copy
    prediction reads too), made once in ``cache_dir``; other scenes as they are. Every scene returned is
    read at its own pixels (scale 1)."""
    out = []
    for info in scenes:
        rec = info.record
        polygons = rec.label is not None and Path(rec.label).suffix.lower() in VECTOR_SUFFIXES
        label_reads_windows = rec.label is None or polygons or _is_gtiff(rec.label)
        if info.scale == (1.0, 1.0) and _is_gtiff(rec.image) and label_reads_windows:
            out.append(info)
            continue
        if rec.label is not None and not polygons:
            with open_raster(rec.label) as src:
                check_label_grid(rec.label, GeoGrid.from_dataset(src), info.grid)  # before the copies hide it
        sampled = info.sampled_grid
        image = sampled_copy(rec.image, sampled, cache_dir)
        label = rec.label
        if label is not None and not polygons:
            label = sampled_copy(label, sampled, cache_dir, labels=True)
        out.append(SceneInfo(SceneRecord(image, label, rec.split), sampled, (1.0, 1.0),
                             label_name=str(rec.label) if rec.label else None, bands=info.bands,
                             synthetic=info.synthetic))
    return out


def _is_gtiff(path: Path) -> bool:
    """GeoTIFFs (tiled or in strips) read windows without decoding the image from its top."""
    with open_raster(path) as src:
        return src.driver == "GTiff"
