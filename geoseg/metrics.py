"""Confusion matrices and the scores derived from them (IoU, mIoU, accuracy)."""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from geoseg.classes import IGNORE_INDEX


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
