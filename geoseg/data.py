"""Manifests, chip datasets and samplers for training.

Data, sampling and training stay apart (as in TorchGeo): a
:class:`ChipDataset` knows how to read one chip given a :class:`ChipSpec`;
a sampler decides which chips; the training loop knows neither.
Rasters are opened lazily in each DataLoader worker.
"""

from __future__ import annotations

import csv
import math
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, NamedTuple, Sequence

import numpy as np
import torch
import rasterio
from affine import Affine
from rasterio.enums import MaskFlags, Resampling
from rasterio.windows import Window
from torch.utils.data import Dataset, Sampler

from geoseg.classes import IGNORE_INDEX, ClassSchema
from geoseg.errors import ConfigError, GeoSegWarning, RasterError
from geoseg.grid import GeoGrid
from geoseg.labels import VECTOR_SUFFIXES, LabelReader, check_label_grid
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
    label_name: str | None = None  # the label file to name in messages (when reading a cached copy)

    @property
    def sampled_shape(self) -> tuple[int, int]:
        return (max(1, round(self.grid.height / self.scale)), max(1, round(self.grid.width / self.scale)))


def scene_infos(records: Sequence[SceneRecord], bands: Sequence[int], downsize_res: int | None = None,
                resolution: float | None = None) -> list[SceneInfo]:
    """Open each scene once to check it and note its grid and sampling scale.

    ``downsize_res`` samples each scene as if resized to that many pixels on its
    longer side (the reference experiment's whole-image resize); ``resolution``
    samples every scene at that ground resolution in metres per pixel.
    """
    from geoseg.grid import metres_per_unit

    infos, no_crs = [], {}
    for rec in records:
        with open_raster(rec.image) as src:
            check_bands(src, rec.image, bands)
            grid = GeoGrid.from_dataset(src)
        if grid.crs is None:
            no_crs[str(rec.image)] = None
        if downsize_res:
            scale = max(grid.width, grid.height) / downsize_res
        elif resolution:
            if grid.crs is None:
                raise ConfigError(f"config key 'resolution' needs georeferenced scenes, but {rec.image} has no CRS; "
                                  f"use downsize_res instead")
            scale = resolution / (math.hypot(grid.transform.a, grid.transform.d) * metres_per_unit(grid.crs))
        else:
            scale = 1.0
        infos.append(SceneInfo(rec, grid, scale))
    no_crs = list(no_crs)
    if len(no_crs) == 1:
        warnings.warn(f"{no_crs[0]} has no CRS; it is used for training as it is (pixel grid only)", GeoSegWarning)
    elif no_crs:
        warnings.warn(f"{len(no_crs)} scenes have no CRS (e.g. {no_crs[0]}); they are used for training as they "
                      f"are (pixel grid only)", GeoSegWarning)
    return infos


def tiled_copies(scenes: Sequence[SceneInfo], cache_dir: Path) -> list[SceneInfo]:
    """Scenes in formats without tiles (JPEG, PNG: every window decodes the image from its top), and scenes
    sampled at a ground resolution 2× coarser or more (every chip decodes a large area), converted once to
    tiled GeoTIFFs at their sampling resolution, cached in ``cache_dir``; other scenes are returned as they are.

    Measured in ``tests/benchmarks/bench_loader.py``: windowed reads from the
    copies are several times faster than from the JPEG/PNG files themselves.
    """
    out = []
    for info in scenes:
        rec = info.record
        polygons = rec.label is not None and Path(rec.label).suffix.lower() in VECTOR_SUFFIXES
        if info.scale < 2 and _is_gtiff(rec.image) and (rec.label is None or polygons or _is_gtiff(rec.label)):
            out.append(info)
            continue
        if rec.label is not None and not polygons:
            with open_raster(rec.label) as src:
                check_label_grid(rec.label, GeoGrid.from_dataset(src), info.grid)  # before the copies hide it
        h, w = info.sampled_shape
        transform = info.grid.transform @ Affine.scale(info.grid.width / w, info.grid.height / h)
        image = _tiled_copy(rec.image, cache_dir, (h, w), transform, Resampling.bilinear if info.scale != 1
                            else Resampling.nearest)
        label = rec.label
        if label is not None and not polygons:
            label = _tiled_copy(label, cache_dir, (h, w), transform, Resampling.nearest)
        out.append(SceneInfo(SceneRecord(image, label, rec.split), GeoGrid(w, h, transform, info.grid.crs), 1.0,
                             label_name=str(rec.label) if rec.label else None))
    return out


def _is_gtiff(path: Path) -> bool:
    """GeoTIFFs (tiled or in strips) read windows without decoding the image from its top."""
    with open_raster(path) as src:
        return src.driver == "GTiff"


def _tiled_copy(path: Path, cache_dir: Path, shape: tuple[int, int], transform, resampling) -> Path:
    import hashlib

    from geoseg.atomic import atomic_output

    st = Path(path).stat()
    key = hashlib.sha1(f"{Path(path).resolve()}|{st.st_size}|{st.st_mtime_ns}|{shape}".encode()).hexdigest()[:16]
    target = cache_dir / f"{Path(path).stem}-{key}.tif"
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
            if mask is not None:  # an alpha band or internal mask stays a mask: nodata stays nodata
                dst.write_mask(mask)
    return target


def read_deepglobe(folder: str | os.PathLike, fractions: Sequence[float] = (0.8, 0.1, 0.1),
                   seed: int = 0) -> list[SceneRecord]:
    """Scenes of a DeepGlobe Land Cover folder (``<id>_sat.jpg`` + ``<id>_mask.png``), split by scene.

    ``metadata.csv`` (columns ``image_id, sat_image_path, mask_path``) is used
    when present; images without a mask (DeepGlobe's own valid/test sets) are
    left out. The split into train/val/test by ``fractions`` is a seeded
    shuffle of the sorted image ids, so it is the same on every machine.
    """
    root = Path(folder)
    pairs: dict[str, tuple[Path, Path]] = {}
    meta = root / "metadata.csv"
    if meta.is_file():
        with open(meta, newline="", encoding="utf-8") as fh:
            for row in csv.DictReader(fh):
                sat, mask = (row.get("sat_image_path") or "").strip(), (row.get("mask_path") or "").strip()
                if sat and mask and (root / mask).is_file():
                    pairs[str(row.get("image_id") or Path(sat).stem)] = (root / sat, root / mask)
    else:
        for sat in sorted(root.rglob("*_sat.jpg")):
            mask = sat.with_name(sat.name[: -len("_sat.jpg")] + "_mask.png")
            if mask.is_file():
                pairs[sat.name[: -len("_sat.jpg")]] = (sat, mask)
    if not pairs:
        raise ConfigError(f"{folder} holds no DeepGlobe pairs <id>_sat.jpg + <id>_mask.png")
    ids = sorted(pairs)
    order = np.random.default_rng(seed).permutation(len(ids))
    f = np.asarray(fractions, float) / float(sum(fractions))
    n_train = int(round(f[0] * len(ids)))
    n_val = int(round(f[1] * len(ids)))
    if len(ids) >= 2 and f[1] > 0 and n_val == 0:  # a validation scene whenever one is asked for
        n_val, n_train = 1, min(n_train, len(ids) - 1)
    splits = ["train"] * n_train + ["val"] * n_val + ["test"] * (len(ids) - n_train - n_val)
    return [SceneRecord(*pairs[ids[k]], split) for k, split in zip(order, splits)]


def read_records(path: str | os.PathLike, fractions: Sequence[float] = (0.8, 0.1, 0.1),
                 seed: int = 0) -> list[SceneRecord]:
    """Scenes from a CSV manifest or a DeepGlobe-layout folder."""
    return read_deepglobe(path, fractions, seed) if Path(path).is_dir() else read_manifest(path)


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
            self._open[i] = (open_raster(info.record.image),
                             LabelReader(info.record.label, info.grid, self.schema, name=info.label_name))
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
    """``n`` random chips per epoch, scenes drawn in proportion to their area; reproducible per (seed, epoch).

    With ``rare`` > 0 and per-cell class counts, that share of the chips is
    centred on cells drawn in proportion to their pixels of rare classes (those
    with a ``class_weights`` entry above 1, e.g. median-frequency weights: rarer
    than the median class), each weighted by its class weight.
    """

    def __init__(self, scenes: Sequence[SceneInfo], chip: int, n: int, seed: int = 0, augment: bool = True,
                 rare: float = 0.0, cell_counts: Sequence[np.ndarray] | None = None,
                 class_weights: np.ndarray | None = None, rank: int = 0, world: int = 1):
        self.rank, self.world = rank, world
        self.shapes = [s.sampled_shape for s in scenes]
        self.chip, self.n, self.seed, self.augment = chip, n, seed, augment
        areas = np.array([h * w for h, w in self.shapes], float)
        self.p = areas / areas.sum()
        self.epoch = 0
        self.rare = rare if cell_counts is not None and class_weights is not None else 0.0
        if self.rare:
            w = np.asarray(class_weights, np.float64)
            rarity = np.where(w > 1, w, 0.0)  # classes rarer than the median class
            scores = [c.astype(np.float64) @ rarity for c in cell_counts]
            self.cells = np.concatenate([np.argwhere(np.ones_like(sc, bool)) for sc in scores])
            self.cell_scene = np.concatenate([np.full(sc.size, i) for i, sc in enumerate(scores)])
            flat = np.concatenate([sc.ravel() for sc in scores])
            self.cell_p = flat / flat.sum() if flat.sum() > 0 else None
            if self.cell_p is None:
                self.rare = 0.0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return -(-self.n // self.world)

    def __iter__(self) -> Iterator[ChipSpec]:
        """This rank's share of the epoch's chips (all of them in a single process)."""
        from geoseg.distributed import shard
        return iter(shard(list(self.epoch_chips()), self.rank, self.world, pad=True))

    def epoch_chips(self) -> Iterator[ChipSpec]:
        """All ranks' chips of the current epoch, in order."""
        rng = np.random.default_rng([self.seed, self.epoch])
        for _ in range(self.n):
            if self.rare and rng.random() < self.rare:
                i, row, col = self._rare_chip(rng)
            else:
                i = int(rng.choice(len(self.shapes), p=self.p))
                h, w = self.shapes[i]
                row = int(rng.integers(0, max(0, h - self.chip) + 1))
                col = int(rng.integers(0, max(0, w - self.chip) + 1))
            aug = int(rng.integers(0, 8)) if self.augment else 0
            gain = float(rng.uniform(0.92, 1.08)) if self.augment else 1.0
            yield ChipSpec(i, row, col, aug, gain)

    def _rare_chip(self, rng: np.random.Generator) -> tuple[int, int, int]:
        k = int(rng.choice(len(self.cell_p), p=self.cell_p))
        i = int(self.cell_scene[k])
        h, w = self.shapes[i]
        r, c = self.cells[k]
        half = self.chip // 2
        row = int(np.clip(r * self.chip + rng.integers(-half, half + 1), 0, max(0, h - self.chip)))
        col = int(np.clip(c * self.chip + rng.integers(-half, half + 1), 0, max(0, w - self.chip)))
        return i, row, col


def class_cell_counts(scenes: Sequence[SceneInfo], schema: ClassSchema, chip: int,
                      ignored: Sequence[int] = (), cache_dir: Path | None = None) -> list[np.ndarray]:
    """Per scene, the label pixels of each class in each chip-sized cell of the sampling grid: [rows, cols, K].

    Labels are read once, a strip of cells at a time; with ``cache_dir`` the
    result is cached under a key of the label files, chip, scale and classes.
    """
    import hashlib
    import json

    key = json.dumps([[str(s.record.label), *_stat(s.record.label), s.scale] for s in scenes]
                     + [chip, schema.codes, sorted(ignored)])
    cache = cache_dir / f"label-stats-{hashlib.sha1(key.encode()).hexdigest()[:16]}.npz" if cache_dir else None
    if cache is not None and cache.is_file():
        with np.load(cache) as z:
            return [z[f"s{i}"] for i in range(len(scenes))]
    k = len(schema)
    lut = np.arange(256, dtype=np.uint8)
    lut[list(ignored)] = IGNORE_INDEX
    out = []
    for info in scenes:
        if info.record.label is None:
            raise ConfigError(f"scene {info.record.image} has no label in the manifest")
        labels = LabelReader(info.record.label, info.grid, schema, name=info.label_name)
        h, w = info.sampled_shape
        rows, cols = -(-h // chip), -(-w // chip)
        counts = np.zeros((rows, cols, k), np.int64)
        for r in range(rows):
            window = Window(0, r * chip * info.scale, cols * chip * info.scale, chip * info.scale)
            strip = lut[labels.read(window, (chip, cols * chip))]
            for c in range(cols):
                cell = strip[:, c * chip:(c + 1) * chip]
                counts[r, c] = np.bincount(cell[cell != IGNORE_INDEX].ravel(), minlength=k)[:k]
        out.append(counts)
    if cache is not None:
        from geoseg.atomic import atomic_output
        cache.parent.mkdir(parents=True, exist_ok=True)
        with atomic_output(cache) as tmp:
            with open(tmp, "wb") as fh:
                np.savez(fh, **{f"s{i}": c for i, c in enumerate(out)})
    return out


def _stat(path: Path | None) -> list:
    if path is None or not Path(path).exists():
        return [None, None]
    st = Path(path).stat()
    return [st.st_size, st.st_mtime_ns]


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


class GridChipSampler(Sampler):
    """Non-overlapping chips covering every scene (edge chips run past the scene, padded as ignore)."""

    def __init__(self, scenes: Sequence[SceneInfo], chip: int, limit: int | None = None, rank: int = 0,
                 world: int = 1):
        from geoseg.distributed import shard
        specs = []
        for i, s in enumerate(scenes):
            h, w = s.sampled_shape
            for r in range(0, h, chip):
                for c in range(0, w, chip):
                    specs.append(ChipSpec(i, r, c))
        if limit is not None and limit < len(specs):
            keep = np.linspace(0, len(specs) - 1, limit).round().astype(int)
            specs = [specs[k] for k in keep]
        self.all_specs = specs
        self.specs = shard(specs, rank, world, pad=False)  # this rank's share

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
