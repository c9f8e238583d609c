"""Self-training on sparse labels: the model's confident predictions on the training scenes' unlabelled pixels
become labels (pseudo-labels) for the epochs after a round.

Where polygons cover a small part of the scenes, most pixels a chip shows carry no label and give the loss
nothing. A round predicts every training scene (overlapping tiles, each keeping its centre), keeps the
classes predicted with a probability of at least ``pseudo_label_confidence`` (or, with
``pseudo_label_share``, among their class's most confident predictions) on pixels that are valid and
unlabelled, and hands them to the chip dataset, which fills a chip's unlabelled pixels with them; chips are
then also drawn where only pseudo-labels are. Labelled pixels, nodata and pixels labelled with an ignored
class are never pseudo-labelled. Whether the rounds help is judged on the validation scenes (never
pseudo-labelled), where ``best.ckpt`` keeps the best epoch before or after them.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from geoseg.data.chips import ChipDataset, ChipSpec
from geoseg.errors import CheckpointError
from geoseg.io.atomic import atomic_output
from geoseg.io.classes import IGNORE_INDEX


def pseudo_label_file(number: int) -> str:
    """The file in the run folder that keeps round ``number``'s pseudo-labels, for ``--resume``."""
    return f"pseudo_labels_{number}.npz"


@dataclass
class Round:
    """What one round of pseudo-labelling found: pixels pseudo-labelled per class, the unlabelled valid
    pixels they were chosen from, and the seconds it took."""

    per_class: np.ndarray
    unlabelled: int
    seconds: float

    @property
    def pixels(self) -> int:
        return int(self.per_class.sum())

    def describe(self, number: int, epoch: int, confidence: float, names: Sequence[str],
                 share: float = 0.0) -> str:
        """One line for the log."""
        if not self.unlabelled:
            return (f"self-training round {number} (after epoch {epoch}): the training scenes have no "
                    "unlabelled pixels, nothing to pseudo-label")
        classes = ", ".join(f"{name} {int(n):,}" for name, n in zip(names, self.per_class) if n)
        return (f"self-training round {number} (after epoch {epoch}): {self.pixels:,} of {self.unlabelled:,} "
                f"unlabelled pixels ({self.pixels / self.unlabelled:.0%}) pseudo-labelled at confidence ≥ "
                f"{confidence:g}" + (f" or in their class's {share:.0%} most confident" if share else "")
                + f" ({classes or 'none'}; {self.seconds:.1f} s)")


def round_epochs(epochs: int, rounds: int) -> list[int]:
    """The epochs after which a round runs: spread evenly over the run, never after its last epoch."""
    if rounds <= 0 or epochs <= 1:
        return []
    return sorted({min(epochs - 1, max(1, round(epochs * k / (rounds + 1)))) for k in range(1, rounds + 1)})


def tile_starts(length: int, tile: int, margin: int) -> list[int]:
    """Tile offsets along one axis: tiles of ``tile`` overlapping by ``2 × margin``, the first at 0 and the
    last reaching ``length``."""
    stride = tile - 2 * margin
    starts = [0]
    while starts[-1] + tile < length:
        starts.append(starts[-1] + stride)
    return starts


#: Confidences are kept as 16-bit fractions of 1 between the prediction and the choice of pixels.
LEVELS = 65535


@torch.no_grad()
def pseudo_label(model: torch.nn.Module, dataset: ChipDataset, device: torch.device,
                 amp: torch.dtype | None, confidence: float, excluded: Sequence[int] = (),
                 batch_size: int = 8, share: float = 0.0) -> tuple[list[np.ndarray], Round]:
    """Pseudo-labels of every scene of ``dataset`` (a dataset that ignores no class, so that its unlabelled
    pixels are the ones without a label): class indices at the scenes' sampling, ``IGNORE_INDEX`` where a
    pixel is labelled, not valid, predicted as an ``excluded`` class, or not sure enough.

    A prediction is sure enough at a probability of ``confidence`` or more, or (``share`` > 0) when it is
    among the ``share`` most confident predictions of its class over all scenes: class-balanced, so that a
    class the model is never very sure of (a rare one) is not left out. Each tile keeps its prediction but
    for a margin of an eighth of a tile on the sides another tile covers: pixels are predicted with context
    on every side, as in training. Holds each scene's predictions (3 bytes a pixel) until all are made."""
    started = time.perf_counter()
    was_training = model.training
    model.eval()
    classes = len(dataset.schema)
    guesses, sureness, unlabelled_total = [], [], 0
    for scene in range(len(dataset.scenes)):
        guess, sure, unlabelled = _predict_scene(model, dataset, scene, device, amp, batch_size)
        guesses.append(guess)
        sureness.append(sure)
        unlabelled_total += unlabelled
    model.train(was_training)
    thresholds = _class_thresholds(guesses, sureness, classes, confidence, share)
    thresholds[list(excluded)] = LEVELS + 1  # never
    labels, per_class = [], np.zeros(classes, np.int64)
    for guess, sure in zip(guesses, sureness):
        open_ = guess != IGNORE_INDEX
        keep = open_.copy()
        keep[open_] = sure[open_] >= thresholds[guess[open_]]
        label = np.where(keep, guess, IGNORE_INDEX).astype(np.uint8)
        per_class += np.bincount(label[keep], minlength=classes)[:classes]
        labels.append(label)
    return labels, Round(per_class, unlabelled_total, time.perf_counter() - started)


def _predict_scene(model: torch.nn.Module, dataset: ChipDataset, scene: int, device: torch.device,
                   amp: torch.dtype | None, batch_size: int) -> tuple[np.ndarray, np.ndarray, int]:
    """The model's class (``IGNORE_INDEX`` where the pixel is labelled or not valid) and its probability
    (0–``LEVELS``) at each pixel of a scene, from overlapping tiles; and the scene's valid unlabelled
    pixels."""
    chip = dataset.chip
    margin = chip // 8
    h, w = dataset.scenes[scene].sampled_shape
    guess = np.full((h, w), IGNORE_INDEX, np.uint8)
    sure = np.zeros((h, w), np.uint16)
    specs = [ChipSpec(scene, r, c) for r in tile_starts(h, chip, margin)
             for c in tile_starts(w, chip, margin)]
    for first in range(0, len(specs), batch_size):
        part = specs[first:first + batch_size]
        chips = [dataset.read_chip(spec) for spec in part]
        x = torch.from_numpy(np.stack([image for image, _, _ in chips])).to(device).contiguous(
            memory_format=torch.channels_last)
        with torch.autocast(device.type, dtype=amp or torch.float32, enabled=amp is not None):
            logits = model(x)
        probability, predicted = torch.softmax(logits.float(), dim=1).max(dim=1)
        levels = torch.round(probability * LEVELS).cpu().numpy().astype(np.uint16)
        predicted = predicted.cpu().numpy().astype(np.uint8)
        for spec, (_, valid, label), classes, level in zip(part, chips, predicted, levels):
            open_ = valid & (label == IGNORE_INDEX)
            _write_centre(guess, np.where(open_, classes, IGNORE_INDEX), spec, margin)
            _write_centre(sure, level, spec, margin)
    return guess, sure, int((guess != IGNORE_INDEX).sum())


def _class_thresholds(guesses: Sequence[np.ndarray], sureness: Sequence[np.ndarray], classes: int,
                      confidence: float, share: float) -> np.ndarray:
    """Per class, the least probability (0–``LEVELS``) that makes a pseudo-label: ``confidence``, or lower
    where that class's ``share`` most confident predictions reach lower."""
    floor = int(np.ceil(confidence * LEVELS - 1e-9))
    thresholds = np.full(classes, floor, np.int64)
    if share <= 0:
        return thresholds
    counts = np.zeros(classes * (LEVELS + 1), np.int64)
    for guess, sure in zip(guesses, sureness):
        open_ = guess != IGNORE_INDEX
        cells = guess[open_].astype(np.int64) * (LEVELS + 1) + sure[open_]
        counts += np.bincount(cells, minlength=counts.size)[:counts.size]
    counts = counts.reshape(classes, LEVELS + 1)
    for c in range(classes):
        total = counts[c].sum()
        if not total:
            continue
        from_top = np.cumsum(counts[c][::-1])  # predictions at or above each level, from the top
        wanted = max(1, int(share * total))
        level = LEVELS - int(np.searchsorted(from_top, wanted))  # the highest level keeping ≥ wanted
        thresholds[c] = min(floor, level)
    return thresholds


def _write_centre(out: np.ndarray, tile: np.ndarray, spec: ChipSpec, margin: int) -> None:
    """``tile`` written into ``out`` at the spec's place, without its top and left margins where a tile
    before it covers them (tiles are written in row-major order, so a later tile takes the bottom and right
    margins over)."""
    top, left = (margin if spec.row > 0 else 0), (margin if spec.col > 0 else 0)
    rows = slice(spec.row + top, min(out.shape[0], spec.row + tile.shape[0]))
    cols = slice(spec.col + left, min(out.shape[1], spec.col + tile.shape[1]))
    out[rows, cols] = tile[top:top + rows.stop - rows.start, left:left + cols.stop - cols.start]


def cell_counts(labels: Sequence[np.ndarray], cell: int) -> list[np.ndarray]:
    """Pseudo-labelled pixels per ``cell``-sized cell of each scene ([rows, cols]), aligned as the label
    census's cells."""
    counts = []
    for label in labels:
        h, w = label.shape
        rows, cols = -(-h // cell), -(-w // cell)
        padded = np.zeros((rows * cell, cols * cell), np.int64)
        padded[:h, :w] = label != IGNORE_INDEX
        counts.append(padded.reshape(rows, cell, cols, cell).sum(axis=(1, 3)))
    return counts


def save_pseudo_labels(labels: Sequence[np.ndarray], path: Path) -> Path:
    """The pseudo-labels written atomically as plain arrays (``--resume`` reads them without pickle)."""
    with atomic_output(path) as tmp:
        with open(tmp, "wb") as fh:
            np.savez_compressed(fh, *labels)
    return path


def load_pseudo_labels(path: Path, shapes: Sequence[tuple[int, int]], classes: int) -> list[np.ndarray]:
    """The pseudo-labels a resumed run had, checked against its scenes: one uint8 array per scene of its
    sampled shape holding class indices or ``IGNORE_INDEX``."""
    try:
        with np.load(path, allow_pickle=False) as data:
            labels = [data[f"arr_{i}"] for i in range(len(data.files))]
    except (OSError, ValueError, KeyError) as exc:
        raise CheckpointError(f"the pseudo-labels of the run being resumed ({path}) cannot be read ({exc}); "
                              "resume from a run folder with its pseudo-label files intact") from None
    fits = len(labels) == len(shapes) and all(
        a.dtype == np.uint8 and a.shape == tuple(shape) and bool(((a < classes) | (a == IGNORE_INDEX)).all())
        for a, shape in zip(labels, shapes))
    if not fits:
        raise CheckpointError(f"the pseudo-labels in {path} do not fit the run's training scenes; resume "
                              f"from a run folder with its own pseudo-label files")
    return labels
