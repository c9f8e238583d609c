"""``--engine auto`` on a CPU: the engines measured once per model, CPU and tile, and for each scene the
fastest that keeps fp32's classes taken.

Which engine is fastest depends on the CPU, on the tile and on the scene (torch bf16 gains most on large tiles
but takes seconds longer to start than ONNX Runtime, which pays only on large scenes; the measurements are in
docs/benchmarks.md). So ``auto`` measures, on the model's own check chips and on tiles of the size prediction
uses: ONNX Runtime fp32 (the reference: fp32's classes, and no torch needed to start), torch bf16 where the
CPU computes in bf16, and adaptive precision (:mod:`geoseg.models.adaptive`): each engine's time a megapixel
(tiles one by one, as prediction on a CPU runs them, in interleaved rounds, the median), its start (a fresh
process until its first tile is predicted) and its share of the check pixels with fp32's class. For each
scene the time of each engine is its start plus its time a megapixel times the megapixels the scene's tiles
hold; an engine other than ONNX Runtime fp32 is taken only where its classes agree with fp32's on at least
:data:`AGREEMENT` of the check pixels and it is at least :data:`FASTER` times as fast on the scene. The
measurement is kept with the cached engines as a small JSON document, read back field by field; where it
cannot be read it is measured again.
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
import os
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from geoseg.io.atomic import atomic_write_text
from geoseg.models.hardware import cpu_name, vector_isa

#: The share of check pixels whose class an engine must give as fp32 does to be ``auto``'s choice.
AGREEMENT = 0.999
#: How many times as fast (a chip) as ONNX Runtime fp32 another engine must be to be taken.
FASTER = 1.1
#: Pixels timed in each round (in training chips: at least 2 tiles), and rounds.
TIMED_CHIPS = 8
ROUNDS = 3

FORMAT = "geoseg-engine-choice"
#: 3: torch's start measured again since torch's U-Nets on ResNets predict without importing smp (a version 2
#: file holds the slower start of before).
VERSION = 3
#: The engines ``auto`` measures, in the order preferred on a tie, and the names their outputs carry.
NAMES = {"onnx": "onnx-fp32", "torch": "torch-bf16", "adaptive": "onnx-int8+fp32"}

Forward = Callable[[np.ndarray], np.ndarray]


@dataclass(frozen=True)
class Measured:
    """What ``auto`` measured at tiles of ``tile`` px: each engine's time a megapixel (ms), its start (s)
    and its share of check pixels with fp32's class."""

    tile: int
    ms_per_mpx: dict[str, float]
    start_s: dict[str, float]
    agreement: dict[str, float]

    def seconds(self, kind: str, megapixels: float) -> float:
        """The time ``kind`` is expected to take for a scene whose tiles hold ``megapixels``."""
        return self.start_s[kind] + self.ms_per_mpx[kind] * megapixels / 1000

    def choose(self, megapixels: float) -> str:
        """The engine taken for a scene whose tiles hold ``megapixels``: ONNX Runtime fp32, unless another
        keeps fp32's classes and is :data:`FASTER` times as fast on it."""
        kind = "onnx"
        for other in self.ms_per_mpx:
            if (self.agreement[other] >= AGREEMENT
                    and self.seconds(other, megapixels) * FASTER <= self.seconds(kind, megapixels)):
                kind = other
        return kind

    def reason(self, kind: str, megapixels: float) -> str:
        """Why ``kind`` for a scene of ``megapixels``, for the prediction's summary line."""
        def figures(k: str) -> str:
            return f"{self.seconds(k, megapixels):.1f} s ({self.start_s[k]:.1f} s start + " \
                   f"{self.ms_per_mpx[k]:.0f} ms/Mpx)"

        others = ", ".join(f"{NAMES[k]} {figures(k)}" + ("" if self.agreement[k] >= AGREEMENT else
                                                           f" ({self.agreement[k]:.3%} of fp32's classes)")
                           for k in self.ms_per_mpx if k != kind)
        return (f"measured on this CPU for {megapixels:.1f} Mpx of {self.tile} px tiles, {figures(kind)} "
                f"against {others} (onnx-fp32 unless another is {FASTER}× as fast)")


def timed_tiles(chip: int, tile: int) -> int:
    """Tiles of ``tile`` px timed in each round: :data:`TIMED_CHIPS` training chips' pixels, at least 2."""
    return max(2, round(TIMED_CHIPS * chip * chip / (tile * tile)))


def measure(forwards: dict[str, Forward], check: np.ndarray, timed: np.ndarray,
            start_s: dict[str, float]) -> Measured:
    """The engines of ``forwards`` (kind → probabilities of normalised tiles; ``onnx`` is the fp32
    reference) measured: their classes on the ``check`` chips against the reference's, their time on the
    ``timed`` tiles, with their starts ``start_s`` (seconds)."""
    reference = _classes(forwards["onnx"], check)
    agreement = {kind: 1.0 if kind == "onnx" else float(np.mean(_classes(forward, check) == reference))
                 for kind, forward in forwards.items()}
    megapixels = timed.shape[-1] * timed.shape[-2] / 1e6
    ms = {kind: value / megapixels for kind, value in _ms_per_tile(forwards, timed).items()}
    return Measured(int(timed.shape[-1]), ms, {kind: start_s[kind] for kind in forwards}, agreement)


def _classes(forward: Forward, chips: np.ndarray) -> np.ndarray:
    return np.stack([forward(chips[i:i + 1])[0].argmax(axis=0) for i in range(len(chips))])


def _ms_per_tile(forwards: dict[str, Forward], tiles: np.ndarray) -> dict[str, float]:
    """The median over :data:`ROUNDS` interleaved rounds of each engine's time a tile (ms), after a warm-up
    tile (an engine's first run prepares its kernels)."""
    for forward in forwards.values():
        forward(tiles[:1])
    rounds: dict[str, list[float]] = {kind: [] for kind in forwards}
    for _ in range(ROUNDS):
        for kind, forward in forwards.items():
            start = time.perf_counter()
            for i in range(len(tiles)):
                forward(tiles[i:i + 1])
            rounds[kind].append((time.perf_counter() - start) * 1000 / len(tiles))
    return {kind: statistics.median(times) for kind, times in rounds.items()}


def choice_path(folder: Path, key: str, tile: int | None) -> Path:
    """Where the outcome for the checkpoint of content ``key`` is kept, for this CPU and ``tile``."""
    return folder / f"{key}-auto-{cpu_key()}-{tile or 'default'}.json"


@functools.lru_cache(maxsize=1)
def cpu_key() -> str:
    """A short name for this CPU as far as speed goes: its model, its cores and the vector instructions."""
    text = f"{cpu_name()}|{os.cpu_count()}|{vector_isa()}"
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def write_choice(path: Path, measured: Measured) -> None:
    document = {"format": FORMAT, "version": VERSION, "tile": measured.tile,
                "ms_per_mpx": measured.ms_per_mpx, "start_s": measured.start_s,
                "agreement": measured.agreement}
    atomic_write_text(path, json.dumps(document, indent=1) + "\n")


def read_choice(path: Path) -> Measured | None:
    """The measurement kept at ``path``, each field checked; None where there is none or it is not usable
    (it is then measured again)."""
    try:
        if not path.is_file() or path.stat().st_size > 16 * 1024:
            return None
        document = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError, RecursionError):
        return None
    if (not isinstance(document, dict) or document.get("format") != FORMAT
            or document.get("version") != VERSION):
        return None
    tile = document.get("tile")
    if not isinstance(tile, int) or isinstance(tile, bool) or not 1 <= tile <= 65536:
        return None
    numbers = [_numbers(document.get(key), high) for key, high in (("ms_per_mpx", 1e9), ("start_s", 3600.0),
                                                                     ("agreement", 1.0))]
    if any(n is None for n in numbers) or len({frozenset(n) for n in numbers}) != 1:
        return None
    return Measured(tile, *numbers)


def _numbers(value: Any, high: float) -> dict[str, float] | None:
    if not isinstance(value, dict) or not value or not set(value) <= set(NAMES) or "onnx" not in value:
        return None
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and 0 <= v <= high
               for v in value.values()):
        return None
    return {k: float(v) for k, v in value.items()}
