"""Manifests, chip datasets and samplers for training.

Data, sampling and training stay apart (as in TorchGeo): a
:class:`ChipDataset` knows how to read one chip given a :class:`ChipSpec`;
a sampler decides which chips; the training loop knows neither.
Rasters are opened lazily in each DataLoader worker.
"""

from __future__ import annotations

import warnings

import csv
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, NamedTuple, Sequence

import numpy as np
import torch
from rasterio.enums import Resampling
from rasterio.windows import Window
from torch.utils.data import Dataset, Sampler

from geoseg.classes import IGNORE_INDEX, ClassSchema
from geoseg.errors import GeoSegWarning, ConfigError, RasterError
from geoseg.grid import GeoGrid
from geoseg.labels import LabelReader
from geoseg.raster import check_bands, open_raster

SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class SceneRecord:
    """One manifest row: an image, its label file and its split."""

    image: Path
    label: Path | None
    split: str


def read_manifest(path: str | os.PathLike) -> list[SceneRecord]:
    """Read a CSV manifest with columns ``image``, ``label``, ``split`` (paths relative to it)."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"manifest {path} does not exist")
    with open(p, newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    if not rows or "image" not in rows[0] or "split" not in rows[0]:
        raise ConfigError(f"manifest {path} needs a header with columns image, label, split")
    records = []
    for n, row in enumerate(rows, start=2):
        split = (row.get("split") or "").strip()
        if split not in SPLITS:
            raise ConfigError(f"manifest {path} line {n}: split must be one of {', '.join(SPLITS)}, got {split!r}")
        label = (row.get("label") or "").strip()
        records.append(SceneRecord(p.parent / row["image"].strip(), p.parent / label if label else None, split))
    return records


class ChipSpec(NamedTuple):
    """Which chip to read: scene index, top-left in the scene's *sampling* grid, augmentation."""

    scene: int
    row: int
    col: int
    aug: int = 0
    gain: float = 1.0


@dataclass
class SceneInfo:
    record: SceneRecord
    grid: GeoGrid
    scale: float  # source pixels per sampled pixel (downsize_res / resolution)

    @property
    def sampled_shape(self) -> tuple[int, int]:
        return (max(1, round(self.grid.height / self.scale)), max(1, round(self.grid.width / self.scale)))


def scene_infos(records: Sequence[SceneRecord], bands: Sequence[int], downsize_res: int | None = None) -> list[SceneInfo]:
    """Open each scene once to check it and note its grid and sampling scale."""
    infos = []
    for rec in records:
        with open_raster(rec.image) as src:
            check_bands(src, rec.image, bands)
            grid = GeoGrid.from_dataset(src)
        if grid.crs is None:
            warnings.warn(f"{rec.image} has no CRS; it is used for training as it is (pixel grid only)",
                          GeoSegWarning)
        scale = max(grid.width, grid.height) / downsize_res if downsize_res else 1.0
        infos.append(SceneInfo(rec, grid, scale))
    return infos


class ChipDataset(Dataset):
    """Chips of ``chip`` × ``chip`` sampled pixels with their labels, read with windowed reads."""

    def __init__(self, scenes: Sequence[SceneInfo], schema: ClassSchema, bands: Sequence[int], chip: int,
                 mean: Sequence[float], std: Sequence[float], ignored: Sequence[int] = ()):
        self.scenes = list(scenes)
        self.schema = schema
        self.bands = list(bands)
        self.chip = chip
        self.mean = np.asarray(mean, np.float32)[:, None, None]
        self.std = np.asarray(std, np.float32)[:, None, None]
        self.ignore_lut = np.arange(256, dtype=np.uint8)
        self.ignore_lut[list(ignored)] = IGNORE_INDEX
        self._open: dict[int, tuple] = {}
        self._pid = None

    def __len__(self) -> int:  # sampled by specs, not by position
        return 0

    def _handles(self, i: int):
        if self._pid != os.getpid():  # lazily, once per worker process
            self._open, self._pid = {}, os.getpid()
        if i not in self._open:
            info = self.scenes[i]
            if info.record.label is None:
                raise ConfigError(f"scene {info.record.image} has no label in the manifest")
            self._open[i] = (open_raster(info.record.image), LabelReader(info.record.label, info.grid, self.schema))
        return self._open[i]

    def read(self, spec: ChipSpec) -> tuple[np.ndarray, np.ndarray]:
        """Normalised image [bands, chip, chip] and label indices [chip, chip] for one spec."""
        info = self.scenes[spec.scene]
        src, labels = self._handles(spec.scene)
        s = info.scale
        window = Window(spec.col * s, spec.row * s, self.chip * s, self.chip * s)
        shape = (self.chip, self.chip)
        resampling = Resampling.nearest if s == 1 else Resampling.bilinear
        image = src.read(self.bands, window=window, out_shape=(len(self.bands), *shape), boundless=True,
                         fill_value=0, resampling=resampling).astype(np.float32)
        valid = _dataset_valid(src, window, shape)
        label = self.ignore_lut[labels.read(window, shape)]
        label[~valid] = IGNORE_INDEX
        image = (image * spec.gain - self.mean) / self.std
        image[:, ~valid] = 0.0
        return augment(image, spec.aug), augment(label, spec.aug)

    def __getitem__(self, spec: ChipSpec) -> dict[str, torch.Tensor]:
        image, label = self.read(spec)
        return {"image": torch.from_numpy(np.ascontiguousarray(image)),
                "mask": torch.from_numpy(np.ascontiguousarray(label)).long()}

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_open"], state["_pid"] = {}, None
        return state


def _dataset_valid(src, window: Window, shape: tuple[int, int]) -> np.ndarray:
    """The dataset-wide validity mask (nodata, alpha, mask band) for a boundless window."""
    grid = GeoGrid.from_dataset(src)
    inner = grid.clip(Window(math.floor(window.col_off), math.floor(window.row_off),
                             math.ceil(window.width), math.ceil(window.height)))
    if inner.width == 0 or inner.height == 0:
        return np.zeros(shape, bool)
    mask = src.dataset_mask(window=window, out_shape=shape, boundless=True, resampling=Resampling.nearest)
    return mask > 0


def augment(a: np.ndarray, code: int) -> np.ndarray:
    """One of the 8 dihedral transforms (rotations by 90° and a flip), safe for imagery."""
    if code == 0:
        return a
    a = np.rot90(a, k=code % 4, axes=(-2, -1))
    if code >= 4:
        a = a[..., ::-1]
    return a


class RandomChipSampler(Sampler):
    """``n`` random chips per epoch, scenes drawn in proportion to their area; reproducible per (seed, epoch)."""

    def __init__(self, scenes: Sequence[SceneInfo], chip: int, n: int, seed: int = 0, augment: bool = True):
        self.shapes = [s.sampled_shape for s in scenes]
        self.chip, self.n, self.seed, self.augment = chip, n, seed, augment
        areas = np.array([h * w for h, w in self.shapes], float)
        self.p = areas / areas.sum()
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.n

    def __iter__(self) -> Iterator[ChipSpec]:
        rng = np.random.default_rng([self.seed, self.epoch])
        for _ in range(self.n):
            i = int(rng.choice(len(self.shapes), p=self.p))
            h, w = self.shapes[i]
            row = int(rng.integers(0, max(0, h - self.chip) + 1))
            col = int(rng.integers(0, max(0, w - self.chip) + 1))
            aug = int(rng.integers(0, 8)) if self.augment else 0
            gain = float(rng.uniform(0.92, 1.08)) if self.augment else 1.0
            yield ChipSpec(i, row, col, aug, gain)


class GridChipSampler(Sampler):
    """Non-overlapping chips covering every scene (edge chips run past the scene, padded as ignore)."""

    def __init__(self, scenes: Sequence[SceneInfo], chip: int, limit: int | None = None):
        specs = []
        for i, s in enumerate(scenes):
            h, w = s.sampled_shape
            for r in range(0, h, chip):
                for c in range(0, w, chip):
                    specs.append(ChipSpec(i, r, c))
        if limit is not None and limit < len(specs):
            keep = np.linspace(0, len(specs) - 1, limit).round().astype(int)
            specs = [specs[k] for k in keep]
        self.specs = specs

    def __len__(self) -> int:
        return len(self.specs)

    def __iter__(self) -> Iterator[ChipSpec]:
        return iter(self.specs)


def band_statistics(scenes: Sequence[SceneInfo], bands: Sequence[int], size: int = 512) -> tuple[list[float], list[float]]:
    """Per-band mean and standard deviation over valid pixels, from decimated reads of the scenes."""
    sums = np.zeros(len(bands))
    sq = np.zeros(len(bands))
    count = 0
    for info in scenes:
        with open_raster(info.record.image) as src:
            f = max(1.0, max(src.width, src.height) / size)
            shape = (max(1, round(src.height / f)), max(1, round(src.width / f)))
            data = src.read(list(bands), out_shape=(len(bands), *shape), resampling=Resampling.nearest).astype(np.float64)
            valid = src.dataset_mask(out_shape=shape, resampling=Resampling.nearest) > 0
        v = data[:, valid]
        sums += v.sum(axis=1)
        sq += (v**2).sum(axis=1)
        count += v.shape[1]
    if count == 0:
        raise RasterError("the training scenes have no valid pixels to compute band statistics from")
    mean = sums / count
    std = np.sqrt(np.maximum(sq / count - mean**2, 1e-12))
    return mean.tolist(), np.maximum(std, 1e-6).tolist()
