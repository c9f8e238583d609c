"""``geoseg evaluate``: score a class raster against its labels, or predict a data split and score it, then
write the report (metrics, plots, error maps, the worst chips).

:func:`evaluate` is the command as a library call; the scoring itself is in
:mod:`geoseg.evaluation.scoring` and the report in :mod:`geoseg.evaluation.report`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Mapping

from geoseg.errors import ConfigError, GeoSegError, InputError
from geoseg.evaluation.report import write_report
from geoseg.evaluation.scoring import Evaluation, combine, evaluate_raster
from geoseg.inference.predict import PredictOptions, predict_scene
from geoseg.io.atomic import atomic_write_text, check_not_input
from geoseg.io.classes import DEEPGLOBE, ClassSchema
from geoseg.io.manifest import SceneRecord, read_records
from geoseg.io.raster import open_raster
from geoseg.models.checkpoint import Checkpoint, load_checkpoint
from geoseg.models.defaults import resolve_model

#: What the report folder holds (see :func:`~geoseg.evaluation.report.write_report`), checked against the
#: inputs.
REPORT_FILES = ("error_map.tif", "error_map.qml", "metrics.json", "report.md", "confusion.png", "iou.png",
                "iou_curves.png", "worst.png", "worst.csv")


def evaluate(prediction: str | os.PathLike | None = None, truth: str | os.PathLike | None = None, *,
             model: str | os.PathLike | None = None, data: str | os.PathLike | None = None,
             split: str = "test", image: str | os.PathLike | None = None,
             out_dir: str | os.PathLike | None = None, worst: int = 8, class_name: str | None = None,
             chip: int = 256, bootstrap: int = 1000, json_path: str | os.PathLike | None = None,
             overwrite: bool = False, label_field: str = "class_id",
             truth_codes: Mapping[str, int] | None = None, tta: str = "none") -> dict[str, Any]:
    """Score ``prediction`` against ``truth``, or predict ``data``'s ``split`` with ``model`` and score it
    (with test-time augmentation ``tta``, as ``geoseg predict --tta``).

    ``truth_codes`` (class name → code) reads a reference raster that codes the classes its own way.
    Writes the report into ``out_dir`` (default ``<prediction>_evaluation`` beside the prediction, or
    :func:`model_report_folder` in the model's run folder with ``data``; never the current folder unasked) and
    returns what :func:`~geoseg.evaluation.report.write_report`
    returns (scores, intervals, files, worst chips). ``json_path`` gets a copy of the metrics.
    """
    inputs = {"prediction": prediction, "truth": truth, "scene": image, "model": model, "data": data}
    if json_path:
        check_not_input(json_path, inputs)
    if data:
        if prediction or truth:
            raise InputError("give either PREDICTION --truth LABELS or --model CKPT --data DATA, not both")
        checkpoint = load_checkpoint(resolve_model(model))
        out = Path(out_dir or model_report_folder(checkpoint.path, split))
        truth_schema = checkpoint.classes.with_codes(truth_codes) if truth_codes else None
        ev = evaluate_model(checkpoint, data, out, split, PredictOptions(tta=tta), chip=chip,
                            overwrite=overwrite, label_field=label_field, truth_schema=truth_schema)
    else:
        if not prediction or not truth:
            raise InputError("give PREDICTION --truth LABELS, or --model CKPT --data DATA")
        if tta != "none":
            raise InputError("--tta applies where geoseg evaluate predicts (--model CKPT --data DATA); "
                             "predict PREDICTION with geoseg predict --tta instead")
        checkpoint = _checkpoint_of(prediction, model)
        schema = checkpoint.classes if checkpoint else DEEPGLOBE
        out = Path(out_dir or Path(prediction).with_name(Path(prediction).stem + "_evaluation"))
        for name in REPORT_FILES:
            check_not_input(out / name, inputs)
        out.mkdir(parents=True, exist_ok=True)
        ev = evaluate_raster(prediction, truth, schema, chip, error_map=out / "error_map.tif", image=image,
                             label_field=label_field,
                             truth_schema=schema.with_codes(truth_codes) if truth_codes else None)
    run_metrics = checkpoint.path.with_name("metrics.json") if checkpoint else None
    result = write_report(ev, out, worst, class_name, run_metrics, bootstrap)
    if json_path:
        atomic_write_text(json_path, result["files"]["metrics"].read_text(encoding="utf-8"))
    return result


def model_report_folder(checkpoint: Path, split: str) -> Path:
    """Where ``evaluate --model CKPT --data`` reports by default: ``evaluation_<split>`` beside a run's
    ``best.ckpt``, ``<name>_evaluation_<split>`` beside any other checkpoint (``baseline.ckpt``,
    ``blend.ckpt``, …), so that the models of one run folder are evaluated side by side."""
    folder = f"evaluation_{split}"
    return checkpoint.parent / (folder if checkpoint.name == "best.ckpt" else f"{checkpoint.stem}_{folder}")


def evaluate_model(checkpoint: str | os.PathLike | Checkpoint, data: str | os.PathLike,
                   out_dir: str | os.PathLike, split: str = "test", options: PredictOptions | None = None,
                   chip: int = 512, overwrite: bool = False, label_field: str = "class_id",
                   truth_schema: ClassSchema | None = None) -> Evaluation:
    """Predict every scene of ``split`` in ``data`` (a manifest, DeepGlobe folder or run config) into
    ``out_dir/predictions`` and score them together (error maps in ``out_dir/error_maps``)."""
    records, label_field = _records(data, label_field)
    records = [r for r in records if r.split == split]
    if not records:
        raise ConfigError(f"{data} lists no '{split}' scenes to evaluate")
    ckpt = checkpoint if isinstance(checkpoint, Checkpoint) else load_checkpoint(checkpoint)
    folder = Path(out_dir) / "predictions"
    folder.mkdir(parents=True, exist_ok=True)
    results = []
    for rec in records:
        if rec.label is None:
            raise ConfigError(f"scene {rec.image} has no label to evaluate against")
        out = folder / f"{Path(rec.image).stem}.tif"
        for written in (out, folder.parent / "error_maps" / out.name):
            check_not_input(written, {"scene": rec.image, "truth": rec.label})
        predict_scene(rec.image, ckpt, out, options or PredictOptions(), overwrite=overwrite)
        (folder.parent / "error_maps").mkdir(exist_ok=True)
        error_map = folder.parent / "error_maps" / f"{Path(rec.image).stem}.tif"
        results.append(evaluate_raster(out, rec.label, ckpt.classes, chip, image=rec.image,
                                       error_map=error_map, label_field=label_field,
                                       truth_schema=truth_schema))
    return combine(results)


def _records(data: str | os.PathLike, label_field: str) -> tuple[list[SceneRecord], str]:
    """The scenes of a manifest, DeepGlobe folder or run config (whose ``label_field`` then applies)."""
    path = Path(data)
    if path.suffix.lower() in (".yaml", ".yml"):
        from geoseg.training.config import load_config
        cfg = load_config(path)
        return read_records(cfg.manifest_path, cfg.split_fractions, cfg.seed), cfg.label_field
    return read_records(path), label_field


def _checkpoint_of(prediction: str | os.PathLike, model: str | os.PathLike | None) -> Checkpoint | None:
    """``model``, else the checkpoint recorded in the prediction's tags, else the default model (if any)."""
    if model:
        return load_checkpoint(model)
    with open_raster(prediction) as src:
        recorded = src.tags().get("checkpoint")
    if recorded and Path(recorded).exists():
        return load_checkpoint(recorded)
    try:
        default = resolve_model(None)
    except GeoSegError:
        return None
    return load_checkpoint(default)

