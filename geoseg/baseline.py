"""A yardstick: a per-pixel classifier (scikit-learn's histogram gradient boosting) on band values and local
statistics, fitted in seconds on pixels of the training chips.

Features per band, from the normalised chip: the value, its 7 px and 21 px box
means and its 7 px standard deviation (12 features for RGB). ``geoseg train``
fits one beside the network and reports its validation IoU; ``geoseg baseline``
saves it as a model ``geoseg predict`` runs (a first map in minutes): behind the
model interface prediction uses, it turns a batch of chips into class
log-probabilities, so blending, block invariance and outputs are the network's.

The fitted classifier is stored in the checkpoint as its pickle (bytes in a
uint8 tensor): load only baseline checkpoints you made yourself.
"""

from __future__ import annotations

import pickle
import time
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from geoseg.classes import IGNORE_INDEX
from geoseg.metrics import confusion_matrix, summarize

ARCHITECTURE = "PixelBaseline"
#: Pixels drawn from the training chips to fit on.
PIXELS = 60_000
#: Training chips the pixels are drawn from.
CHIPS = 64


def pixel_features(x: torch.Tensor) -> torch.Tensor:
    """[n, 4·bands, h, w] features of normalised chips [n, bands, h, w]: value, 7 and 21 px box means, 7 px
    standard deviation (reflected at the chip's edges)."""
    def box(t: torch.Tensor, k: int) -> torch.Tensor:
        return F.avg_pool2d(F.pad(t, [k // 2] * 4, mode="reflect"), k, stride=1)

    mean7, mean21 = box(x, 7), box(x, 21)
    std7 = (box(x * x, 7) - mean7 * mean7).clamp_min(0).sqrt()
    return torch.cat([x, mean7, mean21, std7], dim=1)


class PixelBaselineModel(torch.nn.Module):
    """The fitted classifier as a model of chips → class log-probabilities [n, K, h, w]."""

    def __init__(self, classifier, classes: int):
        super().__init__()
        self.classifier, self.k = classifier, classes
        self.register_buffer("_device", torch.zeros(0))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, _, h, w = x.shape
        features = pixel_features(x.float()).permute(0, 2, 3, 1).reshape(n * h * w, -1).numpy()
        proba = np.full((features.shape[0], self.k), 1e-9, np.float32)
        classes = self.classifier.classes_
        if len(classes) == 1:  # labels of one class: scikit-learn still answers two columns
            proba[:, classes[0]] = 1.0
        else:
            proba[:, classes] = np.maximum(self.classifier.predict_proba(features), 1e-9)
        logp = torch.from_numpy(np.log(proba)).reshape(n, h, w, self.k).permute(0, 3, 1, 2)
        return logp.contiguous()


@dataclass
class BaselineResult:
    classifier: object
    seconds: float
    pixels: int
    scores: dict[str, float]          # val ``miou``, ``accuracy``, ``iou_<class>``
    confusion: np.ndarray


def fit_baseline(train, train_specs: Sequence, val, val_specs: Sequence, names: Sequence[str],
                 evaluated: Sequence[int], seed: int = 0, pixels: int = PIXELS) -> BaselineResult:
    """Fit on up to ``pixels`` labelled pixels drawn evenly from the first :data:`CHIPS` ``train_specs``
    chips of the dataset ``train``, score on every ``val_specs`` chip of ``val``."""
    from sklearn.ensemble import HistGradientBoostingClassifier

    start = time.perf_counter()
    rng = np.random.default_rng(seed)
    specs = [s._replace(aug=0, gain=1.0, band_gains=()) for s in list(train_specs)[:CHIPS]]
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
    model = PixelBaselineModel(classifier, len(names))
    cm = np.zeros((len(names), len(names)), np.int64)
    with torch.inference_mode():
        for spec in val_specs:
            image, label = val.read(spec)
            pred = model(torch.from_numpy(np.ascontiguousarray(image))[None]).argmax(1)[0]
            cm += confusion_matrix(np.ascontiguousarray(label), pred, len(names))
    scores = summarize(cm, names, evaluated)
    return BaselineResult(classifier, time.perf_counter() - start, len(y), scores, cm)


def classifier_tensor(classifier) -> torch.Tensor:
    """The fitted classifier as bytes in a tensor, so that the checkpoint loads with ``weights_only``."""
    return torch.frombuffer(bytearray(pickle.dumps(classifier)), dtype=torch.uint8)


def classifier_from_tensor(t: torch.Tensor):
    return pickle.loads(t.numpy().tobytes())


def describe(result: BaselineResult, names: Sequence[str], evaluated: Sequence[int]) -> str:
    per_class = ", ".join(f"{names[i]} {result.scores[f'iou_{names[i]}']:.2f}" for i in evaluated)
    return (f"baseline (per-pixel gradient boosting, {result.pixels:,} pixels, {result.seconds:.1f} s): val "
            f"mIoU {result.scores['miou']:.3f} ({per_class})")
