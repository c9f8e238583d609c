"""Scoring class rasters against labels: confusion matrices per chip, an error map, the worst chips.

:func:`evaluate_raster` compares one predicted class raster with its labels
(class ids, an RGB mask or polygons; a label raster on another grid is
reprojected onto the prediction's grid with nearest neighbour, with a warning),
chip by chip, so the worst chips can be listed and mIoU bootstrapped over
chips.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
from rasterio.windows import Window

from geoseg.errors import RasterError
from geoseg.io.classes import IGNORE_INDEX, NODATA, ClassSchema, LandClass
from geoseg.io.grid import GeoGrid, blocks
from geoseg.io.labels import LabelReader
from geoseg.io.raster import open_raster
from geoseg.outputs.class_raster import styled_class_raster
from geoseg.training.metrics import bootstrap_miou, class_report, confusion_matrix, iou_per_class, mean_iou

#: The error map's categories (values) with their colours.
ERROR_CLASSES = ClassSchema((
    LandClass(0, "correct", (46, 160, 67)),
    LandClass(1, "wrong", (215, 25, 28)),
    LandClass(2, "not labelled", (190, 190, 190)),
))


@dataclass
class ChipScore:
    """The confusion matrix of one chip-sized window of one predicted scene."""

    prediction: str
    truth: str
    image: str | None
    window: Window
    confusion: np.ndarray


@dataclass
class Evaluation:
    """Scores of one or more predicted scenes against their labels."""

    schema: ClassSchema
    confusion: np.ndarray
    chips: list[ChipScore] = field(default_factory=list)
    scenes: list[np.ndarray] = field(default_factory=list)  # one confusion matrix per scene
    label_field: str = "class_id"  # the polygon labels' class attribute

    @property
    def report(self) -> dict:
        """Per-class IoU/precision/recall/F1/support, mIoU, fwIoU, accuracy, kappa."""
        return class_report(self.confusion, self.schema.names, self.schema.evaluated_indices)

    @property
    def metrics(self) -> dict[str, float]:
        """The flat scores: mIoU, fwIoU, accuracy, kappa and ``iou_<class>``."""
        r = self.report
        return {"miou": r["miou"], "fwiou": r["fwiou"], "accuracy": r["accuracy"], "kappa": r["kappa"],
                **{f"iou_{name}": c["iou"] for name, c in r["classes"].items()}}

    def interval(self, n: int = 1000, seed: int = 0) -> dict[str, tuple[float, float]]:
        """95 % bootstrap intervals for mIoU, resampling chips and (with several scenes) scenes."""
        ev = self.schema.evaluated_indices
        out = {"chips": bootstrap_miou([c.confusion for c in self.chips], ev, n, seed)}
        if len(self.scenes) > 1:
            out["scenes"] = bootstrap_miou(self.scenes, ev, n, seed)
        return out

    def worst(self, k: int, class_name: str | None = None) -> list[tuple[ChipScore, float]]:
        """The ``k`` chips with the lowest IoU for ``class_name`` (default: the lowest mIoU), among chips
        where
        that class occurs in the truth or the prediction."""
        ev = self.schema.evaluated_indices
        if class_name is not None:
            i = self.schema.index_of(class_name)
            scored = [(c, float(iou_per_class(c.confusion)[i])) for c in self.chips]
        else:
            scored = [(c, mean_iou(c.confusion, ev)) for c in self.chips]
        scored = [(c, v) for c, v in scored if np.isfinite(v)]
        scored.sort(key=lambda cv: (cv[1], -int(cv[0].confusion.sum())))
        return scored[:k]


def evaluate_raster(prediction: str | os.PathLike, truth: str | os.PathLike, schema: ClassSchema,
                    chip: int = 512, error_map: str | os.PathLike | None = None,
                    image: str | os.PathLike | None = None, label_field: str = "class_id",
                    truth_schema: ClassSchema | None = None) -> Evaluation:
    """Confusion matrices (per chip and in all) of a class raster against its labels.

    Nodata in either raster and truth of an ignored class are left out; an
    ignored class *predicted* on a labelled pixel counts as an error. With
    ``error_map`` a GeoTIFF on the prediction's grid marks each pixel correct,
    wrong or not labelled (with a colour table and category names).
    ``image`` is the scene the prediction was made from (default: the
    ``scene`` tag geoseg writes), used for galleries. ``truth_schema``: the same classes with the codes a
    reference raster uses for them (see :meth:`~geoseg.io.classes.ClassSchema.with_codes`).
    """
    lut = schema.code_to_index_lut(keep_ignored=True)  # predicting 'unknown' on a labelled pixel is wrong
    n = len(schema)
    chips: list[ChipScore] = []
    with open_raster(prediction) as pred, contextlib.ExitStack() as stack:
        grid = GeoGrid.from_dataset(pred)
        labels = LabelReader(truth, grid, truth_schema or schema, label_field, align=True)
        scene = str(image) if image else pred.tags().get("scene")
        errors = (stack.enter_context(styled_class_raster(error_map, grid, ERROR_CLASSES,
                                                          {"content": "prediction errors"}))
                  if error_map else None)
        for window in blocks(grid.width, grid.height, chip):
            p = lut[pred.read(1, window=window)]
            t = labels.read(window, (int(window.height), int(window.width))).copy()
            t[p == IGNORE_INDEX] = IGNORE_INDEX
            cm = confusion_matrix(t, np.where(p == IGNORE_INDEX, 0, p), n)
            chips.append(ChipScore(str(prediction), str(truth), scene, window, cm))
            if errors:
                errors.write(_error_codes(p, t), 1, window=window)
    total = sum(c.confusion for c in chips)
    if total.sum() == 0:
        raise RasterError(f"{prediction} and {truth} share no labelled pixels to evaluate")
    return Evaluation(schema, total, chips, [total], label_field)


def _error_codes(pred: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """The error map's values for predicted and true indices: correct, wrong, not labelled; nodata where
    nothing was predicted."""
    out = np.where(truth == IGNORE_INDEX, 2, np.where(pred == truth, 0, 1)).astype(np.uint8)
    out[pred == IGNORE_INDEX] = NODATA
    return out


def combine(evaluations: Sequence[Evaluation]) -> Evaluation:
    """One evaluation of several scenes: confusion matrices summed, chips and scenes pooled."""
    first = evaluations[0]
    return Evaluation(first.schema, sum(e.confusion for e in evaluations),
                      [c for e in evaluations for c in e.chips], [s for e in evaluations for s in e.scenes],
                      first.label_field)
