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
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import dask
import numpy as np
import rasterio
from rasterio.windows import Window
import torch

from geoseg import __version__
from geoseg.atomic import atomic_output, atomic_write_text, check_output_path
from geoseg.errors import GeoSegWarning, InputError
from geoseg.grid import ChipGrid, GeoGrid, GridBlock, grid_blocks, metres_per_unit
from geoseg.models import Checkpoint, load_checkpoint
from geoseg.progress import bar, say
from geoseg.raster import (check_bands, class_raster_profile, copy_pam_sidecar, open_raster, read_errors,
                           write_class_metadata)
from geoseg.resume import COMMIT_SECONDS, file_fingerprint, resumable_rasters
from geoseg.stitch import (GDAL_CACHE_MB, BlockTask, FinishedBlock, access_problem, accumulate_block, blend_weights,
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
    bands: tuple[int, ...] | None = None  # scene bands for the model's inputs (default: the checkpoint's)
    commit_seconds: float = COMMIT_SECONDS  # how often finished blocks are committed for --resume


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
    processes = _local_processes(options)
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


def _local_processes(options: PredictOptions) -> bool:
    """Whether the local cluster's workers are processes (default: only when there are several)."""
    return options.processes if options.processes is not None else (options.workers or 1) > 1


def _preload_model(checkpoint: str, options: PredictOptions) -> threading.Thread | None:
    """Load the model while the cluster starts when the worker is a thread of this process (it shares the cache)."""
    if options.scheduler or _local_processes(options):
        return None
    thread = threading.Thread(target=_load_quietly, args=(checkpoint, default_threads(options)), daemon=True)
    thread.start()
    return thread


def _load_quietly(checkpoint: str, threads: int) -> None:
    try:
        model_for(checkpoint, threads)
    except Exception:  # the worker's own load reports it
        pass


def _model_bands(options: PredictOptions, ckpt: Checkpoint) -> list[int]:
    """The scene bands fed to the model: ``--bands`` if given (one per model input), else the checkpoint's."""
    if not options.bands:
        return list(ckpt.bands)
    if len(options.bands) != len(ckpt.bands):
        raise InputError(f"--bands lists {len(options.bands)} band(s) but the model takes {len(ckpt.bands)} "
                         f"input band(s) (it was trained on bands {','.join(map(str, ckpt.bands))})")
    if min(options.bands) < 1:
        raise InputError(f"--bands are numbered from 1, got {','.join(map(str, options.bands))}")
    return list(options.bands)


def _check_value_range(src, scene, bands: list[int], ckpt: Checkpoint, size: int = 256) -> None:
    """Warn when the scene's values are far from those the model was normalised for (8 vs 16 bit, reflectance)."""
    stats = _sample_stats(src, bands, size)
    if stats is None:
        return
    means, stds = stats
    ref_mean, ref_std = np.asarray(ckpt.mean), np.maximum(np.asarray(ckpt.std), 1e-6)
    scale = (np.abs(means) + stds) / (np.abs(ref_mean) + ref_std)  # ~1 for the same kind of imagery
    if (np.abs(means - ref_mean) / ref_std > 4).any() or (scale > 10).any() or (scale < 0.1).any():
        warnings.warn(f"{scene}'s values (band means {', '.join(f'{m:.4g}' for m in means)}) are far from those "
                      f"the model was trained on (means {', '.join(f'{m:.4g}' for m in ckpt.mean)}); check the bit "
                      f"depth and scaling of the imagery", GeoSegWarning)


def _sample_stats(src, bands: list[int], size: int) -> tuple[np.ndarray, np.ndarray] | None:
    """Per-band mean and std of valid pixels in 9 small windows spread over the scene (cheap on any size)."""
    samples = []
    w, h = min(size, src.width), min(size, src.height)
    for fy in (0.2, 0.5, 0.8):
        for fx in (0.2, 0.5, 0.8):
            window = Window(int((src.width - w) * fx), int((src.height - h) * fy), w, h)
            with read_errors(src):
                data = src.read(bands, window=window, masked=True).astype(np.float64)
            valid = ~np.ma.getmaskarray(data).any(axis=0)
            samples.append(data.filled(0)[:, valid])
    values = np.concatenate(samples, axis=1)
    if not values.shape[1]:
        return None
    return values.mean(axis=1), values.std(axis=1)


def _check_workers(client, scene: str, checkpoint: str) -> None:
    """On an external cluster, every worker must read the scene and the checkpoint itself."""
    for worker, problem in sorted(client.run(access_problem, scene, checkpoint).items()):
        if problem:
            raise InputError(f"dask worker {worker} {problem}; the scene and the checkpoint must be reachable "
                             f"from every worker (a shared path, or a /vsicurl/ or /vsis3/ URL for the scene)")


def _sidecar(output: Path, name: str) -> Path:
    return output.with_name(f"{output.stem}_{name}{output.suffix}")


def predict_scene(scene: str | os.PathLike, checkpoint: str | os.PathLike, output: str | os.PathLike,
                  options: PredictOptions = PredictOptions(), overwrite: bool = False,
                  resume: bool = False) -> PredictResult:
    """Predict ``scene`` with ``checkpoint`` into a class GeoTIFF at ``output`` (plus a QGIS ``.qml``).

    With ``options.confidence`` / ``options.probabilities`` the rasters
    ``<output>_confidence.tif`` / ``<output>_probabilities.tif`` are written too.
    An interrupted run keeps its finished blocks; ``resume=True`` completes them
    (see :mod:`geoseg.resume`). ``chips`` in the result counts this run's chips.
    """
    output = check_output_path(output, overwrite)
    ckpt = load_checkpoint(checkpoint)
    bands = _model_bands(options, ckpt)
    with open_raster(scene) as src:
        check_bands(src, scene, bands)
        grid = GeoGrid.from_dataset(src)
        _check_value_range(src, scene, bands, ckpt)
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
    ckpt_ref = str(Path(checkpoint).resolve())
    tags = {"geoseg_version": __version__, "checkpoint": ckpt_ref, "scene": scene_ref,
            "overlap": str(overlap), "chip_size": str(chip), "tta": options.tta}
    n_blocks = sum(len(r) for r in layout)
    finals = {"classes": output, **extras}
    profiles = {"classes": class_raster_profile(grid),
                **{name: _extra_profile(grid, name, options, ckpt) for name in extras}}
    fingerprint = {"scene": file_fingerprint(scene), "checkpoint": file_fingerprint(checkpoint),
                   "options": {"chip": chip, "overlap": overlap, "block_chips": options.block_chips,
                               "batch_size": options.batch_size, "precision": options.precision,
                               "tta": options.tta, "outputs": sorted(finals), "bands": list(bands),
                               "probabilities": options.probabilities},
                   "geoseg_version": __version__}

    def prepare(ds, name: str) -> None:
        if name == "classes":
            write_class_metadata(ds, ckpt.classes, tags)

    def finalize(path: Path, name: str) -> None:
        if name == "classes":
            _write_categories(path, ckpt.classes)

    start = time.perf_counter()
    n_chips = 0
    with contextlib.ExitStack() as stack:
        stack.enter_context(rasterio.Env(GDAL_CACHEMAX=GDAL_CACHE_MB))
        writer = stack.enter_context(resumable_rasters(finals, profiles, fingerprint, resume, prepare, finalize,
                                                       options.commit_seconds))
        preload = _preload_model(ckpt_ref, options)
        client = stack.enter_context(dask_client(options))
        if preload:
            preload.join()
        if options.scheduler:
            _check_workers(client, scene_ref, ckpt_ref)
        pbar = stack.enter_context(bar(n_blocks - len(writer.done), "predict", unit="block"))
        tasks = _block_tasks(layout, scene_ref, ckpt_ref, chip, overlap, grid,
                             options, default_threads(options))
        lut = ckpt.classes.index_to_code_lut()
        for key, done in _run(client, tasks, lut, options, max_in_flight=2 * (options.workers or 1) + 2,
                              skip=writer.done):
            arrays = {"classes": done.codes, "confidence": done.confidence, "probabilities": done.probabilities}
            writer.write(key, done.window, {k: v for k, v in arrays.items() if v is not None})
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
                                     options.precision, options.tta, threads, tuple(options.bands or ())))
        tasks.append(out_row)
    return tasks


def _run(client, tasks: list[list[BlockTask]], lut: np.ndarray, options: PredictOptions, max_in_flight: int,
         skip: set[tuple[int, int]] = frozenset()) -> Iterator[tuple[tuple[int, int], FinishedBlock]]:
    """Submit accumulate → finish pairs in row-major order, at most ``max_in_flight`` unfinished.

    Blocks in ``skip`` (already on disk) are not finished again; their chips run
    only where a neighbour still to be finished needs their overlap strips. The
    client keeps only the futures of strips still to be handed on; dask
    releases everything else as soon as it is consumed.
    """
    from distributed import as_completed

    strips: dict[tuple[int, int, str], object] = {}
    n_rows, n_cols = len(tasks), len(tasks[0]) if tasks else 0
    order = iter([(i, j) for i in range(n_rows) for j in range(n_cols)])
    keys = {}

    def pending(i: int, j: int) -> bool:
        return i < n_rows and j < n_cols and (i, j) not in skip

    def submit(i: int, j: int):
        """Block (i, j)'s tasks; its finish future, or None for a block already on disk."""
        needs = {"right": pending(i, j + 1), "bottom": pending(i + 1, j), "corner": pending(i + 1, j + 1)}
        if (i, j) in skip and not any(needs.values()):
            return None
        t = tasks[i][j]
        acc = client.submit(accumulate_block, t, pure=False)
        for part, needed in needs.items():
            if needed:
                strips[(i, j, part)] = client.submit(getattr, acc, part, pure=False)
        if (i, j) in skip:
            return None
        left = strips.pop((i, j - 1, "right"), None)
        above = strips.pop((i - 1, j, "bottom"), None)
        diagonal = strips.pop((i - 1, j - 1, "corner"), None)
        future = client.submit(finish_block, acc, t.block.window, lut, left, above, diagonal, options.confidence,
                               options.probabilities, pure=False)
        keys[future.key] = (i, j)
        return future

    def next_finishes(n: int) -> list:
        out = []
        for i, j in order:
            future = submit(i, j)
            if future is not None:
                out.append(future)
                if len(out) == n:
                    break
        return out

    first = next_finishes(max_in_flight)
    if not first:
        return
    done = as_completed(first)
    for future in done:
        result = future.result()
        key = keys.pop(future.key)
        future.release()
        for f in next_finishes(1):
            done.add(f)
        yield key, result
