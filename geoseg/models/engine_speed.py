"""``--engine auto`` on a CPU: the engines measured once per model, CPU and tile, and the fastest that keeps
fp32's classes taken.

Which engine is fastest depends on the CPU and on the tile as much as on the engine (torch bf16 gains most
on large tiles; the measurements are in docs/benchmarks.md). So ``auto`` measures, on the model's own check
chips: ONNX Runtime fp32 (the reference: fp32's classes, and no torch needed to start), torch bf16 where the
CPU computes in bf16, and adaptive precision (:mod:`geoseg.models.adaptive`). Each runs the chips one by one,
as prediction on a CPU does, in interleaved rounds (median time a chip); an engine other than ONNX Runtime
fp32 is taken only where its classes agree with fp32's on at least :data:`AGREEMENT` of the check pixels and
it is at least :data:`FASTER` times as fast. The outcome is kept with the cached engines as a small JSON
document, read back field by field; where it cannot be read it is measured again.
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
#: Chips timed in each round, and rounds.
TIMED_CHIPS = 8
ROUNDS = 3

FORMAT = "geoseg-engine-choice"
VERSION = 1
#: The engines ``auto`` measures, in the order preferred on a tie, and the names their outputs carry.
NAMES = {"onnx": "onnx-fp32", "torch": "torch-bf16", "adaptive": "onnx-int8+fp32"}

Forward = Callable[[np.ndarray], np.ndarray]


@dataclass(frozen=True)
class Measured:
    """What ``auto`` measured: the engine taken, each engine's time a chip (ms) and its share of check
    pixels with fp32's class."""

    kind: str
    ms_per_chip: dict[str, float]
    agreement: dict[str, float]

    def reason(self) -> str:
        """Why ``kind``, for the prediction's summary line."""
        others = ", ".join(f"{NAMES[k]} {ms:.1f} ms" + ("" if self.agreement[k] >= AGREEMENT else
                                                          f" ({self.agreement[k]:.2%} of fp32's classes)")
                           for k, ms in self.ms_per_chip.items() if k != self.kind)
        return (f"measured on this CPU, {self.ms_per_chip[self.kind]:.1f} ms a chip against {others} "
                f"(onnx-fp32 unless another is {FASTER}× as fast)")


def measure(forwards: dict[str, Forward], check: np.ndarray, timed: np.ndarray) -> Measured:
    """The engines of ``forwards`` (kind → probabilities of normalised chips; ``onnx`` is the fp32 reference)
    measured: their classes on the ``check`` chips against the reference's, their time on the ``timed``
    chips; and the one ``auto`` takes."""
    reference = _classes(forwards["onnx"], check)
    agreement = {kind: 1.0 if kind == "onnx" else float(np.mean(_classes(forward, check) == reference))
                 for kind, forward in forwards.items()}
    ms = _ms_per_chip(forwards, timed)
    kind = "onnx"
    for other in forwards:
        if agreement[other] >= AGREEMENT and ms[other] * FASTER <= ms[kind]:
            kind = other
    return Measured(kind, ms, agreement)


def _classes(forward: Forward, chips: np.ndarray) -> np.ndarray:
    return np.stack([forward(chips[i:i + 1])[0].argmax(axis=0) for i in range(len(chips))])


def _ms_per_chip(forwards: dict[str, Forward], chips: np.ndarray) -> dict[str, float]:
    """The median over :data:`ROUNDS` interleaved rounds of each engine's time a chip (ms), after a warm-up
    chip (an engine's first run prepares its kernels)."""
    for forward in forwards.values():
        forward(chips[:1])
    rounds: dict[str, list[float]] = {kind: [] for kind in forwards}
    for _ in range(ROUNDS):
        for kind, forward in forwards.items():
            start = time.perf_counter()
            for i in range(len(chips)):
                forward(chips[i:i + 1])
            rounds[kind].append((time.perf_counter() - start) * 1000 / len(chips))
    return {kind: statistics.median(times) for kind, times in rounds.items()}


def choice_path(folder: Path, key: str, tile: int | None) -> Path:
    """Where the outcome for the checkpoint of content ``key`` is kept, for this CPU and ``tile``."""
    return folder / f"{key}-auto-{cpu_key()}-{tile or 'chip'}.json"


@functools.lru_cache(maxsize=1)
def cpu_key() -> str:
    """A short name for this CPU as far as speed goes: its model, its cores and the vector instructions."""
    text = f"{cpu_name()}|{os.cpu_count()}|{vector_isa()}"
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def write_choice(path: Path, measured: Measured) -> None:
    document = {"format": FORMAT, "version": VERSION, "engine": measured.kind,
                "ms_per_chip": measured.ms_per_chip, "agreement": measured.agreement}
    atomic_write_text(path, json.dumps(document, indent=1) + "\n")


def read_choice(path: Path) -> Measured | None:
    """The outcome kept at ``path``, each field checked; None where there is none or it is not usable (it
    is then measured again)."""
    try:
        if not path.is_file() or path.stat().st_size > 16 * 1024:
            return None
        document = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError, RecursionError):
        return None
    if (not isinstance(document, dict) or document.get("format") != FORMAT
            or document.get("version") != VERSION or document.get("engine") not in NAMES):
        return None
    ms, agreement = (_numbers(document.get(key), high) for key, high in (("ms_per_chip", 1e7),
                                                                          ("agreement", 1.0)))
    if ms is None or agreement is None or set(ms) != set(agreement) or document["engine"] not in ms:
        return None
    return Measured(document["engine"], ms, agreement)


def _numbers(value: Any, high: float) -> dict[str, float] | None:
    if not isinstance(value, dict) or not value or not set(value) <= set(NAMES) or "onnx" not in value:
        return None
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and 0 <= v <= high
               for v in value.values()):
        return None
    return {k: float(v) for k, v in value.items()}
