"""Scene → class raster on dask: blocks on one global chip grid, streamed into a GeoTIFF.

:func:`predict_scene` lays output blocks on the scene's global chip grid, submits
one accumulate task and one finish task per block (see :mod:`geoseg.stitch`),
hands each block's overlap strips to its neighbours' finish tasks, and writes
finished blocks into the output GeoTIFF as they complete, with a bounded number
in flight, so memory holds a few blocks, never the scene. No chip is computed
twice and the result does not depend on the block size or the number of workers.
"""

from __future__ import annotations

import contextlib
import os
import threading
from itertools import islice
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import dask
import numpy as np
import rasterio
import torch

from geoseg import __version__
from geoseg.atomic import atomic_output, atomic_write_text, check_output_path
from geoseg.errors import GeoSegWarning, InputError
from geoseg.grid import ChipGrid, GeoGrid, GridBlock, grid_blocks, metres_per_unit
from geoseg.models import Checkpoint, load_checkpoint
from geoseg.progress import bar, say
from geoseg.raster import check_bands, class_raster_profile, copy_pam_sidecar, open_raster, write_class_metadata
from geoseg.stitch import (GDAL_CACHE_MB, BlockTask, FinishedBlock, accumulate_block, blend_weights,
                           finish_block, model_for, predict_probabilities)
from geoseg.style import category_aux_xml, raster_qml

__all__ = ["PredictOptions", "PredictResult", "predict_scene", "dask_client", "blend_weights", "model_for",
           "predict_probabilities"]

TTA_MODES = ("none", "flips")
QUIET_DASK = {"distributed.worker.profile.enabled": False,
              "distributed.admin.system-monitor.gil.enabled": False}


@dataclass(frozen=True)
class PredictOptions:
    """How to run prediction; ``None`` picks a default from the checkpoint or the machine."""

    overlap: int | None = None      # pixels shared by neighbouring chips (default: chip size / 8)
    block_chips: int = 4            # output block side, in chip strides
    batch_size: int | None = None   # chips per forward (default: 1 on CPU, where it is as fast, 8 on GPU)
    precision: str = "auto"         # auto | bf16 | fp32
    tta: str = "none"               # none | flips
    workers: int | None = None      # dask workers of the local cluster (default 1)
    threads: int | None = None      # torch threads per worker (default: cores / workers)
    processes: bool | None = None   # local workers as processes (default: only when workers > 1)
    scheduler: str | None = None    # address of an existing dask.distributed scheduler
    confidence: bool = False        # also write max probability (uint8 0–100)
    probabilities: str | None = None  # also write per-class probabilities: 'uint8' or 'float16'
    cog: bool = False               # write Cloud-Optimized GeoTIFFs


@dataclass
class PredictResult:
    raster: Path
    grid: GeoGrid
    chips: int
    seconds: float
    extra: dict[str, Path] = field(default_factory=dict)

    @property
    def megapixels_per_second(self) -> float:
        return self.grid.width * self.grid.height / 1e6 / max(self.seconds, 1e-9)


@contextlib.contextmanager
def dask_client(options: PredictOptions) -> Iterator:
    """A dask.distributed client: to ``options.scheduler`` or to a new local cluster."""
    from distributed import Client, LocalCluster

    if options.scheduler:
        try:
            client = Client(options.scheduler, timeout="20s")
        except OSError as exc:
            raise InputError(f"cannot reach the dask scheduler at {options.scheduler} ({exc})") from None
        with client:
            yield client
        return
    workers = options.workers or 1
    processes = options.processes if options.processes is not None else workers > 1
    dashboard = ":0" if _has_bokeh() else None
    # dask samples every worker thread's stack each 10 ms and watches the GIL each 1 ms; on a
    # machine whose cores all run the model that takes cycles from it, so both are off.
    with warnings.catch_warnings(), dask.config.set(QUIET_DASK):
        warnings.simplefilter("ignore")
        cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=processes,
                               dashboard_address=dashboard, silence_logs=50)
    try:
        with Client(cluster) as client:
            if dashboard and client.dashboard_link:
                say(f"dask dashboard: {client.dashboard_link}")
            yield client
    finally:
        cluster.close()


def _has_bokeh() -> bool:
    try:
        import bokeh  # noqa: F401  (the dashboard needs it)
    except ImportError:
        return False
    return True


def default_threads(options: PredictOptions) -> int:
    """torch threads per worker: the cores shared out among the local workers."""
    if options.threads:
        return options.threads
    return max(1, (os.cpu_count() or 1) // (options.workers or 1))


def _check_resolution(scene, grid: GeoGrid, ckpt: Checkpoint) -> None:
    """Warn when the scene's pixels are far from the size the model was trained on."""
    if not ckpt.resolution or grid.crs is None or grid.crs.is_geographic:
        return
    size = abs(grid.transform.a) * metres_per_unit(grid.crs)
    if not 0.8 <= size / ckpt.resolution <= 1.25:
        warnings.warn(f"{scene} has {size:g} m pixels but the model was trained on {ckpt.resolution:g} m pixels; "
                      f"expect worse results (resample the scene to {ckpt.resolution:g} m)", GeoSegWarning)


def _preload_model(checkpoint: str, options: PredictOptions) -> threading.Thread | None:
    """Load the model while the cluster starts when the worker is a thread of this process (it shares the cache)."""
    in_process = not options.scheduler and not (options.processes if options.processes is not None
                                                 else (options.workers or 1) > 1)
    if not in_process:
        return None
    thread = threading.Thread(target=_load_quietly, args=(checkpoint, default_threads(options)), daemon=True)
    thread.start()
    return thread


def _load_quietly(checkpoint: str, threads: int) -> None:
    try:
        model_for(checkpoint, threads)
    except Exception:  # the worker's own load reports it
        pass


def _sidecar(output: Path, name: str) -> Path:
    return output.with_name(f"{output.stem}_{name}{output.suffix}")


def predict_scene(scene: str | os.PathLike, checkpoint: str | os.PathLike, output: str | os.PathLike,
                  options: PredictOptions = PredictOptions(), overwrite: bool = False) -> PredictResult:
    """Predict ``scene`` with ``checkpoint`` into a class GeoTIFF at ``output`` (plus a QGIS ``.qml``).

    With ``options.confidence`` / ``options.probabilities`` the rasters
    ``<output>_confidence.tif`` / ``<output>_probabilities.tif`` are written too.
    """
    output = check_output_path(output, overwrite)
    ckpt = load_checkpoint(checkpoint)
    with open_raster(scene) as src:
        check_bands(src, scene, ckpt.bands)
        grid = GeoGrid.from_dataset(src)
    if grid.crs is None:
        warnings.warn(f"{scene} has no CRS; the outputs will have none either", GeoSegWarning)
    _check_resolution(scene, grid, ckpt)
    if options.tta not in TTA_MODES:
        raise InputError(f"--tta must be one of {', '.join(TTA_MODES)}, got {options.tta!r}")
    if options.probabilities not in (None, "uint8", "float16"):
        raise InputError(f"--probabilities must be uint8 or float16, got {options.probabilities!r}")
    chip = ckpt.chip_size
    overlap = chip // 8 if options.overlap is None else options.overlap
    if not 0 <= overlap <= chip // 2:
        raise InputError(f"--overlap must be between 0 and {chip // 2} pixels for this model's {chip} px chips")
    chip_grid = ChipGrid.for_scene(grid.width, grid.height, chip, overlap)
    layout = grid_blocks(chip_grid, max(1, options.block_chips))
    extras = {}
    if options.confidence:
        extras["confidence"] = check_output_path(_sidecar(output, "confidence"), overwrite)
    if options.probabilities:
        extras["probabilities"] = check_output_path(_sidecar(output, "probabilities"), overwrite)
    scene_ref = str(scene) if str(scene).startswith("/vsi") else str(Path(scene).resolve())
    tags = {"geoseg_version": __version__, "checkpoint": str(Path(checkpoint).resolve()),
            "overlap": str(overlap), "chip_size": str(chip), "tta": options.tta}
    n_blocks = sum(len(r) for r in layout)
    start = time.perf_counter()
    n_chips = 0
    with contextlib.ExitStack() as stack:
        stack.enter_context(rasterio.Env(GDAL_CACHEMAX=GDAL_CACHE_MB))
        tmp = stack.enter_context(atomic_output(output, overwrite=True))
        stack.callback(_write_categories, tmp, ckpt.classes)  # runs once the raster is closed
        dst = stack.enter_context(rasterio.open(tmp, "w", **class_raster_profile(grid)))
        write_class_metadata(dst, ckpt.classes, tags)
        side = {name: stack.enter_context(rasterio.open(
            stack.enter_context(atomic_output(path, overwrite=True)), "w", **_extra_profile(grid, name, options, ckpt)))
            for name, path in extras.items()}
        preload = _preload_model(str(Path(checkpoint).resolve()), options)
        client = stack.enter_context(dask_client(options))
        if preload:
            preload.join()
        pbar = stack.enter_context(bar(n_blocks, "predict", unit="block"))
        tasks = _block_tasks(layout, scene_ref, str(Path(checkpoint).resolve()), chip, overlap, grid,
                             options, default_threads(options))
        lut = ckpt.classes.index_to_code_lut()
        for done in _run(client, tasks, lut, options, max_in_flight=2 * (options.workers or 1) + 2):
            dst.write(done.codes, 1, window=done.window)
            if done.confidence is not None:
                side["confidence"].write(done.confidence, 1, window=done.window)
            if done.probabilities is not None:
                side["probabilities"].write(done.probabilities, window=done.window)
            n_chips += done.chips
            pbar.update(1)
            pbar.set_postfix(chips_per_s=f"{n_chips / (time.perf_counter() - start):.1f}")
    if options.cog:
        for path in [output, *extras.values()]:
            _to_cog(path)
    atomic_write_text(output.with_suffix(".qml"), raster_qml(ckpt.classes))
    result = PredictResult(output, grid, n_chips, time.perf_counter() - start, extras)
    say(f"predicted {grid.width}×{grid.height} px, {n_chips} chips in {result.seconds:.1f} s "
        f"({n_chips / max(result.seconds, 1e-9):.2f} chips/s, {result.megapixels_per_second:.2f} Mpx/s) → {output}")
    return result


def _write_categories(path: Path, schema) -> None:
    if path.exists():
        Path(str(path) + ".aux.xml").write_text(category_aux_xml(schema), encoding="utf-8")


def _extra_profile(grid: GeoGrid, name: str, options: PredictOptions, ckpt: Checkpoint) -> dict:
    profile = class_raster_profile(grid)
    if name == "probabilities":
        profile.update(count=len(ckpt.classes), interleave="band")
        if options.probabilities == "float16":
            profile.update(dtype="float16", nodata=float("nan"), predictor=1)
    return profile


def _to_cog(path: Path) -> None:
    """Rewrite a finished GeoTIFF as a Cloud-Optimized GeoTIFF (overviews, COG layout), atomically."""
    from rasterio.shutil import copy as rio_copy

    with atomic_output(path, overwrite=True) as tmp:
        with rasterio.open(path) as src:
            categorical = src.colorinterp[0].name == "palette"
        rio_copy(path, tmp, driver="COG", compress="DEFLATE",
                 overview_resampling="MODE" if categorical else "AVERAGE")
        copy_pam_sidecar(path, tmp)


def _block_tasks(layout: list[list[GridBlock]], scene: str, checkpoint: str, chip: int, overlap: int,
                 grid: GeoGrid, options: PredictOptions, threads: int) -> list[list[BlockTask]]:
    batch = options.batch_size or (8 if torch.cuda.is_available() else 1)
    tasks = []
    for row in layout:
        out_row = []
        for b in row:
            r1 = int(b.window.row_off + b.window.height)
            c1 = int(b.window.col_off + b.window.width)
            spill = (min(overlap, grid.height - r1), min(overlap, grid.width - c1))
            out_row.append(BlockTask(scene, checkpoint, b, chip, overlap, spill, batch,
                                     options.precision, options.tta, threads))
        tasks.append(out_row)
    return tasks


def _run(client, tasks: list[list[BlockTask]], lut: np.ndarray, options: PredictOptions,
         max_in_flight: int) -> Iterator[FinishedBlock]:
    """Submit accumulate → finish pairs in row-major order, at most ``max_in_flight`` unfinished.

    The client keeps only the futures of overlap strips still to be handed on;
    dask releases everything else as soon as it is consumed.
    """
    from distributed import as_completed

    strips: dict[tuple[int, int, str], object] = {}
    order = [(i, j) for i in range(len(tasks)) for j in range(len(tasks[i]))]
    n_cols = len(tasks[0]) if tasks else 0

    def submit(i: int, j: int):
        t = tasks[i][j]
        acc = client.submit(accumulate_block, t, pure=False)
        last_col, last_row = j == n_cols - 1, i == len(tasks) - 1
        for part, needed in (("right", not last_col), ("bottom", not last_row),
                             ("corner", not (last_col or last_row))):
            if needed:
                strips[(i, j, part)] = client.submit(getattr, acc, part, pure=False)
        left = strips.pop((i, j - 1, "right"), None)
        above = strips.pop((i - 1, j, "bottom"), None)
        diagonal = strips.pop((i - 1, j - 1, "corner"), None)
        return client.submit(finish_block, acc, t.block.window, lut, left, above, diagonal, options.confidence,
                             options.probabilities, pure=False)

    it = iter(order)
    first = [submit(i, j) for i, j in islice(it, max_in_flight)]
    if not first:
        return
    done = as_completed(first)
    for future in done:
        result = future.result()
        future.release()
        for i, j in islice(it, 1):
            done.add(submit(i, j))
        yield result
