"""End-to-end steps a user runs: predict a scene to a class raster and polygons."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

from geoseg.atomic import check_output_path
from geoseg.errors import OutputError
from geoseg.models import load_checkpoint
from geoseg.predict import PredictOptions, PredictResult, predict_scene
from geoseg.progress import bar, say
from geoseg.registry import resolve_model
from geoseg.vector_output import DEFAULT_LAYER, FORMATS, summary_table, write_polygons
from geoseg.grid import metres_per_unit
from geoseg.vectorize import sieve_raster

RASTER_SUFFIXES = (".tif", ".tiff")


@dataclass
class PredictOutputs:
    raster: Path
    vector: Path | None
    polygons: int
    result: PredictResult
    summary: list[dict]


@dataclass(frozen=True)
class VectorOptions:
    """Cartographic options for the polygons (and, for ``min_area``, the class raster too)."""

    min_area: float | None = None     # square metres: smaller regions are absorbed by a neighbour
    simplify: float | None = None     # tolerance in CRS units, topology kept between neighbours
    dissolve: bool = False            # one multipolygon per class
    layer: str = DEFAULT_LAYER


def predict_to_files(scene: str | os.PathLike, output: str | os.PathLike, model: str | os.PathLike | None = None,
                     raster: str | os.PathLike | None = None, options: PredictOptions = PredictOptions(),
                     vector: VectorOptions = VectorOptions(), overwrite: bool = False,
                     resume: bool = False) -> PredictOutputs:
    """Predict ``scene`` and write the class GeoTIFF and, unless ``output`` is a GeoTIFF, its polygons.

    With ``output=landcover.gpkg`` the raster goes to ``landcover.tif`` beside it
    unless ``raster`` says otherwise. ``vector.min_area`` sieves the raster
    before vectorizing, so raster and polygons stay consistent.
    """
    output = Path(output)
    checkpoint = resolve_model(model)
    vector_path = None
    if output.suffix.lower() in RASTER_SUFFIXES:
        raster_path = output
    else:
        if output.suffix.lower() not in FORMATS:
            raise OutputError(f"cannot write {output}: use .tif or one of {', '.join(sorted(FORMATS))}")
        vector_path = output
        raster_path = Path(raster) if raster else output.with_suffix(".tif")
        if raster_path.resolve() == vector_path.resolve():
            raise OutputError(f"the raster and vector outputs would both be {output}")
        check_output_path(vector_path, overwrite)
    check_output_path(raster_path, overwrite)
    result = predict_scene(scene, checkpoint, raster_path, options, overwrite=overwrite, resume=resume)
    schema = load_checkpoint(checkpoint).classes
    if vector.min_area:
        pixels = max(1, math.ceil(vector.min_area / _square_metres_per_pixel(result.grid)))
        sieve_raster(raster_path, raster_path, pixels)
        say(f"removed regions under {vector.min_area:g} m² ({pixels} px) from {raster_path}")
    count, rows = 0, []
    if vector_path is not None:
        with bar(None, "vectorize", unit="block") as pbar:
            res = write_polygons(raster_path, vector_path, schema, layer=vector.layer, simplify=vector.simplify,
                                 dissolve=vector.dissolve, confidence=result.extra.get("confidence"),
                                 overwrite=True, metadata={"checkpoint": str(Path(checkpoint).resolve())},
                                 progress=pbar.update)
        count, rows = res.polygons, res.summary
        say(f"wrote {count} polygons → {vector_path}")
        say(summary_table(rows))
    return PredictOutputs(raster_path, vector_path, count, result, rows)


def _square_metres_per_pixel(grid) -> float:
    if grid.crs is not None and grid.crs.is_geographic:
        raise OutputError("--min-area needs a projected CRS; this scene's CRS is geographic")
    return grid.pixel_area * metres_per_unit(grid.crs) ** 2
