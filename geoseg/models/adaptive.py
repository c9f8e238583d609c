"""Adaptive precision: ONNX Runtime int8 predicts every chip, and fp32 predicts again only the chips where
int8 may give another class than fp32.

A pixel is *uncertain* where the int8 model's two highest class probabilities differ by less than a margin;
a chip whose share of uncertain pixels exceeds a threshold is predicted again in fp32, alone (a batch of one,
so its result does not depend on which chips shared its batch, nor on the blocking). Both numbers form the
model's :class:`RecomputeRule`, calibrated once per model (:func:`calibrate`) on check chips drawn from its
training scenes: of the candidate margins, the one whose threshold sends the fewest chips to fp32 while the
chips left to int8 differ from fp32 on at most :data:`TARGET_DISAGREEMENT` of the check pixels.

The rule and the names of the two ONNX models it runs are this engine's model file: a small JSON document
with the suffix ``.adaptive``, cached with the exports beside the checkpoint and read back field by field
(a model file is data). Nothing here imports torch.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from geoseg.errors import CheckpointError
from geoseg.io.atomic import atomic_write_text
from geoseg.models.checkpoint import MODEL_FORMATS, REBUILD, Checkpoint, ModelFormat
from geoseg.models.onnx_runtime import ArrayModel, OnnxModel, onnx_checkpoint

#: The suffix of an adaptive engine's model file.
SUFFIX = ".adaptive"
FORMAT = "geoseg-adaptive"
VERSION = 1

#: The share of check pixels on which the chips left to int8 may differ from fp32: half of the 0.1 % a
#: default engine may miss, as the scenes predicted are not the check chips.
TARGET_DISAGREEMENT = 0.0005

#: The margins tried (difference of the two highest probabilities below which a pixel is uncertain); the
#: last one makes every pixel uncertain, so some rule always meets the target (every chip in fp32).
MARGINS = (0.01, 0.02, 0.05, 0.1, 0.15, 0.2, 0.3, 0.5, 1.0)

#: The largest adaptive model file read (it holds a few numbers and two names).
MAX_BYTES = 64 * 1024


@dataclass(frozen=True)
class RecomputeRule:
    """Which chips fp32 predicts again: those where more than ``share`` of the pixels are uncertain, a pixel
    being uncertain where its two highest int8 probabilities differ by less than ``margin``."""

    margin: float
    share: float

    def uncertain_shares(self, probabilities: np.ndarray) -> np.ndarray:
        """The share of uncertain pixels of each chip of ``probabilities`` [n, K, h, w]."""
        return (top_two_margin(probabilities) < self.margin).reshape(len(probabilities), -1).mean(axis=1)

    def recompute(self, probabilities: np.ndarray) -> np.ndarray:
        """Which chips of ``probabilities`` [n, K, h, w] fp32 predicts again (bool [n])."""
        return self.uncertain_shares(probabilities) > self.share


def top_two_margin(probabilities: np.ndarray) -> np.ndarray:
    """The difference of the two highest class probabilities per pixel, [n, h, w] from [n, K, h, w]."""
    if probabilities.shape[1] < 2:
        return np.ones((len(probabilities), *probabilities.shape[2:]), np.float32)
    top = np.partition(probabilities, -2, axis=1)
    return top[:, -1] - top[:, -2]


class AdaptiveModel(ArrayModel):
    """int8 for every chip, fp32 again for the chips :class:`RecomputeRule` picks. ``chips`` and
    ``recomputed`` count what this process ran (the benchmarks read them)."""

    def __init__(self, fast: OnnxModel, exact: OnnxModel, rule: RecomputeRule):
        self.fast, self.exact, self.rule = fast, exact, rule
        self.chips = self.recomputed = 0

    def probabilities(self, x: np.ndarray) -> np.ndarray:
        p = self.fast.probabilities(x)
        redo = self.rule.recompute(p)
        for i in np.flatnonzero(redo):
            if x[i].any():  # an all-zero chip is the padding of a batch's last places: not used
                p[i] = self.exact.probabilities(x[i:i + 1])[0]
                self.recomputed += 1
        self.chips += len(x)
        return p


@dataclass(frozen=True)
class Calibration:
    """A calibrated rule and what it was measured on."""

    rule: RecomputeRule
    chips: int
    pixels: int
    int8_disagreement: float       # share of check pixels where int8 alone differs from fp32
    residual_disagreement: float   # ... where the rule's output differs from fp32
    recomputed_share: float        # share of check chips the rule sends to fp32


def calibrate(fast: OnnxModel, exact: OnnxModel, chips: np.ndarray) -> Calibration:
    """The rule that recomputes the fewest of ``chips`` (normalised [n, bands, h, w]) while the int8 chips
    left differ from fp32 on at most :data:`TARGET_DISAGREEMENT` of all their pixels (ties: the smaller
    disagreement). Each chip's int8 and fp32 classes are compared (each chip alone, as prediction on a CPU
    runs them); the per-chip counts of differing pixels and of uncertain pixels at each candidate margin
    decide."""
    n = len(chips)
    p_fast = np.concatenate([fast.probabilities(chips[i:i + 1]) for i in range(n)])
    classes_exact = np.concatenate([exact.probabilities(chips[i:i + 1]).argmax(axis=1) for i in range(n)])
    differs = (p_fast.argmax(axis=1) != classes_exact).reshape(n, -1).sum(axis=1)
    margins = top_two_margin(p_fast).reshape(n, -1)
    pixels = margins.size
    allowed = TARGET_DISAGREEMENT * pixels
    best: tuple[float, int, RecomputeRule] | None = None
    for margin in MARGINS:
        shares = (margins < margin).mean(axis=1)
        share = _highest_share_within(shares, differs, allowed)
        if share is None:
            continue
        kept = shares <= share
        candidate = (float(np.mean(~kept)), int(differs[kept].sum()), RecomputeRule(margin, share))
        if best is None or candidate[:2] < best[:2]:
            best = candidate
    assert best is not None  # the last margin makes every pixel uncertain: share 0 recomputes every chip
    recomputed, residual, rule = best
    return Calibration(rule, n, pixels, float(differs.sum() / pixels), residual / pixels, recomputed)


def _highest_share_within(shares: np.ndarray, differs: np.ndarray, allowed: float) -> float | None:
    """The highest threshold (one of the chips' ``shares``, or 0) such that the chips at or below it differ
    from fp32 on at most ``allowed`` pixels in all; None where even threshold 0 leaves too many."""
    order = np.argsort(shares, kind="stable")
    cumulative = np.cumsum(differs[order])
    best = None
    for value in [0.0, *np.unique(shares)]:
        count = int(np.searchsorted(shares[order], value, side="right"))
        if (cumulative[count - 1] if count else 0) <= allowed:
            best = float(value)
        else:
            break
    return best


def write_adaptive_model(path: Path, fast: Path, exact: Path, calibration: Calibration) -> None:
    """The adaptive engine's model file at ``path``: the two ONNX models (beside it) and the rule."""
    document = {"format": FORMAT, "version": VERSION, "fast": fast.name, "exact": exact.name,
                "margin": calibration.rule.margin, "share": calibration.rule.share,
                "check": {"chips": calibration.chips, "pixels": calibration.pixels,
                          "int8_disagreement": calibration.int8_disagreement,
                          "residual_disagreement": calibration.residual_disagreement,
                          "recomputed_share": calibration.recomputed_share}}
    atomic_write_text(path, json.dumps(document, indent=1) + "\n")


def read_adaptive_model(path: str | os.PathLike) -> tuple[Path, Path, RecomputeRule]:
    """The int8 and fp32 models and the rule of the adaptive model file ``path``, each field checked; one
    sentence for a file that is not one."""
    path = Path(path)

    def refuse(what: str) -> CheckpointError:
        return CheckpointError(f"{path} is not a usable geoseg adaptive model: {what}; {REBUILD}")

    try:
        if path.stat().st_size > MAX_BYTES:
            raise refuse(f"it is larger than {MAX_BYTES} bytes")
        document = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError, RecursionError):
        raise refuse("it is not a JSON document") from None
    if not isinstance(document, dict) or document.get("format") != FORMAT:
        raise refuse(f"its 'format' must be {FORMAT!r}")
    if document.get("version") != VERSION:
        raise refuse(f"its 'version' must be {VERSION}")
    fast, exact = (_sibling(path, document.get(key), key, refuse) for key in ("fast", "exact"))
    margin, share = (_fraction(document.get(key), key, refuse) for key in ("margin", "share"))
    return fast, exact, RecomputeRule(margin, share)


def _sibling(path: Path, name: Any, key: str, refuse) -> Path:
    if (not isinstance(name, str) or not name.endswith(".onnx") or Path(name).name != name
            or name.startswith(".")):
        raise refuse(f"its {key!r} must name an .onnx file in the same folder")
    return path.with_name(name)


def _fraction(value: Any, key: str, refuse) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
            or not 0 <= value <= 1:
        raise refuse(f"its {key!r} must be a number from 0 to 1")
    return float(value)


def _adaptive_checkpoint(path: Path) -> Checkpoint:
    """The checkpoint the adaptive model was made from: its int8 model's, whose fields the fp32 model must
    share."""
    fast, exact, _ = read_adaptive_model(path)
    checkpoint, other = onnx_checkpoint(fast), onnx_checkpoint(exact)
    if (checkpoint.classes, checkpoint.bands, checkpoint.chip_size) != (other.classes, other.bands,
                                                                         other.chip_size):
        raise CheckpointError(f"{path} is not a usable geoseg adaptive model: its int8 and fp32 models were "
                              f"made from different checkpoints; {REBUILD}")
    return replace(checkpoint, path=path)


def _build(ckpt: Checkpoint, threads: int | None) -> AdaptiveModel:
    fast, exact, rule = read_adaptive_model(ckpt.path)
    shape = dict(bands=len(ckpt.bands), classes=len(ckpt.classes), chip=ckpt.chip_size, spinning=False)
    return AdaptiveModel(OnnxModel(fast, threads, **shape), OnnxModel(exact, threads, **shape), rule)


MODEL_FORMATS[SUFFIX] = ModelFormat(read=_adaptive_checkpoint, build=_build)
