"""End-to-end steps a user runs: predict a scene to a class raster and polygons."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from geoseg.atomic import check_output_path
from geoseg.errors import OutputError
from geoseg.models import load_checkpoint
from geoseg.predict import PredictOptions, PredictResult, predict_scene
from geoseg.progress import bar, say
from geoseg.registry import resolve_model
from geoseg.vectorize import DEFAULT_LAYER, vectorize_raster

RASTER_SUFFIXES = (".tif", ".tiff")


@dataclass
class PredictOutputs:
    raster: Path
    vector: Path | None
    polygons: int
    result: PredictResult


def predict_to_files(scene: str | os.PathLike, output: str | os.PathLike, model: str | os.PathLike | None = None,
                     raster: str | os.PathLike | None = None, options: PredictOptions = PredictOptions(),
                     layer: str = DEFAULT_LAYER, overwrite: bool = False) -> PredictOutputs:
    """Predict ``scene`` and write the class GeoTIFF and, unless ``output`` is a GeoTIFF, its polygons.

    With ``output=landcover.gpkg`` the raster goes to ``landcover.tif`` beside it
    unless ``raster`` says otherwise.
    """
    output = Path(output)
    checkpoint = resolve_model(model)
    vector = None
    if output.suffix.lower() in RASTER_SUFFIXES:
        raster_path = output
    else:
        vector = output
        raster_path = Path(raster) if raster else output.with_suffix(".tif")
        if raster_path.resolve() == vector.resolve():
            raise OutputError(f"the raster and vector outputs would both be {output}")
        check_output_path(vector, overwrite)
    check_output_path(raster_path, overwrite)
    result = predict_scene(scene, checkpoint, raster_path, options, overwrite=overwrite)
    count = 0
    if vector is not None:
        schema = load_checkpoint(checkpoint).classes
        with bar(None, "vectorize", unit="block") as pbar:
            count = vectorize_raster(raster_path, vector, schema, layer=layer, overwrite=overwrite,
                                     metadata={"checkpoint": str(Path(checkpoint).resolve())},
                                     progress=pbar.update)
        say(f"wrote {count} polygons → {vector}")
    return PredictOutputs(raster_path, vector, count, result)
