"""geoseg: land-cover segmentation for satellite and aerial imagery, from GeoTIFF scenes to styled class
rasters and polygons that open in QGIS.

The public API, what a notebook imports::

    import geoseg

    cfg = geoseg.load_config("pipelines/sample.yaml")
    run = geoseg.train(cfg)
    geoseg.predict("scene.tif", "landcover.gpkg", run.best)
    geoseg.evaluate("landcover.tif", "labels.tif")

The package is cut by concern, in the order data flows, each layer importing only those below it:
:mod:`geoseg.io` (reading, grids, classes, labels, manifests, safe outputs), :mod:`geoseg.outputs` (class
rasters, polygons, measures, styles, STAC), :mod:`geoseg.data` (training chips and samplers, the model-input
contract), :mod:`geoseg.models` (checkpoints, engines, export), :mod:`geoseg.training`,
:mod:`geoseg.inference`, :mod:`geoseg.evaluation` and :mod:`geoseg.cli`. Names are imported on first use, so
``import geoseg`` stays light (no torch until a model is needed).
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

#: Public name → the module that defines it.
_PUBLIC = {
    "train": "geoseg.training.trainer",
    "train_baseline": "geoseg.training.trainer",
    "RunConfig": "geoseg.training.config",
    "load_config": "geoseg.training.config",
    "parse_config": "geoseg.training.config",
    "predict": "geoseg.inference.predict",
    "predict_scene": "geoseg.inference.predict",
    "PredictOptions": "geoseg.inference.predict",
    "VectorOptions": "geoseg.inference.predict",
    "predict_region": "geoseg.inference.region",
    "evaluate": "geoseg.evaluation.evaluate",
    "export": "geoseg.models.export",
    "load_model": "geoseg.models.checkpoint",
    "Checkpoint": "geoseg.models.checkpoint",
    "ClassSchema": "geoseg.io.classes",
    "GeoGrid": "geoseg.io.grid",
    "GeoSegError": "geoseg.errors",
    "make_sample_data": "geoseg.data.sample_data",
}
#: Public names whose definition has another name in its module.
_ALIASES = {"export": "export_onnx", "load_model": "load_checkpoint"}

__all__ = sorted(_PUBLIC)


def __getattr__(name: str) -> Any:
    if name not in _PUBLIC:
        raise AttributeError(f"module 'geoseg' has no attribute {name!r}")
    value = getattr(importlib.import_module(_PUBLIC[name]), _ALIASES.get(name, name))
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
