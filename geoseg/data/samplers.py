"""Which chips to read: random chips for training (optionally centred on rare classes), a fixed grid for
validation. Both deal their chips out by rank under DDP."""

from __future__ import annotations

from typing import Iterator, Sequence, TypeVar

import numpy as np
from torch.utils.data import Sampler

from geoseg.data.appearance import NEUTRAL, Look, draw_look
from geoseg.data.chips import ChipSpec
from geoseg.data.scenes import SceneInfo

T = TypeVar("T")


class RandomChipSampler(Sampler):
    """``n`` random chips per epoch, scenes drawn in proportion to their area; reproducible per (seed, epoch).

    ``cell_counts`` are per-scene label pixels of each class per ``cell``-sized
    cell ([rows, cols, K], :func:`~geoseg.data.statistics.class_cell_counts`). Where
    labels cover only part of the scenes (some cells hold none), chips are
    drawn where labels are: a labelled cell in proportion to its labelled
    pixels, and the chip placed at random around it so that it holds the whole
    cell; ``unlabelled`` is the share of chips drawn anywhere instead (context
    without labels). With ``rare`` > 0 that share of the chips is placed around
    cells drawn in proportion to their pixels of rare classes (those with a
    ``class_weights`` entry above 1, e.g. median-frequency weights: rarer than
    the median class), each weighted by its class weight. With ``band_jitter``
    > 0 each chip's ``bands`` are scaled by gains drawn from 1 ± ``band_jitter``
    apiece: the colour shift between sensors, seasons and scenes. With ``scene_jitter`` > 0 each chip gets
    another scene's look of that strength (:func:`~geoseg.data.appearance.draw_look`: brightness, contrast,
    saturation, sharpness, noise, scale). Gains and looks have random streams of their own: turning them on
    or off moves no chip.
    """

    def __init__(self, scenes: Sequence[SceneInfo], chip: int, n: int, seed: int = 0, augment: bool = True,
                 rare: float = 0.0, cell_counts: Sequence[np.ndarray] | None = None,
                 class_weights: np.ndarray | None = None, rank: int = 0, world: int = 1,
                 cell: int | None = None, unlabelled: float = 0.0, band_jitter: float = 0.0,
                 bands: int = 0, scene_jitter: float = 0.0):
        self.rank, self.world = rank, world
        self.band_jitter, self.bands = (band_jitter, bands) if augment else (0.0, 0)
        self.scene_jitter = scene_jitter if augment else 0.0
        self.shapes = [s.sampled_shape for s in scenes]
        self.chip, self.n, self.seed, self.augment = chip, n, seed, augment
        self.cell = cell or chip
        areas = np.array([h * w for h, w in self.shapes], float)
        self.p = areas / areas.sum()
        self.epoch = 0
        self.rare = rare if cell_counts is not None and class_weights is not None else 0.0
        self.labelled = None
        self.unlabelled = unlabelled
        if cell_counts is not None:
            self.draw_where([c.sum(axis=-1) for c in cell_counts])
        if self.rare:
            w = np.asarray(class_weights, np.float64)
            rarity = np.where(w > 1, w, 0.0)  # classes rarer than the median class
            rare_cells = _CellDraw([c.astype(np.float64) @ rarity for c in cell_counts])
            self.rare_cells = rare_cells if rare_cells.p is not None else None
            if self.rare_cells is None:
                self.rare = 0.0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def draw_where(self, labelled: Sequence[np.ndarray]) -> None:
        """Draw chips around cells in proportion to their labelled pixels (``labelled``: [rows, cols] per
        scene, e.g. once self-training has added pseudo-labels); anywhere where every cell holds some."""
        labelled = [np.asarray(c, np.float64) for c in labelled]
        self.labelled = _CellDraw(labelled) if any((c == 0).any() for c in labelled) else None

    def __len__(self) -> int:
        return -(-self.n // self.world)

    def __iter__(self) -> Iterator[ChipSpec]:
        """This rank's share of the epoch's chips (all of them in a single process)."""
        return iter(shard(list(self.epoch_chips()), self.rank, self.world, pad=True))

    def epoch_chips(self) -> Iterator[ChipSpec]:
        """All ranks' chips of the current epoch, in order."""
        rng = np.random.default_rng([self.seed, self.epoch])
        colour = np.random.default_rng([self.seed, self.epoch, 1])  # own stream: jitter moves no chip
        looks = np.random.default_rng([self.seed, self.epoch, 2])   # and one for the scenes' looks
        for _ in range(self.n):
            if self.rare and rng.random() < self.rare:
                i, row, col = self._around(self.rare_cells, rng)
            elif self.labelled is not None and not (self.unlabelled and rng.random() < self.unlabelled):
                i, row, col = self._around(self.labelled, rng)
            else:
                i = int(rng.choice(len(self.shapes), p=self.p))
                h, w = self.shapes[i]
                row = int(rng.integers(0, max(0, h - self.chip) + 1))
                col = int(rng.integers(0, max(0, w - self.chip) + 1))
            aug = int(rng.integers(0, 8)) if self.augment else 0
            gain = float(rng.uniform(0.92, 1.08)) if self.augment else 1.0
            yield ChipSpec(i, row, col, aug, gain, self._band_gains(colour), self._look(looks))

    def _band_gains(self, rng: np.random.Generator) -> tuple[float, ...]:
        """One gain per band from 1 ± ``band_jitter`` (none without jitter)."""
        if not self.band_jitter:
            return ()
        return tuple(float(g) for g in rng.uniform(1 - self.band_jitter, 1 + self.band_jitter, self.bands))

    def _look(self, rng: np.random.Generator) -> Look:
        """Another scene's look of strength ``scene_jitter`` (neutral without)."""
        return draw_look(rng, self.scene_jitter) if self.scene_jitter else NEUTRAL

    def _around(self, cells: "_CellDraw", rng: np.random.Generator) -> tuple[int, int, int]:
        """A chip holding a cell drawn from ``cells``, at a random place around it (inside the scene)."""
        i, r, c = cells.draw(rng)
        h, w = self.shapes[i]
        slack = self.chip - self.cell
        row = int(np.clip(r * self.cell - rng.integers(0, slack + 1), 0, max(0, h - self.chip)))
        col = int(np.clip(c * self.cell - rng.integers(0, slack + 1), 0, max(0, w - self.chip)))
        return i, row, col


class _CellDraw:
    """Cells of several scenes drawn in proportion to a score per cell ([rows, cols] per scene)."""

    def __init__(self, scores: Sequence[np.ndarray]):
        self.cells = np.concatenate([np.argwhere(np.ones_like(sc, bool)) for sc in scores])
        self.scene = np.concatenate([np.full(sc.size, i) for i, sc in enumerate(scores)])
        flat = np.concatenate([sc.ravel() for sc in scores])
        self.p = flat / flat.sum() if flat.sum() > 0 else None

    def draw(self, rng: np.random.Generator) -> tuple[int, int, int]:
        k = int(rng.choice(len(self.p), p=self.p))
        r, c = self.cells[k]
        return int(self.scene[k]), int(r), int(c)


class GridChipSampler(Sampler):
    """Non-overlapping chips covering every scene (edge chips run past the scene, padded as ignore); with
    per-cell label counts (``cell``-sized cells, [rows, cols, K] per scene), only chips that hold labels."""

    def __init__(self, scenes: Sequence[SceneInfo], chip: int, limit: int | None = None, rank: int = 0,
                 world: int = 1, cell_counts: Sequence[np.ndarray] | None = None, cell: int | None = None):
        specs = []
        for i, s in enumerate(scenes):
            h, w = s.sampled_shape
            for r in range(0, h, chip):
                for c in range(0, w, chip):
                    if cell_counts is None or _holds_labels(cell_counts[i], cell or chip, r, c, chip):
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


def _holds_labels(counts: np.ndarray, cell: int, row: int, col: int, chip: int) -> bool:
    """Whether the chip at (row, col) covers a cell with label pixels (cells are ``cell`` px, aligned to the
    same origin)."""
    rows = slice(row // cell, -(-(row + chip) // cell))
    cols = slice(col // cell, -(-(col + chip) // cell))
    return bool(counts[rows, cols].sum() > 0)


def shard(items: Sequence[T], rank: int, world: int, pad: bool) -> list[T]:
    """Every ``world``-th item from ``rank``; with ``pad`` all ranks get the same count (wrapping around)."""
    if world <= 1:
        return list(items)
    if pad and items:
        per_rank = -(-len(items) // world)
        items = list(items) + list(items[: per_rank * world - len(items)])
    return list(items[rank::world])
