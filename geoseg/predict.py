"""Scene → class raster: blocks on dask, chips on one global grid, smooth blending, streamed output.

The scene is covered by one global :class:`~geoseg.grid.ChipGrid`. Output
blocks are aligned to it and each computes exactly the chips whose origin lies
in its cells (every chip once), accumulating weighted class probabilities over
its own pixels plus the overlap its last chips reach into the next blocks. That
overlap is handed to the neighbours (right, below, diagonal), which add it before
taking the argmax. The class raster therefore does not depend on the block size
or the number of workers, and no chip is computed twice. Finished blocks are
written into the output GeoTIFF as they complete, with a bounded number in
flight, so memory holds a few blocks, never the scene.
"""

from __future__ import annotations

import contextlib
import functools
import os
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import dask
import numpy as np
import rasterio
import torch
from rasterio.windows import Window

from geoseg import __version__
from geoseg.atomic import atomic_output, atomic_write_text, check_output_path
from geoseg.classes import NODATA
from geoseg.errors import InputError, RasterError
from geoseg.grid import ChipGrid, GeoGrid, GridBlock, grid_blocks
from geoseg.models import Checkpoint, autocast_dtype, default_device, load_checkpoint
from geoseg.progress import bar, say
from geoseg.raster import check_bands, class_raster_profile, open_raster, read_padded, write_class_metadata
from geoseg.style import category_aux_xml, raster_qml

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


@dataclass(frozen=True)
class BlockTask:
    """Everything a worker needs to predict the chips of one output block."""

    scene: str
    checkpoint: str
    block: GridBlock
    chip: int
    overlap: int
    spill: tuple[int, int]          # rows, cols of overlap handed to the next blocks (clipped to the scene)
    batch_size: int
    precision: str
    tta: str
    threads: int | None


@dataclass
class BlockAccumulation:
    """Weighted class probabilities (+ weight sum as the last channel) of one block's own chips."""

    core: np.ndarray      # [K+1, h, w] over the owned pixels
    right: np.ndarray     # [K+1, h, spill_cols] for the block to the right
    bottom: np.ndarray    # [K+1, spill_rows, w] for the block below
    corner: np.ndarray    # [K+1, spill_rows, spill_cols] for the block diagonally below-right
    valid: np.ndarray     # [h, w] scene validity of the owned pixels
    chips: int


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


def blend_weights(chip: int, overlap: int) -> np.ndarray:
    """A separable 2-D weight: 1 in the chip's core, linear ramps across the overlap, never 0.

    Within an overlap band the two chips' ramps sum to 1, so the blended
    probability cross-fades from one chip to the next without a step.
    """
    if overlap <= 0:
        return np.ones((chip, chip), np.float32)
    x = np.arange(chip, dtype=np.float32) + 0.5
    ramp = np.clip(np.minimum(x, chip - x) / overlap, 0.0, 1.0)
    return np.outer(ramp, ramp).astype(np.float32)


@functools.lru_cache(maxsize=2)
def _load_model(path: str, mtime: float, threads: int | None) -> tuple[Checkpoint, torch.nn.Module]:
    """Load a checkpoint's model once per process (keyed by path and modification time)."""
    if threads:
        torch.set_num_threads(threads)
    ckpt = load_checkpoint(path)
    model = ckpt.build().to(default_device()).to(memory_format=torch.channels_last)
    ckpt.state_dict = {}
    return ckpt, model


def model_for(path: str, threads: int | None = None) -> tuple[Checkpoint, torch.nn.Module]:
    """The model of checkpoint ``path``, loaded at most once per worker process."""
    return _load_model(os.path.abspath(path), os.path.getmtime(path), threads)


def accumulate_block(task: BlockTask) -> BlockAccumulation:
    """Run one block's own chips and accumulate their weighted probabilities over owned + spill pixels."""
    ckpt, model = model_for(task.checkpoint, task.threads)
    device = next(model.parameters()).device
    amp = autocast_dtype(device, task.precision)
    b = task.block
    r0, c0 = int(b.window.row_off), int(b.window.col_off)
    h, w = int(b.window.height), int(b.window.width)
    sh, sw = task.spill
    k = len(ckpt.classes)
    acc = torch.zeros((k + 1, h + sh, w + sw), dtype=torch.float32)
    with open_raster(task.scene) as src:
        grid = ChipGrid.for_scene(src.width, src.height, task.chip, task.overlap)
        if len(b.rows) and len(b.cols):
            top, left = grid.origin(b.rows.start, b.cols.start)
            bottom, right = grid.origin(b.rows.stop - 1, b.cols.stop - 1)
            read = Window(min(left, c0), min(top, r0), max(right + task.chip, c0 + w) - min(left, c0),
                          max(bottom + task.chip, r0 + h) - min(top, r0))
        else:
            read = b.window
        with rasterio.Env(GDAL_NUM_THREADS="ALL_CPUS"):  # decode the block's tiles on all cores
            data, valid = read_padded(src, read, ckpt.bands)
    sr, sc = int(read.row_off), int(read.col_off)
    own_valid = valid[r0 - sr:r0 - sr + h, c0 - sc:c0 - sc + w].copy()
    chips = [grid.origin(i, j) for i in b.rows for j in b.cols]
    chips = [(r, c) for r, c in chips if valid[r - sr:r - sr + task.chip, c - sc:c - sc + task.chip].any()]
    if chips:
        normalise(data, valid, ckpt.mean, ckpt.std)
        weight = torch.from_numpy(blend_weights(task.chip, task.overlap))
        for start in range(0, len(chips), task.batch_size):
            batch = chips[start:start + task.batch_size]
            x = np.stack([data[:, r - sr:r - sr + task.chip, c - sc:c - sc + task.chip] for r, c in batch])
            if len(batch) < task.batch_size:  # a fixed batch shape keeps results independent of blocking
                x = np.concatenate([x, np.zeros((task.batch_size - len(batch), *x.shape[1:]), x.dtype)])
            probs = predict_probabilities(model, x, device, amp, task.tta)
            for (r, c), p in zip(batch, probs):
                ar0, ar1 = max(r, r0), min(r + task.chip, r0 + h + sh)
                ac0, ac1 = max(c, c0), min(c + task.chip, c0 + w + sw)
                if ar0 < ar1 and ac0 < ac1:
                    target = acc[:, ar0 - r0:ar1 - r0, ac0 - c0:ac1 - c0]
                    wt = weight[ar0 - r:ar1 - r, ac0 - c:ac1 - c]
                    target[:k].addcmul_(p[:, ar0 - r:ar1 - r, ac0 - c:ac1 - c], wt)
                    target[k] += wt
    a = acc.numpy()
    return BlockAccumulation(a[:, :h, :w], a[:, :h, w:], a[:, h:, :w], a[:, h:, w:], own_valid, len(chips))


def normalise(data: np.ndarray, valid: np.ndarray, mean, std) -> None:
    """In place: (data - mean) / std per band, 0 where the scene has no data (torch: all cores)."""
    t = torch.from_numpy(data)
    t.sub_(torch.tensor(mean, dtype=t.dtype)[:, None, None]).div_(torch.tensor(std, dtype=t.dtype)[:, None, None])
    t.masked_fill_(torch.from_numpy(~valid), 0.0)


@torch.inference_mode()
def predict_probabilities(model: torch.nn.Module, x: np.ndarray, device: torch.device,
                          amp: torch.dtype | None, tta: str = "none") -> torch.Tensor:
    """Softmax class probabilities [n, K, h, w] on the CPU for a batch of normalised chips.

    The softmax runs in the autocast dtype (bf16 where enabled): it costs a
    fraction of a float32 softmax and probabilities are accumulated in float32.
    """
    t = torch.from_numpy(x).to(device, non_blocking=True).contiguous(memory_format=torch.channels_last)
    flips = [()] if tta == "none" else [(), (3,), (2,), (2, 3)]
    out = None
    for dims in flips:
        inp = torch.flip(t, dims) if dims else t
        with torch.autocast(device.type, dtype=amp or torch.float32, enabled=amp is not None):
            logits = model(inp)
        p = torch.softmax(logits, dim=1)
        p = torch.flip(p, dims) if dims else p
        out = p if out is None else out + p
    if len(flips) > 1:
        out = out / len(flips)
    return out.contiguous().cpu()


@dataclass
class FinishedBlock:
    window: Window
    codes: np.ndarray
    confidence: np.ndarray | None
    probabilities: np.ndarray | None
    chips: int


def finish_block(own: BlockAccumulation, window: Window, lut: np.ndarray, left: np.ndarray | None,
                 above: np.ndarray | None, diagonal: np.ndarray | None, confidence: bool,
                 probabilities: str | None) -> FinishedBlock:
    """Add the neighbours' overlap to a block's own accumulation and turn it into class codes."""
    acc = torch.from_numpy(own.core).clone()
    if left is not None:
        acc[:, :, :left.shape[2]] += torch.from_numpy(left)
    if above is not None:
        acc[:, :above.shape[1], :] += torch.from_numpy(above)
    if diagonal is not None:
        acc[:, :diagonal.shape[1], :diagonal.shape[2]] += torch.from_numpy(diagonal)
    wsum = acc[-1]
    probs = acc[:-1]
    top, index = probs.max(dim=0)
    nodata = ~own.valid | (wsum <= 0).numpy()
    codes = lut[index.to(torch.uint8).numpy()]
    codes[nodata] = NODATA
    conf = prob_out = None
    if confidence:
        conf = torch.round(top / wsum.clamp_min(1e-12) * 100).to(torch.uint8).numpy()
        conf[nodata] = NODATA
    if probabilities:
        p = (probs / wsum.clamp_min(1e-12)).numpy()
        if probabilities == "uint8":
            prob_out = np.rint(p * 254).astype(np.uint8)
            prob_out[:, nodata] = NODATA
        else:
            prob_out = p.astype(np.float16)
            prob_out[:, nodata] = np.nan
    return FinishedBlock(window, codes, conf, prob_out, own.chips)


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
    # dask samples every worker thread's stack each 10 ms and watches the GIL each 1 ms: on a
    # machine whose cores all run the model that costs ~15 % of its speed, so both are off here.
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
        import bokeh  # noqa: F401
    except ImportError:
        return False
    return True


def default_threads(options: PredictOptions) -> int:
    """torch threads per worker: the cores shared out among the local workers."""
    if options.threads:
        return options.threads
    return max(1, (os.cpu_count() or 1) // (options.workers or 1))


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
        warnings.warn(f"{scene} has no CRS; the outputs will have none either")
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
        tmp = stack.enter_context(atomic_output(output, overwrite=True))
        stack.callback(_write_categories, tmp, ckpt.classes)  # runs once the raster is closed
        dst = stack.enter_context(rasterio.open(tmp, "w", **class_raster_profile(grid)))
        write_class_metadata(dst, ckpt.classes, tags)
        side = {name: stack.enter_context(rasterio.open(
            stack.enter_context(atomic_output(path, overwrite=True)), "w", **_extra_profile(grid, name, options, ckpt)))
            for name, path in extras.items()}
        client = stack.enter_context(dask_client(options))
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

    aux = Path(str(path) + ".aux.xml")
    with atomic_output(path, overwrite=True) as tmp:
        with rasterio.open(path) as src:
            categorical = src.colorinterp[0].name == "palette"
        rio_copy(path, tmp, driver="COG", compress="DEFLATE",
                 overview_resampling="MODE" if categorical else "AVERAGE")
        if aux.exists() and not Path(str(tmp) + ".aux.xml").exists():
            Path(str(tmp) + ".aux.xml").write_text(aux.read_text(encoding="utf-8"), encoding="utf-8")


def _block_tasks(layout: list[list[GridBlock]], scene: str, checkpoint: str, chip: int, overlap: int,
                 grid: GeoGrid, options: PredictOptions, threads: int) -> list[list[BlockTask]]:
    tasks = []
    for row in layout:
        out_row = []
        for b in row:
            r1 = int(b.window.row_off + b.window.height)
            c1 = int(b.window.col_off + b.window.width)
            spill = (min(overlap, grid.height - r1), min(overlap, grid.width - c1))
            batch = options.batch_size or (8 if torch.cuda.is_available() else 1)
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
                strips[(i, j, part)] = client.submit(getattr_, acc, part, pure=False)
        left = strips.pop((i, j - 1, "right"), None)
        above = strips.pop((i - 1, j, "bottom"), None)
        diagonal = strips.pop((i - 1, j - 1, "corner"), None)
        return client.submit(finish_block, acc, t.block.window, lut, left, above, diagonal, options.confidence,
                             options.probabilities, pure=False)

    it = iter(order)
    first = [submit(i, j) for i, j in _take(it, max_in_flight)]
    if not first:
        return
    done = as_completed(first)
    for future in done:
        result = future.result()
        future.release()
        for i, j in _take(it, 1):
            done.add(submit(i, j))
        yield result


def getattr_(obj, name: str):
    """``getattr`` as a dask task (picklable by reference)."""
    return getattr(obj, name)


def _take(it, n):
    out = []
    for _ in range(n):
        try:
            out.append(next(it))
        except StopIteration:
            break
    return out
