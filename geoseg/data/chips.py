"""The chip dataset: one chip of image and labels per :class:`ChipSpec`, read with windowed reads.

Data, sampling and training stay apart (as in TorchGeo): the dataset knows how to
read one chip; a sampler (:mod:`geoseg.data.samplers`) decides which chips; the
training loop knows neither. Rasters are opened lazily in each DataLoader worker.
"""

from __future__ import annotations

import math
import os
from typing import NamedTuple, Sequence

import numpy as np
import torch
from rasterio.enums import Resampling
from rasterio.windows import Window
from torch.utils.data import Dataset

from geoseg.data.appearance import NEUTRAL, Look, apply_look, rescaled
from geoseg.data.model_input import normalise
from geoseg.data.scenes import SceneInfo
from geoseg.errors import ConfigError
from geoseg.io.classes import IGNORE_INDEX, ClassSchema, ignore_lut
from geoseg.io.grid import GeoGrid
from geoseg.io.labels import LabelReader
from geoseg.io.raster import finite_pixels, open_raster, read_boundless, to_physical


class ChipSpec(NamedTuple):
    """Which chip to read: scene index, top-left in the scene's *sampling* grid, augmentation."""

    scene: int
    row: int
    col: int
    aug: int = 0
    gain: float = 1.0
    band_gains: tuple[float, ...] = ()  # a colour shift: one gain per band (empty: none)
    look: Look = NEUTRAL  # another scene's look (brightness, contrast, …, scale): scene augmentation


class ChipDataset(Dataset):
    """Chips of ``chip`` × ``chip`` sampled pixels with their labels, read with windowed reads."""

    def __init__(self, scenes: Sequence[SceneInfo], schema: ClassSchema, bands: Sequence[int], chip: int,
                 mean: Sequence[float], std: Sequence[float], ignored: Sequence[int] = (),
                 label_field: str = "class_id", clip: tuple[Sequence[float], Sequence[float]] | None = None):
        self.scenes = list(scenes)
        self.schema = schema
        self.bands = list(bands)
        self.chip = chip
        self.mean, self.std, self.clip = list(mean), list(std), clip  # applied by model_input.normalise
        self.ignore_lut = ignore_lut(ignored)
        self.label_field = label_field
        self._open: dict[int, tuple] = {}
        self._pid = None
        self.pseudo_labels: list[np.ndarray] | None = None  # self-training's, per scene

    def __len__(self) -> int:
        """The number of chip positions on a non-overlapping grid over the sampled scenes (indexing is by
        :class:`ChipSpec`, which the samplers draw)."""
        return sum(-(-h // self.chip) * -(-w // self.chip) for h, w in (s.sampled_shape for s in self.scenes))

    def _handles(self, i: int):
        if self._pid != os.getpid():  # lazily, once per worker process
            self._open, self._pid = {}, os.getpid()
        if i not in self._open:
            info = self.scenes[i]
            if info.record.label is None:
                raise ConfigError(f"scene {info.record.image} has no label in the manifest")
            self._open[i] = (open_raster(info.record.image),
                             LabelReader(info.record.label, info.grid, self.schema, self.label_field,
                                         name=info.label_name))
        return self._open[i]

    def read(self, spec: ChipSpec) -> tuple[np.ndarray, np.ndarray]:
        """Normalised image [bands, chip, chip] and label indices [chip, chip] for one spec, augmented."""
        image, _, label = self.read_chip(spec)
        return augment(image, spec.aug), augment(label, spec.aug)

    def read_chip(self, spec: ChipSpec) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Normalised image [bands, chip, chip], validity and label indices [chip, chip] for one spec, before
        the dihedral augmentation; unlabelled pixels take the scene's pseudo-labels where it has some."""
        info = self.scenes[spec.scene]
        sx, sy = info.scale
        zoom = spec.look.scale  # the chip's ground size in chips: > 1 sees the scene coarser
        if zoom != 1 and (sx, sy) == (1, 1):
            # read at the scene's pixels and rescaled here: GDAL's resampled read of a fractional window
            # costs several times the whole chip's read
            side = math.ceil(self.chip * zoom) + 1
            native = self._read_window(spec.scene, Window(spec.col, spec.row, side, side), (side, side))
            image, valid, label = rescaled(*native, self.chip, zoom)
        else:
            window = Window(spec.col * sx, spec.row * sy, self.chip * sx * zoom, self.chip * sy * zoom)
            image, valid, label = self._read_window(spec.scene, window, (self.chip, self.chip))
        if self.pseudo_labels and zoom == 1:
            label = self._with_pseudo_labels(label, spec)
        image = image * spec.gain
        if spec.band_gains:
            image = image * np.asarray(spec.band_gains, np.float32)[:, None, None]
        image = normalise(np.asarray(image, np.float32), valid, self.mean, self.std, self.clip)
        return apply_look(image, valid, spec.look), valid, label

    def set_pseudo_labels(self, labels: Sequence[np.ndarray] | None) -> None:
        """Class indices (``IGNORE_INDEX``: none) per scene at its sampling, read into the chips' unlabelled
        pixels from now on (:mod:`geoseg.training.self_training`); None: no more."""
        self.pseudo_labels = list(labels) if labels is not None else None

    def _with_pseudo_labels(self, label: np.ndarray, spec: ChipSpec) -> np.ndarray:
        """``label`` with its unlabelled pixels taken from the scene's pseudo-labels."""
        pseudo = self.pseudo_labels[spec.scene]
        window = np.full(label.shape, IGNORE_INDEX, np.uint8)
        part = pseudo[max(0, spec.row):spec.row + self.chip, max(0, spec.col):spec.col + self.chip]
        top, left = max(0, -spec.row), max(0, -spec.col)
        window[top:top + part.shape[0], left:left + part.shape[1]] = part
        return np.where(label == IGNORE_INDEX, window, label)

    def _read_window(self, scene: int, window: Window,
                     shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The scene's image (physical values), validity and label indices (ignore where not valid) in
        ``window``, read at ``shape``: bilinear for the image where that resamples, nearest otherwise."""
        src, labels = self._handles(scene)
        info = self.scenes[scene]
        resampling = Resampling.nearest if (window.height, window.width) == shape else Resampling.bilinear
        bands = info.bands or self.bands
        image = read_boundless(src, bands, window, (len(bands), *shape), 0, resampling)
        image = to_physical(image, src, bands)
        valid = _dataset_valid(src, window, shape) & finite_pixels(image)
        label = self.ignore_lut[labels.read(window, shape)]
        label[~valid] = IGNORE_INDEX
        return image, valid, label

    def __getitem__(self, spec: ChipSpec) -> dict[str, torch.Tensor]:
        image, label = self.read(spec)
        return {"image": torch.from_numpy(np.ascontiguousarray(image)),
                "mask": torch.from_numpy(np.ascontiguousarray(label)).long(), "scene": spec.scene}

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
    mask = read_boundless(src, None, window, shape, mask=True)
    return mask > 0


def augment(a: np.ndarray, code: int) -> np.ndarray:
    """One of the 8 dihedral transforms (rotations by 90° and a flip), safe for imagery."""
    if code == 0:
        return a
    a = np.rot90(a, k=code % 4, axes=(-2, -1))
    if code >= 4:
        a = a[..., ::-1]
    return a
