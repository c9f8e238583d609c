"""Many scenes, one map: ``geoseg predict`` on several scenes, a folder or a glob.

Each scene is predicted into its own class raster in ``<output>_scenes/``; on a
dask cluster (``--workers N`` or ``--scheduler``) the workers do that
themselves, a scene per task, writing to the (shared) output folder, so no
pixel passes through the client. The scene rasters are joined by one mosaic VRT
(``<output>.vrt``) in the first scene's CRS, which opens styled in QGIS: scenes
in an equivalent CRS (however its WKT is written) join as they are, scenes in
another CRS are warped into it first (nearest neighbour), and a later scene is
drawn over an earlier one where they overlap. The polygons of the region are
vectorized from that one mosaic block by block, so a field that crosses a scene
edge is one polygon and every ground point lies in exactly one polygon;
``--min-area`` sieves the mosaic as a whole, so seams and overlaps keep the
minimum mapping unit (the per-scene rasters stay as predicted).
``--resume`` keeps the scenes already finished (recorded in a job file beside
the output) and completes the interrupted ones.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Sequence
from xml.sax.saxutils import escape

import rasterio

from geoseg import __version__
from geoseg.errors import InputError, OutputError
from geoseg.inference.options import declared
from geoseg.io.aoi import outside_error, read_area, touches_scene
from geoseg.io.atomic import atomic_write_text, check_output_path
from geoseg.io.classes import NODATA, ClassSchema
from geoseg.io.fingerprint import file_identity
from geoseg.io.formats import VECTOR_FORMATS
from geoseg.io.geodesy import same_crs
from geoseg.io.grid import GeoGrid
from geoseg.io.output_lock import output_lock
from geoseg.io.raster import open_raster
from geoseg.models.checkpoint import load_checkpoint
from geoseg.models.defaults import resolve_model
from geoseg.outputs.class_raster import write_raster_style
from geoseg.progress import bar, say


@dataclass
class RegionOutputs:
    rasters: list[Path]      # one class raster per scene
    mosaics: list[Path]      # one VRT per CRS
    vector: Path | None
    polygons: int
    chips: int
    seconds: float
    summary: list[dict]


def predict_region(scenes: Sequence[str | os.PathLike], output: str | os.PathLike,
                   model: str | os.PathLike | None = None, *, options=None, vector=None,
                   overwrite: bool = False, resume: bool = False) -> RegionOutputs:
    """Predict every scene of ``scenes`` and join them into one map: ``output`` is a vector file (polygons
    of the region, plus the mosaic ``<output>.vrt``) or a ``.vrt`` (rasters only)."""
    from geoseg.inference.predict import PredictOptions, VectorOptions, _name_the_implicit_model

    options = options or PredictOptions()
    vector = vector or VectorOptions()
    scenes = _scenes_in_area(scenes, options.aoi) if options.aoi else list(scenes)
    checkpoint_path = resolve_model(model)
    ckpt = load_checkpoint(checkpoint_path)
    if model is None:
        _name_the_implicit_model(ckpt)
    output = Path(output)
    suffix = output.suffix.lower()
    if suffix != ".vrt" and suffix not in VECTOR_FORMATS:
        raise OutputError(f"several scenes give one raster per scene, joined by a mosaic VRT: write -o "
                          f"{output.with_suffix('.vrt')} (rasters) or -o {output.with_suffix('.gpkg')} "
                          "(polygons as well)")
    vector_path = None if suffix == ".vrt" else check_output_path(output, overwrite or resume)
    mosaic = check_output_path(output.with_suffix(".vrt"), overwrite or resume)
    folder = output.with_name(f"{output.stem}_scenes")
    rasters = _scene_rasters(scenes, folder)
    state_path = output.with_name(f".{output.stem}.geoseg-job.json")
    fingerprint = {"checkpoint": file_identity(checkpoint_path), "scenes": [str(s) for s in scenes],
                   "options": {name: getattr(options, name) for name, _, meta in declared(type(options))
                               if meta["resume"] != "where"},  # a resumed job may run elsewhere
                   "aoi": file_identity(options.aoi) if options.aoi else None, "geoseg_version": __version__}
    with output_lock(output):  # one run at a time writes this region and its job file
        return _predict_region(scenes, output, checkpoint_path, ckpt, options, vector, overwrite, resume,
                               vector_path, mosaic, folder, rasters, state_path, fingerprint)


def _predict_region(scenes, output: Path, checkpoint_path: Path, ckpt, options, vector, overwrite: bool,
                    resume: bool, vector_path: Path | None, mosaic: Path, folder: Path, rasters: dict,
                    state_path: Path, fingerprint: dict) -> RegionOutputs:
    done = _finished_scenes(state_path, fingerprint) if resume else {}
    todo = [s for s in scenes if str(s) not in done or not rasters[str(s)].exists()]
    folder.mkdir(exist_ok=True)
    if not resume and not overwrite:
        for s in todo:
            check_output_path(rasters[str(s)], False)
    start = time.perf_counter()
    say(f"{len(scenes)} scenes → {folder}/" + (f" ({len(scenes) - len(todo)} done before)" if done else ""))
    for scene, chips in _run_scenes(todo, checkpoint_path, rasters, options, resume, None):
        done[str(scene)] = chips
        atomic_write_text(state_path, json.dumps({"fingerprint": fingerprint, "done": done}, default=str))
    chips = sum(done.values())
    classes = _in_one_crs([rasters[str(s)] for s in scenes], folder / "reprojected")
    mosaic = _write_mosaic(classes, mosaic, ckpt.classes)
    if vector.min_area:
        mosaic = _sieved_mosaic(mosaic, folder, vector.min_area, ckpt.classes)
    confidence = None
    if options.confidence:
        confidence = _write_mosaic(_in_one_crs([_confidence(rasters[str(s)]) for s in scenes],
                                              folder / "reprojected"), _numbered(mosaic, 0, "confidence"))
    mosaics = [mosaic]
    count, rows = 0, []
    if vector_path is not None:
        count, rows = _region_polygons(mosaic, confidence, vector_path, ckpt, vector)
        say(f"wrote {count} polygons → {vector_path}")
    state_path.unlink(missing_ok=True)
    seconds = time.perf_counter() - start
    say(f"predicted {len(scenes)} scenes, {chips} chips in {seconds:.1f} s → {', '.join(map(str, mosaics))}")
    return RegionOutputs([rasters[str(s)] for s in scenes], mosaics, vector_path, count, chips, seconds, rows)


def _scenes_in_area(scenes: Sequence[str | os.PathLike], aoi) -> list:
    """The scenes the area of interest touches (the others are left out with one line); none is an error
    that names the AOI and the scenes' footprint."""
    inside, grids = [], []
    for scene in scenes:
        with open_raster(scene) as src:
            grid = GeoGrid.from_dataset(src)
        grids.append(grid)
        if grid.crs is None or touches_scene(read_area(aoi, grid.crs), grid):
            inside.append(scene)
    if not inside:
        raise outside_error(aoi, f"the {len(grids)} scenes", [g for g in grids if g.crs is not None] or grids)
    if len(inside) < len(scenes):
        say(f"{len(scenes) - len(inside)} of {len(scenes)} scenes lie outside the area of interest {aoi}; "
            "leaving them out")
    return inside


def _scene_rasters(scenes: Sequence[str | os.PathLike], folder: Path) -> dict[str, Path]:
    """Each scene's class raster in ``folder``, named after the scene (numbered where names repeat)."""
    out, used = {}, set()
    for scene in scenes:
        stem, k = Path(str(scene)).stem, 1
        name = stem
        while name in used:
            k += 1
            name = f"{stem}_{k}"
        used.add(name)
        out[str(scene)] = folder / f"{name}.tif"
    return out


def _finished_scenes(state_path: Path, fingerprint: dict) -> dict[str, int]:
    """Scenes an interrupted run of the same job finished (scene → chips); none for another job."""
    try:
        state = json.loads(state_path.read_text())
    except (OSError, ValueError):
        return {}
    if json.loads(json.dumps(fingerprint, default=str)) != state.get("fingerprint"):
        say(f"{state_path} is of another job (scenes, checkpoint or options differ); starting over")
        return {}
    return dict(state.get("done", {}))


def _run_scenes(scenes: list, checkpoint: Path, rasters: dict[str, Path], options, resume: bool,
                min_area: float | None):
    """Predict each scene into its raster, yielding (scene, chips) as each finishes: here, one after the
    other, or on the dask workers, one scene per task (each worker writes its own raster)."""
    from geoseg.inference.schedule import check_workers, dask_client, default_threads, in_process

    if not scenes:
        return
    inline = replace(options, scheduler=None, workers=None, processes=None,
                     threads=default_threads(options.threads, options.workers))
    if in_process(options.scheduler, options.workers, options.processes):
        with bar(len(scenes), "scenes", unit="scene") as pbar:
            for scene in scenes:
                raster = str(rasters[str(scene)])
                yield scene, predict_one(str(scene), str(checkpoint), raster, inline, resume, min_area)
                pbar.update(1)
        return
    from distributed import as_completed

    with dask_client(options.scheduler, options.workers, options.processes) as client:
        if options.scheduler:
            check_workers(client, str(Path(scenes[0]).resolve()), str(checkpoint.resolve()))
        futures = {client.submit(predict_one, str(Path(s).resolve()), str(checkpoint.resolve()),
                                 str(rasters[str(s)].resolve()), inline, resume, min_area, pure=False): s
                   for s in scenes}
        with bar(len(scenes), "scenes", unit="scene") as pbar:
            for future in as_completed(futures):
                yield futures[future], future.result()
                pbar.update(1)


def predict_one(scene: str, checkpoint: str, raster: str, options, resume: bool,
                min_area: float | None = None) -> int:
    """Predict one scene into its class raster (on whichever machine runs it); the number of chips run."""
    from geoseg.inference.predict import predict_scene
    from geoseg.progress import set_quiet

    if _on_a_dask_worker():
        set_quiet(True)  # the client reports scenes as they finish
    return predict_scene(scene, checkpoint, raster, options, overwrite=True, resume=resume,
                         min_area=min_area).chips


def _on_a_dask_worker() -> bool:
    try:
        from distributed import get_worker
        get_worker()
    except (ImportError, ValueError):
        return False
    return True


def _in_one_crs(rasters: list[Path], folder: Path) -> list[Path]:
    """The class rasters of a region, in scene order, all in the first one's CRS: rasters in an equivalent
    CRS (pyproj's judgement, not the WKT's text) as they are, the others warped into it (nearest neighbour,
    at their own ground resolution) as tiled GeoTIFFs in ``folder``; so the region is one mosaic where each
    ground point has one class (the later scene's where scenes overlap)."""
    with open_raster(rasters[0]) as src:
        target = src.crs
    out = []
    for path in rasters:
        with open_raster(path) as src:
            if src.transform.b or src.transform.d:
                raise InputError(f"{path} is on a rotated grid, which a mosaic VRT cannot hold; predict it "
                                 "on its own")
            out.append(path if same_crs(src.crs, target) else _warped(src, path, target, folder))
    return out


def _warped(src, path: Path, crs, folder: Path) -> Path:
    """``src`` (a class raster) warped into ``crs`` by nearest neighbour, block by block, as
    ``folder/<name>``; colours and class names kept."""
    from rasterio.enums import Resampling
    from rasterio.vrt import WarpedVRT

    from geoseg.io.atomic import atomic_output

    folder.mkdir(parents=True, exist_ok=True)
    target = folder / path.name
    with WarpedVRT(src, crs=crs, resampling=Resampling.nearest, nodata=src.nodata) as vrt:
        profile = {"driver": "GTiff", "width": vrt.width, "height": vrt.height, "count": 1,
                   "dtype": src.dtypes[0], "crs": crs, "transform": vrt.transform, "nodata": src.nodata,
                   "tiled": True, "blockxsize": 256, "blockysize": 256, "compress": "deflate"}
        with atomic_output(target) as tmp, rasterio.open(tmp, "w", **profile) as dst:
            for _, window in vrt.block_windows(1):
                dst.write(vrt.read(1, window=window), 1, window=window)
            try:
                dst.write_colormap(1, src.colormap(1))
            except ValueError:  # a confidence raster has no palette
                pass
            dst.update_tags(**src.tags())
    return target


def _sieved_mosaic(mosaic: Path, folder: Path, min_area: float, schema: ClassSchema) -> Path:
    """The region's classes with regions under ``min_area`` m² absorbed by a neighbour across the whole
    region (seams and overlaps included), as ``folder/mosaic_sieved.tif``; the mosaic VRT then shows it.
    The area is counted in pixels of the ground size of the mosaic's central pixel."""
    import math

    from geoseg.outputs.measures import pixel_ground_area
    from geoseg.outputs.sieve import sieve_raster

    with open_raster(mosaic) as src:
        area = pixel_ground_area(src.transform, src.crs, src.width // 2, src.height // 2)
    pixels = max(1, math.ceil(min_area / area))
    sieved = folder / "mosaic_sieved.tif"
    sieve_raster(mosaic, sieved, pixels)
    say(f"removed regions under {min_area:g} m² ({pixels} px) across the region")
    return _write_mosaic([sieved], mosaic, schema)


def _numbered(path: Path, i: int, kind: str = "") -> Path:
    name = path.stem + (f"_{kind}" if kind else "") + (f"_{i + 1}" if i else "")
    return path.with_name(name + path.suffix)


def _confidence(raster: Path) -> Path:
    return raster.with_name(f"{raster.stem}_confidence{raster.suffix}")


def _write_mosaic(rasters: list[Path], path: Path, schema: ClassSchema | None = None) -> Path:
    """A VRT joining single-band uint8 ``rasters`` of one CRS at the finest pixel size among them (later
    rasters drawn over earlier ones where they overlap, their nodata transparent); with ``schema`` the
    class colours and names, and a QGIS style beside it."""
    infos = []
    for r in rasters:
        with open_raster(r) as src:
            infos.append((r, src.transform, src.width, src.height, src.crs))
    px = min(abs(t.a) for _, t, *_ in infos)
    py = min(abs(t.e) for _, t, *_ in infos)
    x0 = min(t.c for _, t, *_ in infos)
    y0 = max(t.f for _, t, *_ in infos)
    x1 = max(t.c + t.a * w for _, t, w, _, _ in infos)
    y1 = min(t.f + t.e * h for _, t, _, h, _ in infos)
    width, height = int(round((x1 - x0) / px)), int(round((y0 - y1) / py))
    sources = []
    for r, t, w, h, _ in infos:
        dst = ((t.c - x0) / px, (y0 - t.f) / py, w * abs(t.a) / px, h * abs(t.e) / py)
        sources.append(
            f'<ComplexSource><SourceFilename relativeToVRT="1">'
            f"{escape(os.path.relpath(Path(r).resolve(), path.resolve().parent))}</SourceFilename>"
            f'<SourceBand>1</SourceBand><SrcRect xOff="0" yOff="0" xSize="{w}" ySize="{h}"/>'
            f'<DstRect xOff="{dst[0]!r}" yOff="{dst[1]!r}" xSize="{dst[2]!r}" ySize="{dst[3]!r}"/>'
            f"<NODATA>{NODATA}</NODATA></ComplexSource>")
    style = ""
    if schema is not None:
        entries = "".join(f'<Entry c1="{r}" c2="{g}" c3="{b}" c4="{a}"/>'
                          for r, g, b, a in (schema.colormap()[v] for v in range(256)))
        names = [""] * (max(schema.codes) + 1)
        for c in schema.classes:
            names[c.code] = c.name
        style = (f"<ColorInterp>Palette</ColorInterp><ColorTable>{entries}</ColorTable>"
                 f"<CategoryNames>{''.join(f'<Category>{escape(n)}</Category>' for n in names)}"
                 "</CategoryNames>")
    crs = infos[0][4]
    srs = f"<SRS>{escape(crs.to_wkt())}</SRS>" if crs else ""
    xml = (f'<VRTDataset rasterXSize="{width}" rasterYSize="{height}">{srs}'
           f"<GeoTransform>{x0!r}, {px!r}, 0.0, {y0!r}, 0.0, {-py!r}</GeoTransform>"
           f'<VRTRasterBand dataType="Byte" band="1"><NoDataValue>{NODATA}</NoDataValue>{style}'
           f"{''.join(sources)}</VRTRasterBand></VRTDataset>\n")
    atomic_write_text(path, xml)
    if schema is not None:
        write_raster_style(path, schema)
    return path


def _region_polygons(mosaic: Path, confidence: Path | None, output: Path, ckpt,
                     vector) -> tuple[int, list[dict]]:
    """The polygons of the whole region, vectorized from its one mosaic: a field that crosses a scene edge
    is one polygon, and overlapping scenes give one polygon per ground point."""
    from geoseg.outputs.polygons import summary_table, vectorize_blocks, write_polygons

    meta = {"checkpoint": str(ckpt.path.resolve())}
    with bar(vectorize_blocks(mosaic), "vectorize", unit="block") as pbar:
        result = write_polygons(mosaic, output, ckpt.classes, layer=vector.layer, simplify=vector.simplify,
                                dissolve=vector.dissolve, confidence=confidence, checked=True, metadata=meta,
                                progress=pbar.update)
        count, rows = result.polygons, result.summary
    say(summary_table(rows))
    return count, rows
