"""Statistics of a run's data: band means and standard deviations of valid pixels, label pixels per class
and chip-sized cell, and median-frequency class weights."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
from rasterio.enums import Resampling
from rasterio.windows import Window

from geoseg.data.scenes import SceneInfo
from geoseg.errors import ConfigError, RasterError
from geoseg.io.atomic import atomic_output
from geoseg.io.classes import IGNORE_INDEX, ClassSchema, ignore_lut
from geoseg.io.fingerprint import cache_key, file_identity
from geoseg.io.labels import LabelReader, label_kind
from geoseg.io.raster import finite_pixels, open_raster, read_errors, to_physical


class BandMoments:
    """Running per-band sums of valid pixel values, for means and standard deviations."""

    def __init__(self, bands: int):
        self.sums = np.zeros(bands)
        self.squares = np.zeros(bands)
        self.count = 0

    def add(self, values: np.ndarray) -> None:
        """Add valid pixel values [bands, n]."""
        values = values.astype(np.float64)
        self.sums += values.sum(axis=1)
        self.squares += (values**2).sum(axis=1)
        self.count += values.shape[1]

    def mean_std(self) -> tuple[np.ndarray, np.ndarray] | None:
        """Per-band mean and standard deviation; None without any pixel."""
        if self.count == 0:
            return None
        mean = self.sums / self.count
        return mean, np.sqrt(np.maximum(self.squares / self.count - mean**2, 1e-12))


def band_statistics(scenes: Sequence[SceneInfo], bands: Sequence[int],
                    size: int = 512) -> tuple[list[float], list[float]]:
    """Per-band mean and standard deviation over valid pixels, from decimated reads of the scenes."""
    moments = BandMoments(len(bands))
    for values in _valid_pixels(scenes, bands, size):
        moments.add(values)
    stats = moments.mean_std()
    if stats is None:
        raise RasterError("the training scenes have no valid pixels to compute band statistics from")
    mean, std = stats
    return mean.tolist(), np.maximum(std, 1e-6).tolist()


def band_percentiles(scenes: Sequence[SceneInfo], bands: Sequence[int], low: float, high: float,
                     size: int = 512, per_scene: int = 100_000) -> tuple[list[float], list[float]]:
    """Per-band ``low`` and ``high`` percentiles of valid pixels (up to ``per_scene`` drawn from each scene's
    decimated read)."""
    rng = np.random.default_rng(0)
    samples = []
    for values in _valid_pixels(scenes, bands, size):
        if values.shape[1] > per_scene:
            values = values[:, rng.choice(values.shape[1], per_scene, replace=False)]
        samples.append(values)
    values = np.concatenate(samples, axis=1) if samples else np.zeros((len(bands), 0))
    if values.shape[1] == 0:
        raise RasterError("the training scenes have no valid pixels to compute band percentiles from")
    lo, hi = np.percentile(values, [low, high], axis=1)
    return lo.tolist(), np.maximum(hi, lo + 1e-6).tolist()


def _valid_pixels(scenes: Sequence[SceneInfo], bands: Sequence[int], size: int):
    """Each scene's valid pixel values [bands, n] (scale and offset applied) from a read decimated to about
    ``size`` pixels on its longer side."""
    for info in scenes:
        numbers = info.bands or list(bands)
        with open_raster(info.record.image) as src:
            f = max(1.0, max(src.width, src.height) / size)
            shape = (max(1, round(src.height / f)), max(1, round(src.width / f)))
            data = src.read(numbers, out_shape=(len(numbers), *shape), resampling=Resampling.nearest)
            data = to_physical(data, src, numbers)
            valid = src.dataset_mask(out_shape=shape, resampling=Resampling.nearest) > 0
            valid &= finite_pixels(data)
        yield data[:, valid]


def sample_band_statistics(src, bands: Sequence[int],
                           size: int = 256) -> tuple[np.ndarray, np.ndarray] | None:
    """Per-band mean and standard deviation of valid pixels in 9 small windows spread over an open scene
    (cheap on any size); None when they hold no valid pixel."""
    moments = BandMoments(len(bands))
    w, h = min(size, src.width), min(size, src.height)
    for fy in (0.2, 0.5, 0.8):
        for fx in (0.2, 0.5, 0.8):
            window = Window(int((src.width - w) * fx), int((src.height - h) * fy), w, h)
            with read_errors(src):
                data = src.read(list(bands), window=window, masked=True)
            values = to_physical(data.data, src, bands)
            valid = ~np.ma.getmaskarray(data).any(axis=0) & finite_pixels(values)
            moments.add(values[:, valid])
    return moments.mean_std()


def chip_cell(chip: int) -> int:
    """The side of the label-count cells for ``chip`` px chips: half a chip (so that a chip can be placed
    anywhere around a cell and still hold all of it), or the chip itself when its side is odd."""
    return chip // 2 if chip % 2 == 0 and chip >= 2 else chip


def class_cell_counts(scenes: Sequence[SceneInfo], schema: ClassSchema, cell: int,
                      ignored: Sequence[int] = (), cache_dir: Path | None = None,
                      label_field: str = "class_id") -> list[np.ndarray]:
    """Per scene, the label pixels of each class in each ``cell``-sized cell of the sampling grid: [rows,
    cols, K].

    Labels are read once, a strip of cells at a time; with ``cache_dir`` the
    result is cached under a key of the label files, cell, scale and classes.
    """
    labels = [file_identity(s.record.label) if s.record.label else None for s in scenes]
    key = cache_key([[label, list(s.scale)] for label, s in zip(labels, scenes)], cell, schema.codes,
                    sorted(ignored), label_field)
    cache = cache_dir / f"label-stats-{key}.npz" if cache_dir else None
    if cache is not None and cache.is_file():
        with np.load(cache) as z:
            return [z[f"s{i}"] for i in range(len(scenes))]
    k = len(schema)
    lut = ignore_lut(ignored)
    out = []
    for info in scenes:
        if info.record.label is None:
            raise ConfigError(f"scene {info.record.image} has no label in the manifest")
        labels = LabelReader(info.record.label, info.grid, schema, label_field, name=info.label_name)
        h, w = info.sampled_shape
        rows, cols = -(-h // cell), -(-w // cell)
        counts = np.zeros((rows, cols, k), np.int64)
        column = np.arange(cols * cell) // cell * k  # each pixel's cell, as an offset into the counts
        sx, sy = info.scale
        for r in range(rows):
            window = Window(0, r * cell * sy, cols * cell * sx, cell * sy)
            strip = lut[labels.read(window, (cell, cols * cell))]
            labelled = strip != IGNORE_INDEX
            bins = (column[None, :] + strip)[labelled]
            counts[r] = np.bincount(bins, minlength=cols * k)[:cols * k].reshape(cols, k)
        out.append(counts)
    if cache is not None:
        cache.parent.mkdir(parents=True, exist_ok=True)
        with atomic_output(cache) as tmp:
            with open(tmp, "wb") as fh:
                np.savez(fh, **{f"s{i}": c for i, c in enumerate(out)})
    return out


def polygon_counts(scenes: Sequence[SceneInfo], schema: ClassSchema,
                   label_field: str = "class_id") -> np.ndarray | None:
    """Polygons of each class that reach into the scenes (each counted once, however many scenes it
    reaches); None when no scene has polygon labels."""
    found: dict[tuple[str, int], int] = {}
    any_polygons = False
    for info in scenes:
        label = info.record.label
        if label is not None and label_kind(label) == "polygons":
            any_polygons = True
            reader = LabelReader(label, info.grid, schema, label_field, name=info.label_name)
            found.update({(str(label), row): c for row, c in reader.polygons_in_image().items()})
    if not any_polygons:
        return None
    return np.bincount(np.array(list(found.values()), np.int64), minlength=len(schema))[:len(schema)]


def median_frequency_weights(cell_counts: Sequence[np.ndarray], ignored: Sequence[int] = ()) -> np.ndarray:
    """Median-frequency balancing (Eigen & Fergus): weight_c = median(freq) / freq_c.

    ``freq_c`` = pixels of class c / pixels of the scenes in which c is present.
    Ignored classes and classes absent from the data get weight 0.
    """
    per_scene = np.stack([c.reshape(-1, c.shape[-1]).sum(axis=0) for c in cell_counts]).astype(np.float64)
    pixels = per_scene.sum(axis=0)
    present_totals = (per_scene.sum(axis=1, keepdims=True) * (per_scene > 0)).sum(axis=0)
    used = (pixels > 0) & ~np.isin(np.arange(len(pixels)), list(ignored))
    weights = np.zeros(len(pixels))
    if used.any():
        freq = pixels[used] / present_totals[used]
        weights[used] = np.median(freq) / freq
    return weights
