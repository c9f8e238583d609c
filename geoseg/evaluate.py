"""Scoring class rasters against labels: confusion matrices per chip, an error map, the worst chips.

:func:`evaluate_raster` compares one predicted class raster with its labels
(class ids, an RGB mask or polygons; a label raster on another grid is
reprojected onto the prediction's grid with nearest neighbour, with a warning),
chip by chip, so the worst chips can be listed and mIoU bootstrapped over
chips. :func:`evaluate_model` predicts a manifest's split first.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import rasterio
from rasterio.windows import Window

from geoseg.atomic import atomic_output, atomic_write_text
from geoseg.classes import IGNORE_INDEX, NODATA, ClassSchema, LandClass
from geoseg.errors import ConfigError, RasterError
from geoseg.grid import GeoGrid, blocks
from geoseg.labels import LabelReader
from geoseg.metrics import bootstrap_miou, class_report, confusion_matrix, iou_per_class, mean_iou
from geoseg.raster import class_raster_profile, open_raster, write_class_metadata

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
        """The ``k`` chips with the lowest IoU for ``class_name`` (default: the lowest mIoU), among chips where
        that class occurs in the truth or the prediction."""
        ev = self.schema.evaluated_indices
        if class_name is not None:
            if class_name not in self.schema.names:
                raise ConfigError(f"--class must be one of {', '.join(self.schema.names[i] for i in ev)}, "
                                  f"got {class_name!r}")
            i = self.schema.names.index(class_name)
            scored = [(c, float(iou_per_class(c.confusion)[i])) for c in self.chips]
        else:
            scored = [(c, mean_iou(c.confusion, ev)) for c in self.chips]
        scored = [(c, v) for c, v in scored if np.isfinite(v)]
        scored.sort(key=lambda cv: (cv[1], -int(cv[0].confusion.sum())))
        return scored[:k]


def evaluate_raster(prediction: str | os.PathLike, truth: str | os.PathLike, schema: ClassSchema,
                    chip: int = 512, error_map: str | os.PathLike | None = None,
                    image: str | os.PathLike | None = None) -> Evaluation:
    """Confusion matrices (per chip and in all) of a class raster against its labels.

    Ignored classes and nodata in either raster are left out. With
    ``error_map`` a GeoTIFF on the prediction's grid marks each pixel correct,
    wrong or not labelled (with a colour table and category names).
    ``image`` is the scene the prediction was made from (default: the
    ``scene`` tag geoseg writes), used for galleries.
    """
    lut = schema.code_to_index_lut()
    n = len(schema)
    chips: list[ChipScore] = []
    with open_raster(prediction) as pred:
        grid = GeoGrid.from_dataset(pred)
        labels = LabelReader(truth, grid, schema, align=True)
        scene = str(image) if image else pred.tags().get("scene")
        writer = _ErrorMapWriter(error_map, grid) if error_map else None
        try:
            for window in blocks(grid.width, grid.height, chip):
                p = lut[pred.read(1, window=window)]
                t = labels.read(window, (int(window.height), int(window.width))).copy()
                t[p == IGNORE_INDEX] = IGNORE_INDEX
                cm = confusion_matrix(t, np.where(p == IGNORE_INDEX, 0, p), n)
                chips.append(ChipScore(str(prediction), str(truth), scene, window, cm))
                if writer:
                    writer.write(window, p, t)
        except BaseException:
            if writer:
                writer.abort()
            raise
        if writer:
            writer.close()
    total = sum(c.confusion for c in chips)
    if total.sum() == 0:
        raise RasterError(f"{prediction} and {truth} share no labelled pixels to evaluate")
    return Evaluation(schema, total, chips, [total])


def combine(evaluations: Sequence[Evaluation]) -> Evaluation:
    """One evaluation of several scenes: confusion matrices summed, chips and scenes pooled."""
    first = evaluations[0]
    return Evaluation(first.schema, sum(e.confusion for e in evaluations),
                      [c for e in evaluations for c in e.chips], [s for e in evaluations for s in e.scenes])


def evaluate_model(checkpoint: str | os.PathLike, data: str | os.PathLike, out_dir: str | os.PathLike,
                   split: str = "test", options=None, chip: int = 512, overwrite: bool = False) -> Evaluation:
    """Predict every scene of ``split`` in ``data`` (a manifest, DeepGlobe folder or run config) into
    ``out_dir/predictions`` and score them together (error maps in ``out_dir/error_maps``)."""
    from geoseg.data import read_records
    from geoseg.models import load_checkpoint
    from geoseg.predict import PredictOptions, predict_scene

    records = [r for r in _records(data, read_records) if r.split == split]
    if not records:
        raise ConfigError(f"{data} lists no '{split}' scenes to evaluate")
    schema = load_checkpoint(checkpoint).classes
    folder = Path(out_dir) / "predictions"
    folder.mkdir(parents=True, exist_ok=True)
    results = []
    for rec in records:
        if rec.label is None:
            raise ConfigError(f"scene {rec.image} has no label to evaluate against")
        out = folder / f"{Path(rec.image).stem}.tif"
        predict_scene(rec.image, checkpoint, out, options or PredictOptions(), overwrite=overwrite)
        (folder.parent / "error_maps").mkdir(exist_ok=True)
        results.append(evaluate_raster(out, rec.label, schema, chip, image=rec.image,
                                       error_map=folder.parent / "error_maps" / f"{Path(rec.image).stem}.tif"))
    return combine(results)


def _records(data: str | os.PathLike, read_records):
    path = Path(data)
    if path.suffix.lower() in (".yaml", ".yml"):
        from geoseg.config import load_config
        cfg = load_config(path)
        return read_records(cfg.manifest_path, cfg.split_fractions, cfg.seed)
    return read_records(path)


class _ErrorMapWriter:
    """correct / wrong / not labelled per pixel, streamed window by window into a paletted GeoTIFF."""

    def __init__(self, path: str | os.PathLike, grid: GeoGrid):
        from geoseg.style import category_aux_xml, raster_qml

        self.path = Path(path)
        self._atomic = atomic_output(self.path)
        self.tmp = self._atomic.__enter__()
        self.ds = rasterio.open(self.tmp, "w", **class_raster_profile(grid))
        write_class_metadata(self.ds, ERROR_CLASSES, {"content": "prediction errors"})
        self._aux, self._qml = category_aux_xml(ERROR_CLASSES), raster_qml(ERROR_CLASSES)

    def write(self, window: Window, pred: np.ndarray, truth: np.ndarray) -> None:
        out = np.where(truth == IGNORE_INDEX, 2, np.where(pred == truth, 0, 1)).astype(np.uint8)
        out[pred == IGNORE_INDEX] = NODATA
        self.ds.write(out, 1, window=window)

    def close(self) -> None:
        self.ds.close()
        Path(str(self.tmp) + ".aux.xml").write_text(self._aux, encoding="utf-8")
        self._atomic.__exit__(None, None, None)
        atomic_write_text(self.path.with_suffix(".qml"), self._qml)

    def abort(self) -> None:
        self.ds.close()
        try:
            self._atomic.__exit__(RuntimeError, RuntimeError("aborted"), None)
        except RuntimeError:
            pass
