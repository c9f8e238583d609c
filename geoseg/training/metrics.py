"""Confusion matrices and the scores derived from them (IoU, mIoU, accuracy)."""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from geoseg.io.classes import IGNORE_INDEX


def confusion_matrix(truth: torch.Tensor | np.ndarray, pred: torch.Tensor | np.ndarray, n: int,
                     ignore_index: int = IGNORE_INDEX) -> np.ndarray:
    """An ``n`` × ``n`` matrix counting pixels of truth class i predicted as j; ignored truth left out."""
    t = torch.as_tensor(truth).reshape(-1).long()
    p = torch.as_tensor(pred).reshape(-1).long()
    keep = (t != ignore_index) & (t >= 0) & (t < n)
    idx = t[keep] * n + p[keep].clamp(0, n - 1)
    return torch.bincount(idx, minlength=n * n).reshape(n, n).cpu().numpy().astype(np.int64)


def iou_per_class(cm: np.ndarray) -> np.ndarray:
    """Intersection over union per class; NaN where a class is absent from truth and prediction."""
    tp = np.diag(cm).astype(float)
    union = cm.sum(0) + cm.sum(1) - tp
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(union > 0, tp / union, np.nan)


def mean_iou(cm: np.ndarray, classes: Sequence[int] | None = None) -> float:
    """Mean IoU over ``classes`` (default all) that occur in truth or prediction."""
    iou = iou_per_class(cm)
    if classes is not None:
        iou = iou[list(classes)]
    return float(np.nanmean(iou)) if np.isfinite(iou).any() else float("nan")


def pixel_accuracy(cm: np.ndarray) -> float:
    total = cm.sum()
    return float(np.trace(cm) / total) if total else float("nan")


def summarize(cm: np.ndarray, names: Sequence[str], evaluated: Sequence[int]) -> dict[str, float]:
    """Flat metric dict: ``miou``, ``accuracy`` and ``iou_<class>`` for each evaluated class."""
    iou = iou_per_class(cm)
    out = {"miou": mean_iou(cm, evaluated), "accuracy": pixel_accuracy(cm)}
    for i in evaluated:
        out[f"iou_{names[i]}"] = float(iou[i])
    return out


def class_report(cm: np.ndarray, names: Sequence[str], evaluated: Sequence[int]) -> dict:
    """Everything one confusion matrix says: per-class IoU, precision, recall, F1 and support; mIoU,
    frequency-weighted IoU, pixel accuracy and Cohen's kappa (over the evaluated classes' truth pixels).

    NaN where a score is undefined (a class absent from truth and prediction).
    """
    cm = np.asarray(cm, np.float64)
    tp = np.diag(cm)
    support, predicted = cm.sum(1), cm.sum(0)
    with np.errstate(invalid="ignore", divide="ignore"):
        precision = np.where(predicted > 0, tp / predicted, np.nan)
        recall = np.where(support > 0, tp / support, np.nan)
        f1 = np.where(precision + recall > 0, 2 * precision * recall / (precision + recall), np.nan)
        f1 = np.where(np.isnan(precision) | np.isnan(recall), np.nan, f1)
        f1 = np.where((tp == 0) & (support + predicted > 0), 0.0, f1)
    iou = iou_per_class(cm)
    ev = list(evaluated)
    total = cm.sum()
    with np.errstate(invalid="ignore"):
        labelled = support[ev].sum()
        fw = float(np.nansum(support[ev] / labelled * iou[ev])) if labelled else float("nan")
    po = np.trace(cm) / total if total else float("nan")
    pe = float((support * predicted).sum() / total**2) if total else float("nan")
    kappa = (po - pe) / (1 - pe) if total and pe < 1 else float("nan")
    return {
        "miou": mean_iou(cm, ev), "fwiou": fw, "accuracy": float(po), "kappa": float(kappa),
        "pixels": int(total),
        "classes": {names[i]: {"iou": float(iou[i]), "precision": float(precision[i]),
                               "recall": float(recall[i]), "f1": float(f1[i]),
                               "support": int(support[i])} for i in ev},
    }


def bootstrap_miou(cms: Sequence[np.ndarray], evaluated: Sequence[int], n: int = 1000, seed: int = 0,
                   level: float = 0.95) -> tuple[float, float]:
    """A percentile bootstrap interval for mIoU: resample the units (chips or scenes) with replacement and
    recompute mIoU from the summed confusion matrix."""
    stack = np.stack([np.asarray(c, np.int64) for c in cms])
    if len(stack) < 2:
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, len(stack), (n, len(stack)))
    values = np.array([mean_iou(stack[d].sum(0), evaluated) for d in draws])
    values = values[np.isfinite(values)]
    alpha = (1 - level) / 2
    return float(np.quantile(values, alpha)), float(np.quantile(values, 1 - alpha))
