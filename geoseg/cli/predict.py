"""``geoseg predict``: its options made from their declarations in :mod:`geoseg.inference.options`."""

from __future__ import annotations

import click

from geoseg.cli._app import cli, model_option, overwrite_option, quiet_option, report_results
from geoseg.inference.options import PredictOptions, VectorOptions
from geoseg.inference.options import declared as options_of
from geoseg.progress import set_quiet


def _declared_options(command):
    """``geoseg predict``'s options, made from their declarations in :mod:`geoseg.inference.options`."""
    for cls in (VectorOptions, PredictOptions):
        for name, default, meta in reversed(options_of(cls)):
            if meta["flag"]:
                command = click.option(meta["flag"], name, default=default, help=meta["help"],
                                       show_default=meta["show_default"], **_click_type(meta))(command)
    return command


def _click_type(meta: dict) -> dict:
    kind, low = meta["kind"], meta["minimum"]
    if meta["choices"]:
        return {"type": click.Choice(list(meta["choices"]))}
    if kind == "flag":
        return {"is_flag": True}
    if kind == "int":
        return {"type": int if low is None else click.IntRange(int(low))}
    if kind == "float":
        return {"type": float if low is None else click.FloatRange(min=low)}
    if kind == "file":
        return {"type": click.Path(dir_okay=False)}
    return {"metavar": meta["metavar"]} if meta["metavar"] else {}


@cli.command()
@click.argument("scenes", nargs=-1, required=True, type=click.Path())
@click.option("--output", "-o", required=True, type=click.Path(),
              help="landcover.gpkg (polygons + class raster beside it) or landcover.tif (raster only). "
                   "Also .geojson, .shp, .fgb, .parquet. Several scenes (or a folder, or a glob): "
                   "region.gpkg or region.vrt, with one raster per scene in region_scenes/.")
@model_option
@click.option("--raster", type=click.Path(), default=None, help="Where to write the class GeoTIFF.")
@_declared_options
@overwrite_option
@click.option("--resume", is_flag=True,
              help="Complete an interrupted run of the same command, keeping its finished blocks.")
@quiet_option
def predict(scenes, output, model, raster, overwrite, resume, quiet, **declared) -> None:
    """Predict land cover of SCENES (one scene, several, a folder or a glob) into class GeoTIFFs and
    land-cover polygons."""
    from geoseg.inference.predict import predict as run_prediction
    from geoseg.inference.predict import scene_inputs

    set_quiet(quiet)
    declared["bands"] = _parse_bands(declared["bands"])
    options, vector = (cls(**{name: declared[name] for name, _, meta in options_of(cls) if meta["flag"]})
                       for cls in (PredictOptions, VectorOptions))
    found = scene_inputs(scenes)
    if len(found) > 1:
        from geoseg.inference.region import predict_region

        if raster:
            raise click.UsageError("--raster names one class raster; several scenes get one each in "
                                   "<output>_scenes/")
        region = predict_region(found, output, model, options=options, vector=vector, overwrite=overwrite,
                                resume=resume)
        report_results(rasters=region.rasters, mosaics=region.mosaics, vector=region.vector,
                       polygons=region.polygons)
        return
    outputs = run_prediction(found[0], output, model, raster=raster, options=options, vector=vector,
                             overwrite=overwrite, resume=resume)
    report_results(raster=outputs.raster, vector=outputs.vector, polygons=outputs.polygons,
                   extra=outputs.result.extra)


def _parse_bands(text: str | None) -> tuple[int | str, ...] | None:
    """Band numbers or band descriptions, comma-separated: ``3,2,1`` or ``B04,B03,B02``."""
    if not text:
        return None
    bands = tuple(int(b) if b.strip().lstrip("-").isdigit() else b.strip() for b in text.split(","))
    if any(b == "" for b in bands):
        raise click.BadParameter(f"expected band numbers or names like 3,2,1 or B04,B03,B02, got {text!r}",
                                 param_hint="--bands")
    return bands
