"""Fitting the per-pixel yardstick (scikit-learn's histogram gradient boosting on each band's value, 7 and
21 px box means and 7 px standard deviation) on pixels of the training chips, in seconds, and scoring it on
the validation chips beside the network; :mod:`geoseg.models.baseline` is the fitted model."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch

from geoseg.data.appearance import NEUTRAL
from geoseg.io.classes import IGNORE_INDEX
from geoseg.models.baseline import PixelBaselineModel, TreeEnsemble, pixel_features
from geoseg.training.blend import MAX_BYTES
from geoseg.training.metrics import confusion_matrix, summarize

#: Pixels drawn from the training chips to fit on.
PIXELS = 60_000
#: Training chips the pixels are drawn from.
CHIPS = 64


@dataclass
class BaselineResult:
    ensemble: TreeEnsemble
    seconds: float
    pixels: int
    scores: dict[str, float]          # val ``miou``, ``accuracy``, ``iou_<class>``
    confusion: np.ndarray
    val_probabilities: np.ndarray | None = None  # [chips, classes, h, w] float16, where asked for and small


def fit_baseline(train, train_specs: Sequence, val, val_specs: Sequence, names: Sequence[str],
                 evaluated: Sequence[int], seed: int = 0, pixels: int = PIXELS,
                 keep_probabilities: bool = False) -> BaselineResult:
    """Fit on up to ``pixels`` labelled pixels drawn evenly from the first :data:`CHIPS` ``train_specs``
    chips of the dataset ``train``, score on every ``val_specs`` chip of ``val``; with
    ``keep_probabilities``, its class probabilities on those chips are kept (for fitting a blend with the
    network) where they fit in :data:`~geoseg.training.blend.MAX_BYTES`."""
    from sklearn.ensemble import HistGradientBoostingClassifier

    start = time.perf_counter()
    rng = np.random.default_rng(seed)
    specs = [s._replace(aug=0, gain=1.0, band_gains=(), look=NEUTRAL) for s in list(train_specs)[:CHIPS]]
    per_chip = max(1, pixels // max(1, len(specs)))
    xs, ys = [], []
    for spec in specs:
        image, label = train.read(spec)
        features = pixel_features(torch.from_numpy(np.ascontiguousarray(image))[None])[0]
        labelled = np.flatnonzero(np.asarray(label).ravel() != IGNORE_INDEX)
        if not len(labelled):
            continue
        take = rng.choice(labelled, min(per_chip, len(labelled)), replace=False)
        xs.append(features.reshape(features.shape[0], -1)[:, take].T.numpy())
        ys.append(np.asarray(label).ravel()[take])
    if not xs:
        raise ValueError("the training chips hold no labelled pixels to fit the baseline on")
    x, y = np.concatenate(xs), np.concatenate(ys)
    classifier = HistGradientBoostingClassifier(max_iter=150, learning_rate=0.15, early_stopping=False,
                                                random_state=seed).fit(x, y)
    ensemble = TreeEnsemble.from_classifier(classifier, x.shape[1])
    model = PixelBaselineModel(ensemble, len(names))
    cm = np.zeros((len(names), len(names)), np.int64)
    chip = getattr(val, "chip", 0)
    kept = [] if keep_probabilities and len(val_specs) * len(names) * chip * chip * 2 <= MAX_BYTES else None
    with torch.inference_mode():
        for spec in val_specs:
            image, label = val.read(spec)
            logp = model(torch.from_numpy(np.ascontiguousarray(image))[None])
            cm += confusion_matrix(np.ascontiguousarray(label), logp.argmax(1)[0], len(names))
            if kept is not None:
                kept.append(logp[0].exp().numpy().astype(np.float16))
    scores = summarize(cm, names, evaluated)
    probabilities = np.stack(kept) if kept else None
    return BaselineResult(ensemble, time.perf_counter() - start, len(y), scores, cm, probabilities)


def describe(result: BaselineResult, names: Sequence[str], evaluated: Sequence[int]) -> str:
    per_class = ", ".join(f"{names[i]} {result.scores[f'iou_{names[i]}']:.2f}" for i in evaluated)
    return (f"baseline (per-pixel gradient boosting, {result.pixels:,} pixels, {result.seconds:.1f} s): val "
            f"mIoU {result.scores['miou']:.3f} ({per_class})")
