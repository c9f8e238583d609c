"""Compare a predicted class raster with a label raster, block by block."""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from geoseg.classes import ClassSchema
from geoseg.errors import RasterError
from geoseg.grid import GeoGrid, blocks
from geoseg.labels import LabelReader
from geoseg.metrics import confusion_matrix, summarize
from geoseg.raster import open_raster


@dataclass
class Evaluation:
    confusion: np.ndarray
    metrics: dict[str, float]


def evaluate_raster(prediction: str | os.PathLike, truth: str | os.PathLike, schema: ClassSchema,
                    block: int = 2048) -> Evaluation:
    """Confusion matrix and scores of a class raster against labels on the same grid.

    Ignored classes and nodata in either raster are left out.
    """
    with open_raster(prediction) as pred:
        grid = GeoGrid.from_dataset(pred)
        labels = LabelReader(truth, grid, schema)
        lut = schema.code_to_index_lut()
        n = len(schema)
        cm = np.zeros((n, n), np.int64)
        for window in blocks(grid.width, grid.height, block):
            codes = pred.read(1, window=window)
            p = lut[codes]
            t = labels.read(window, (int(window.height), int(window.width))).copy()
            t[p == 255] = 255
            cm += confusion_matrix(t, np.where(p == 255, 0, p), n)
    if cm.sum() == 0:
        raise RasterError(f"{prediction} and {truth} share no labelled pixels to evaluate")
    return Evaluation(cm, summarize(cm, schema.names, schema.evaluated_indices))
