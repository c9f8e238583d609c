"""``geoseg predict``: a scene → a class GeoTIFF (and confidence / probabilities) → land-cover polygons.

The flow, a module a step: :func:`predict` checks every output path once and
loads the checkpoint once; :func:`predict_scene` lays output blocks on the
scene's one global chip grid (:mod:`geoseg.io.grid`) and schedules them on dask
(:mod:`geoseg.inference.schedule`); each block's chips run through the model and are
blended (:mod:`geoseg.inference.blocks`); finished blocks stream into resumable
partial rasters (:mod:`geoseg.inference.resume`) that become styled class rasters
(:mod:`geoseg.outputs.class_raster`); then the optional sieve and the polygons
(:mod:`geoseg.outputs.vectorize`, :mod:`geoseg.outputs.polygons`). No chip is computed
twice and the result does not depend on the block size or the number of workers.
"""

from __future__ import annotations

import contextlib
import math
import os
import shutil
import time
import warnings
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import rasterio
import shapely

from geoseg import __version__
from geoseg.data.model_input import sampled_copy
from geoseg.data.statistics import sample_band_statistics
from geoseg.errors import GeoSegWarning, InputError, OutputError
from geoseg.inference.blocks import GDAL_CACHE_MB, ModelRef
from geoseg.inference.options import (
    PROBABILITY_TYPES,
    SAMPLINGS,
    TTA_MODES,
    PredictOptions,
    VectorOptions,
    declared,
    described,
)
from geoseg.inference.resample import describe_sampling, model_scale, resampled_block
from geoseg.inference.resume import resumable_rasters
from geoseg.inference.schedule import (
    block_tasks,
    check_workers,
    dask_client,
    default_threads,
    local_processes,
    preload_model,
    run_blocks,
)
from geoseg.io.aoi import outside_error, read_area, touches_scene
from geoseg.io.atomic import check_not_input, check_output_path
from geoseg.io.fingerprint import file_identity
from geoseg.io.formats import RASTER_SUFFIXES, VECTOR_FORMATS, is_remote
from geoseg.io.grid import ChipGrid, GeoGrid, blocks, grid_blocks
from geoseg.io.output_lock import output_lock
from geoseg.io.raster import open_raster, resolve_bands
from geoseg.models.checkpoint import Checkpoint
from geoseg.models.defaults import resolve_model
from geoseg.models.engines import EngineChoice, select_engine
from geoseg.models.fields import checked_tile
from geoseg.models.tiling import computed_pixels, default_tile, overlap_for
from geoseg.outputs.class_raster import (
    class_raster_profile,
    finish_raster,
    probability_raster_profile,
    write_categories,
    write_class_metadata,
    write_raster_style,
)
from geoseg.outputs.measures import pixel_ground_area
from geoseg.outputs.stac import parse_time, stac_path, write_stac_item
from geoseg.progress import bar, say

__all__ = ["PredictOptions", "VectorOptions", "PredictResult", "PredictOutputs", "OutputPaths", "predict",
           "predict_scene", "output_paths"]

#: Side of the blocks in which probabilities predicted at the model's sampling are taken back to the scene.
RESAMPLE_BLOCK = 1024


@dataclass
class PredictResult:
    raster: Path
    grid: GeoGrid
    chips: int
    seconds: float
    extra: dict[str, Path] = field(default_factory=dict)
    engine: str = ""                # the engine that ran (e.g. onnx-fp32), as ``--engine auto`` chose it

    @property
    def megapixels_per_second(self) -> float:
        return self.grid.width * self.grid.height / 1e6 / max(self.seconds, 1e-9)


@dataclass
class PredictOutputs:
    raster: Path
    vector: Path | None
    polygons: int
    result: PredictResult
    summary: list[dict]


@dataclass(frozen=True)
class OutputPaths:
    """Where one prediction writes: the class raster, its sidecar rasters and the polygons."""

    raster: Path
    vector: Path | None = None
    extra: dict[str, Path] = field(default_factory=dict)  # 'confidence', 'probabilities'

    @property
    def rasters(self) -> dict[str, Path]:
        """The rasters by name: ``classes`` and the extras."""
        return {"classes": self.raster, **self.extra}


def output_paths(output: str | os.PathLike, raster: str | os.PathLike | None = None,
                 options: PredictOptions = PredictOptions(), overwrite: bool = False,
                 inputs: dict[str, str | os.PathLike | None] | None = None) -> OutputPaths:
    """Every path a prediction writes, each checked once: the folder exists and is writable, the file is not
    there unless ``overwrite``, and it is none of the ``inputs`` (name → path) even with ``overwrite``.

    ``output`` is a GeoTIFF (raster only) or a vector file. Beside a GeoPackage
    (whose style is inside it) the raster is ``<name>.tif``; beside the other
    formats, whose style is a ``<name>.qml`` sidecar, it is ``<name>_classes.tif``
    so that the two styles do not share a file. ``raster`` chooses another path.
    """
    output = Path(output)
    vector = None
    if output.suffix.lower() in RASTER_SUFFIXES:
        raster_path = output
    else:
        if output.suffix.lower() not in VECTOR_FORMATS:
            raise OutputError(f"cannot write {output}: use .tif or one of "
                              f"{', '.join(sorted(VECTOR_FORMATS))}")
        vector = output
        raster_path = Path(raster) if raster else _default_raster(vector)
        if raster_path.resolve() == vector.resolve():
            raise OutputError(f"the raster and vector outputs would both be {output}")
        if vector.suffix.lower() != ".gpkg" and raster_path.with_suffix(".qml") == vector.with_suffix(".qml"):
            raise OutputError(f"the raster {raster_path} and the polygons {vector} would share the QGIS "
                              f"style {vector.with_suffix('.qml')}; give the raster another name, e.g. "
                              f"--raster {_default_raster(vector)}")
        _check_output(vector, overwrite, inputs, output.with_name(f"{output.stem}_landcover{output.suffix}"))
    return _raster_paths(raster_path, vector, options, overwrite, inputs)


def _default_raster(vector: Path) -> Path:
    if vector.suffix.lower() == ".gpkg":
        return vector.with_suffix(".tif")
    return vector.with_name(f"{vector.stem}_classes.tif")


def _raster_paths(raster: Path, vector: Path | None, options: PredictOptions, overwrite: bool,
                  inputs: dict[str, str | os.PathLike | None] | None) -> OutputPaths:
    suggestion = raster.with_name(f"{raster.stem}_landcover{raster.suffix}")
    if vector is not None:
        suggestion = f"--raster {suggestion}"
    _check_output(raster, overwrite, inputs, suggestion)
    extra = {}
    for name, wanted in (("confidence", options.confidence), ("probabilities", options.probabilities)):
        if wanted:
            extra[name] = _check_output(_sidecar(raster, name), overwrite, inputs)
    for sidecar in [raster.with_suffix(".qml"), stac_path(raster)] + ([] if vector is None else [
            vector.with_suffix(".qml"), vector.with_name(f"{vector.stem}_summary.csv")]):
        check_not_input(sidecar, inputs or {})
    return OutputPaths(raster, vector, extra)


def _check_output(path: Path, overwrite: bool, inputs: dict[str, str | os.PathLike | None] | None,
                  suggestion: str | os.PathLike | None = None) -> Path:
    check_not_input(path, inputs or {}, suggestion)
    return check_output_path(path, overwrite)


def _sidecar(output: Path, name: str) -> Path:
    return output.with_name(f"{output.stem}_{name}{output.suffix}")


def predict(scene: str | os.PathLike, output: str | os.PathLike, model: str | os.PathLike | None = None, *,
            raster: str | os.PathLike | None = None, options: PredictOptions = PredictOptions(),
            vector: VectorOptions = VectorOptions(), overwrite: bool = False,
            resume: bool = False) -> PredictOutputs:
    """Predict ``scene`` into a class GeoTIFF and, unless ``output`` is a GeoTIFF, its polygons.

    ``model`` is a checkpoint (default: the one set with ``geoseg
    set-default-model``, else the latest training run's best). With
    ``output=landcover.gpkg`` the raster goes to ``landcover.tif`` beside it
    unless ``raster`` says otherwise. ``vector.min_area`` sieves the raster
    before vectorizing, so raster and polygons stay consistent.
    """
    checkpoint_path = resolve_model(model)
    paths = output_paths(output, raster, options, overwrite, {"input scene": scene, "model": checkpoint_path})
    with output_lock(paths.vector or paths.raster):  # one run at a time writes these outputs
        return _predict_outputs(scene, checkpoint_path, paths, options, vector, resume, model is None)


def _predict_outputs(scene: str | os.PathLike, checkpoint_path: Path, paths: OutputPaths,
                     options: PredictOptions, vector: VectorOptions, resume: bool,
                     implicit: bool) -> PredictOutputs:
    with bar(2, "load", unit="step") as loading:  # the model's fields (torch's import, where needed)
        choice = select_engine(checkpoint_path, options.engine, options.precision, options.tile)
        loading.update(1)
    checkpoint = choice.checkpoint
    if implicit:
        _name_the_implicit_model(checkpoint)
    result = _predict_rasters(scene, choice, paths, options, resume, vector.min_area)
    count, rows = 0, []
    if paths.vector is not None:
        from geoseg.outputs.polygons import summary_table, vectorize_blocks, write_polygons  # geopandas: late

        with bar(vectorize_blocks(paths.raster), "vectorize", unit="block") as pbar:
            polygons = write_polygons(paths.raster, paths.vector, checkpoint.classes, layer=vector.layer,
                                      simplify=vector.simplify, dissolve=vector.dissolve,
                                      confidence=result.extra.get("confidence"), checked=True,
                                      metadata={"checkpoint": str(checkpoint.path.resolve())},
                                      progress=pbar.update)
        count, rows = polygons.polygons, polygons.summary
        say(f"wrote {count} polygons → {paths.vector}")
        say(summary_table(rows, ground=result.grid.crs is not None))
    area = shapely.from_wkb(read_area(options.aoi, result.grid.crs)) if options.aoi else None
    write_stac_item(paths.raster, result.grid, checkpoint.classes, scene=str(scene),
                    checkpoint=checkpoint.path.resolve(), options=described(options, vector),
                    vector=paths.vector, extra=result.extra, area=area, acquired=options.acquired)
    return PredictOutputs(paths.raster, paths.vector, count, result, rows)


def scene_inputs(inputs) -> list[str]:
    """The scenes named by command-line inputs: files (a GeoTIFF, a VRT, a remote ``/vsi…`` path or URL
    each count as one scene), folders (their rasters) and glob patterns."""
    from geoseg.data.project import find_images

    scenes: list[str] = []
    for item in inputs:
        text = str(item)
        if is_remote(text) or Path(text).is_file():
            scenes.append(text)
        elif Path(text).is_dir() or any(ch in text for ch in "*?["):
            scenes += [str(p) for p in find_images(text)]
        else:
            scenes.append(text)  # a missing file: reported with the file's name when it is opened
    return list(dict.fromkeys(scenes))


def _name_the_implicit_model(ckpt: Checkpoint) -> None:
    """Without ``--model`` the model is the default or the latest run's: say which, and what it learnt."""
    manifest = ckpt.training.manifest
    manifest = manifest.resolve() if manifest else None
    if ckpt.data.get("synthetic"):
        warnings.warn(f"no --model given: using {ckpt.path}, which was trained on geoseg's synthetic sample "
                      "scenes, not on imagery like yours; train one on your data (geoseg init --images … "
                      "--labels … --label-field …, then geoseg train) and pass it with --model",
                      GeoSegWarning)
        return
    trained_on = f" (trained on {manifest})" if manifest else ""
    warnings.warn(f"no --model given: using {ckpt.path}{trained_on}; pass --model to choose one, or train on "
                  f"your own data first (geoseg train --config your.yaml)", GeoSegWarning)


def predict_scene(scene: str | os.PathLike, checkpoint: str | os.PathLike | Checkpoint,
                  output: str | os.PathLike, options: PredictOptions = PredictOptions(),
                  overwrite: bool = False, resume: bool = False,
                  min_area: float | None = None) -> PredictResult:
    """Predict ``scene`` with ``checkpoint`` (a path or a loaded checkpoint) into a class GeoTIFF at
    ``output`` (plus a QGIS ``.qml``).

    With ``options.confidence`` / ``options.probabilities`` the rasters
    ``<output>_confidence.tif`` / ``<output>_probabilities.tif`` are written too.
    An interrupted run keeps its finished blocks; ``resume=True`` completes them
    (see :mod:`geoseg.inference.resume`). ``min_area`` (m²) sieves the class raster.
    ``chips`` in the result counts this run's chips.
    """
    model_path = checkpoint.path if isinstance(checkpoint, Checkpoint) else checkpoint
    paths = _raster_paths(Path(output), None, options, overwrite, {"input scene": scene, "model": model_path})
    choice = select_engine(checkpoint, options.engine, options.precision, options.tile)
    return _predict_rasters(scene, choice, paths, options, resume, min_area)


def _predict_rasters(scene: str | os.PathLike, choice: EngineChoice, paths: OutputPaths,
                     options: PredictOptions, resume: bool, min_area: float | None = None) -> PredictResult:
    """The class raster (sieved to ``min_area`` m²) and its extras at ``paths`` (already checked), with the
    engine ``choice`` made for the model."""
    _check_options(options)
    ckpt = choice.checkpoint
    grid, bands = _inspect_scene(scene, _model_bands(options, ckpt), ckpt, polygons=paths.vector is not None,
                                 min_area=min_area)
    options = replace(options, bands=tuple(bands))
    area = _area(options, scene, grid)
    scale = model_scale(ckpt, grid, scene) if options.sampling == "model" else (1.0, 1.0)
    if scale == (1.0, 1.0):
        _check_resolution(scene, grid, ckpt)
    sampled = grid if scale == (1.0, 1.0) else grid.zoom(scale)
    tile = _tile(options, choice, sampled)
    overlap = _overlap(options, ckpt, tile)  # from the tile asked for, before it is resolved
    options = replace(options, tile=tile)
    passes = 1 if options.tta == "none" else 4  # flips: four forward passes a tile
    megapixels = passes * computed_pixels(sampled.width, sampled.height, options.tile, overlap) / 1e6
    with bar(2, "engine", unit="step") as loading:  # the engine: an export or int8 model made once
        loading.update(1)
        engine = choice.prepare(scene, megapixels)
        loading.update(1)
    scene_ref = str(scene) if is_remote(scene) else str(Path(scene).resolve())
    tags = {"geoseg_version": __version__, "checkpoint": str(ckpt.path.resolve()), "scene": scene_ref,
            "overlap": str(overlap), "chip_size": str(ckpt.chip_size), "tile": str(options.tile),
            "tta": options.tta}
    tags["engine"] = engine.name
    if scale != (1.0, 1.0):
        tags["sampling"] = f"{scale[0]:.6g} × {scale[1]:.6g} scene pixels per model pixel (x × y)"
    profiles = {name: (probability_raster_profile(grid, len(ckpt.classes), options.probabilities)
                       if name == "probabilities" else class_raster_profile(grid)) for name in paths.rasters}

    def prepare(ds, name: str) -> None:
        if name == "classes":
            write_class_metadata(ds, ckpt.classes, tags)

    def finalize(path: Path, name: str) -> None:
        if name == "classes":
            write_categories(path, ckpt.classes)

    start = time.perf_counter()
    fingerprint = _fingerprint(scene, ckpt, grid, bands, overlap, options, paths, engine.name)
    if scale == (1.0, 1.0):
        with rasterio.Env(GDAL_CACHEMAX=GDAL_CACHE_MB), resumable_rasters(
                paths.rasters, profiles, fingerprint, resume, prepare, finalize,
                options.commit_seconds) as writer:
            chips = _stream_blocks(writer, scene_ref, engine.checkpoint, grid, overlap, options, start, area)
    else:
        work = paths.raster.with_name(f".{paths.raster.stem}.geoseg-sampled")
        probabilities = _predict_sampled(scene, scene_ref, engine.checkpoint, grid, grid.zoom(scale), bands,
                                         overlap, options, work, resume, start, area, engine.name)
        chips = probabilities.chips
        with rasterio.Env(GDAL_CACHEMAX=GDAL_CACHE_MB), resumable_rasters(
                paths.rasters, profiles, {**fingerprint, "sampling": list(scale)}, False, prepare, finalize,
                options.commit_seconds) as writer:
            _resample_to_scene(writer, probabilities.raster, scene_ref, bands, ckpt, options, area)
        shutil.rmtree(work, ignore_errors=True)
    if min_area:
        _sieve(paths.raster, grid, min_area)
    for path in paths.rasters.values():  # sieved first: the rewrite keeps overviews and the COG layout
        finish_raster(path, options.cog)
    write_raster_style(paths.raster, ckpt.classes)
    result = PredictResult(paths.raster, grid, chips, time.perf_counter() - start, dict(paths.extra),
                           engine.name)
    say(f"predicted {grid.width}×{grid.height} px, {chips} chips in {result.seconds:.1f} s "
        f"({chips / max(result.seconds, 1e-9):.2f} chips/s, {result.megapixels_per_second:.2f} Mpx/s; engine "
        f"{engine.name}: {engine.reason}) → {paths.raster}")
    return result


def _fingerprint(scene: str | os.PathLike, ckpt: Checkpoint, grid: GeoGrid, bands: list[int], overlap: int,
                 options: PredictOptions, paths: OutputPaths, engine: str) -> dict:
    """What a run's partial rasters were made from (``engine``: the engine that ran, as ``auto`` chose it):
    ``--resume`` continues only the same."""
    resolved = {"overlap": overlap, "engine": engine, "bands": list(bands),
                "aoi": file_identity(options.aoi) if options.aoi else None}
    fingerprinted = {name: resolved.get(name, getattr(options, name))
                     for name, _, meta in declared(PredictOptions) if meta["resume"] == "fingerprint"}
    return {"scene": file_identity(scene), "checkpoint": file_identity(ckpt.path),
            "grid": [grid.width, grid.height, list(grid.transform)[:6],
                     grid.crs.to_wkt() if grid.crs else None],
            "options": {"chip": ckpt.chip_size, "outputs": sorted(paths.rasters), **fingerprinted},
            "geoseg_version": __version__}


@dataclass
class _Sampled:
    raster: Path   # class probabilities (float32) on the model's grid
    chips: int


def _predict_sampled(scene: str | os.PathLike, scene_ref: str, ckpt: Checkpoint, grid: GeoGrid,
                     sampled: GeoGrid, bands: list[int], overlap: int, options: PredictOptions, work: Path,
                     resume: bool, start: float, area: bytes | None, engine: str) -> _Sampled:
    """Class probabilities of ``scene`` read at the model's sampling, on that grid, in the folder ``work``
    (resumable like any prediction)."""
    say(f"reading {scene_ref} ({grid.width}×{grid.height} px) as the model was trained, "
        f"{describe_sampling(ckpt)}: {sampled.width}×{sampled.height} px")
    work.mkdir(exist_ok=True)
    copy = sampled_copy(scene, sampled, work, bands)
    inner = replace(options, confidence=False, probabilities="float32", cog=False,
                    bands=tuple(range(1, len(bands) + 1)))
    paths = OutputPaths(work / "classes.tif", None, {"probabilities": work / "probabilities.tif"})
    profiles = {"classes": class_raster_profile(sampled),
                "probabilities": probability_raster_profile(sampled, len(ckpt.classes), "float32")}
    fingerprint = _fingerprint(copy, ckpt, sampled, bands, overlap, inner, paths, engine)
    with rasterio.Env(GDAL_CACHEMAX=GDAL_CACHE_MB), resumable_rasters(
            paths.rasters, profiles, fingerprint, resume, lambda ds, name: None, None,
            options.commit_seconds) as writer:
        chips = _stream_blocks(writer, str(copy), ckpt, sampled, overlap, inner, start, area)
    return _Sampled(paths.extra["probabilities"], chips)


def _resample_to_scene(writer, probabilities: Path, scene_ref: str, bands: list[int], ckpt: Checkpoint,
                       options: PredictOptions, area: bytes | None) -> None:
    """Write the outputs block by block on the scene's own grid from the probabilities on the model's."""
    lut = ckpt.classes.index_to_code_lut()
    with open_raster(probabilities) as probs, open_raster(scene_ref) as src:
        windows = list(blocks(src.width, src.height, RESAMPLE_BLOCK))
        with bar(len(windows), "resample", unit="block") as pbar:
            for key, window in enumerate(windows):
                done = resampled_block(probs, src, bands, window, lut, options.confidence,
                                       options.probabilities, area)
                arrays = {"classes": done.codes, "confidence": done.confidence,
                          "probabilities": done.probabilities}
                writer.write((key, 0), window, {k: v for k, v in arrays.items() if v is not None})
                pbar.update(1)


def _stream_blocks(writer, scene_ref: str, ckpt: Checkpoint, grid: GeoGrid, overlap: int,
                   options: PredictOptions, start: float, area: bytes | None = None) -> int:
    """Run the blocks still to do on dask and write each as it finishes; the number of chips run."""
    layout = grid_blocks(ChipGrid.for_scene(grid.width, grid.height, options.tile, overlap),
                         max(1, options.block_chips))
    threads = default_threads(options.threads, options.workers)
    model = ModelRef.of(ckpt)  # what the block tasks carry: workers load the file, checked unchanged
    chips = 0
    with contextlib.ExitStack() as stack:
        in_process = not options.scheduler and not local_processes(options.workers, options.processes)
        preload = preload_model(ckpt, threads) if in_process else None
        client = stack.enter_context(dask_client(options.scheduler, options.workers, options.processes))
        if preload:
            preload.wait()
        if options.scheduler:
            check_workers(client, scene_ref, model.path)
        todo = sum(len(row) for row in layout) - len(writer.done)
        pbar = stack.enter_context(bar(todo, "predict", unit="block"))
        tasks = block_tasks(layout, grid, scene=scene_ref, checkpoint=model, chip=options.tile,
                            overlap=overlap, batch_size=options.batch_size, precision=options.precision,
                            tta=options.tta, threads=threads, bands=tuple(options.bands), area=area,
                            training_chip=ckpt.chip_size)
        finished = run_blocks(client, tasks, ckpt.classes.index_to_code_lut(), confidence=options.confidence,
                              probabilities=options.probabilities,
                              max_in_flight=2 * (options.workers or 1) + 2, skip=writer.done)
        for key, done in finished:
            arrays = {"classes": done.codes, "confidence": done.confidence,
                      "probabilities": done.probabilities}
            writer.write(key, done.window, {k: v for k, v in arrays.items() if v is not None})
            chips += done.chips
            pbar.update(1)
            pbar.set_postfix(chips_per_s=f"{chips / (time.perf_counter() - start):.1f}")
    return chips


def _model_bands(options: PredictOptions, ckpt: Checkpoint) -> list[int | str]:
    """The scene bands fed to the model, by number or description: ``--bands`` if given (one per model
    input), else the checkpoint's."""
    if not options.bands:
        return list(ckpt.bands)
    if len(options.bands) != len(ckpt.bands):
        raise InputError(f"--bands lists {len(options.bands)} band(s) but the model takes {len(ckpt.bands)} "
                         f"input band(s) (it was trained on bands {','.join(map(str, ckpt.bands))})")
    if any(isinstance(b, int) and b < 1 for b in options.bands):
        raise InputError(f"--bands are numbered from 1, got {','.join(map(str, options.bands))}")
    return list(options.bands)


def _inspect_scene(scene: str | os.PathLike, bands: list[int | str], ckpt: Checkpoint, polygons: bool = False,
                   min_area: float | None = None) -> tuple[GeoGrid, list[int]]:
    """The scene's grid and the numbers of ``bands`` in it, after checking them and warning about a missing
    CRS or values far from the training data. A scene placed by GCPs or RPCs alone cannot give polygons."""
    with open_raster(scene) as src:
        bands = resolve_bands(src, scene, bands)
        grid = GeoGrid.from_dataset(src)
        _check_value_range(src, scene, bands, ckpt)
    if not grid.has_geotransform and (polygons or min_area):
        target = grid.gcp_crs.to_string() if grid.gcp_crs else "EPSG:<your UTM zone>"
        method = "-tps" if grid.gcps else "-rpc"
        what = "polygons" if polygons else "--min-area"
        raise InputError(f"{scene} is georeferenced by {'ground control points' if grid.gcps else 'RPCs'} "
                         f"only, so {what} cannot be placed on the ground; orthorectify it first (gdalwarp "
                         f"{method} -t_srs {target} {scene} ortho.tif) or write only the class raster "
                         f"(-o {Path(str(scene)).stem}_landcover.tif), which keeps its GCPs and RPCs")
    if grid.crs is None and grid.has_geotransform:
        warnings.warn(f"{scene} has no CRS; the outputs will have none either", GeoSegWarning)
    return grid, bands


def _check_resolution(scene, grid: GeoGrid, ckpt: Checkpoint) -> None:
    """Warn when the scene's pixels, predicted as they are, are far from the size the model was trained
    on."""
    size = grid.ground_resolution
    if not ckpt.resolution or size is None:
        return
    if not 0.8 <= size / ckpt.resolution <= 1.25:
        warnings.warn(f"{scene} has {size:.3g} m pixels but the model was trained on {ckpt.resolution:.3g} m "
                      f"pixels; expect worse results (resample the scene to {ckpt.resolution:g} m)",
                      GeoSegWarning)


def _check_value_range(src, scene, bands: list[int], ckpt: Checkpoint) -> None:
    """Warn when the scene's values are far from those the model was normalised for (8 vs 16 bit,
    reflectance)."""
    stats = sample_band_statistics(src, bands)
    if stats is None:
        return
    means, stds = stats
    ref_mean, ref_std = np.asarray(ckpt.mean), np.maximum(np.asarray(ckpt.std), 1e-6)
    scale = (np.abs(means) + stds) / (np.abs(ref_mean) + ref_std)  # ~1 for the same kind of imagery
    if (np.abs(means - ref_mean) / ref_std > 4).any() or (scale > 10).any() or (scale < 0.1).any():
        warnings.warn(f"{scene}'s values (band means {', '.join(f'{m:.4g}' for m in means)}) are far from "
                      f"those the model was trained on (means {', '.join(f'{m:.4g}' for m in ckpt.mean)}); "
                      "check the bit depth and scaling of the imagery", GeoSegWarning)


def _area(options: PredictOptions, scene, grid: GeoGrid) -> bytes | None:
    """The area of interest in the scene's CRS, or None without ``--aoi``."""
    if not options.aoi:
        return None
    if not grid.has_geotransform:
        raise InputError(f"--aoi needs a scene placed by a transform, but {scene} is georeferenced by ground "
                         "control points or RPCs only; orthorectify it first")
    area = read_area(options.aoi, grid.crs)
    if grid.crs is not None and not touches_scene(area, grid):
        raise outside_error(options.aoi, str(scene), [grid])
    return area


def _check_options(options: PredictOptions) -> None:
    if options.tta not in TTA_MODES:
        raise InputError(f"--tta must be one of {', '.join(TTA_MODES)}, got {options.tta!r}")
    if options.sampling not in SAMPLINGS:
        raise InputError(f"--sampling must be one of {', '.join(SAMPLINGS)}, got {options.sampling!r}")
    if options.probabilities not in (None, *PROBABILITY_TYPES):
        raise InputError(f"--probabilities must be uint8 or float16, got {options.probabilities!r}")
    if options.acquired:
        parse_time(options.acquired)


def _overlap(options: PredictOptions, ckpt: Checkpoint, tile: int) -> int:
    """Pixels shared by neighbouring tiles of ``tile`` px (``options`` as asked)."""
    overlap = overlap_for(ckpt, options.tile, options.overlap)
    if not 0 <= overlap <= tile // 2:
        raise InputError(f"--overlap must be between 0 and {tile // 2} pixels for {tile} px chips")
    return overlap


def _tile(options: PredictOptions, choice: EngineChoice, grid: GeoGrid) -> int:
    """The side of the tiles the model predicts on ``grid`` (the scene at the model's sampling): ``--tile``,
    else the default of :func:`~geoseg.models.tiling.default_tile`. An exported ONNX model keeps its own
    (its input may be fixed at it), and so does a prediction restricted to an area of interest."""
    chip = choice.checkpoint.chip_size
    if options.tile is None:
        if choice.kind == "exported" or options.aoi:
            return chip
        return default_tile(choice.checkpoint, grid.width, grid.height, options.overlap)
    if options.tile == chip:
        return chip
    tile = checked_tile(options.tile)
    if choice.kind == "exported":
        raise InputError(f"--tile cannot change the {chip} px chips of an exported ONNX model "
                         f"({choice.checkpoint.path.name}); predict with its checkpoint instead")
    return tile


def _sieve(raster: Path, grid: GeoGrid, min_area: float) -> None:
    """Absorb regions under ``min_area`` m² into their neighbours, in the class raster itself; the area is
    counted in pixels of the ground size of the scene's central pixel."""
    area = pixel_ground_area(grid.transform, grid.crs, grid.width // 2, grid.height // 2)
    pixels = max(1, math.ceil(min_area / area))
    from geoseg.outputs.sieve import sieve_raster  # scipy: only with --min-area

    sieve_raster(raster, raster, pixels)
    say(f"removed regions under {min_area:g} m² ({pixels} px) from {raster}")
