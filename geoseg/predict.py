"""Scene → class raster: blocks on dask, chips on one global grid, smooth blending, streamed output.

Every output block reads its pixels plus a halo, predicts exactly the chips of
the scene's global :class:`~geoseg.grid.ChipGrid` that touch it, blends their
class probabilities with a smooth weight window and keeps its own pixels. So
the class raster does not depend on the block size or the number of workers.
Blocks are written into the output GeoTIFF as they finish: memory holds a few
blocks, never the scene.
"""

from __future__ import annotations

import contextlib
import functools
import math
import os
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
import rasterio
import torch
from rasterio.windows import Window

from geoseg import __version__
from geoseg.atomic import atomic_output, atomic_write_text, check_output_path
from geoseg.classes import NODATA
from geoseg.errors import RasterError
from geoseg.grid import ChipGrid, GeoGrid, blocks, span_window
from geoseg.models import Checkpoint, autocast_dtype, default_device, load_checkpoint
from geoseg.progress import bar, say
from geoseg.raster import check_bands, class_raster_profile, open_raster, read_padded, write_class_metadata
from geoseg.style import raster_qml


@dataclass(frozen=True)
class PredictOptions:
    """How to run prediction; ``None`` picks a default from the checkpoint or the machine."""

    overlap: int | None = None      # pixels shared by neighbouring chips (default: chip size / 8)
    block_chips: int = 4            # output block side, in chip strides
    batch_size: int = 8
    precision: str = "auto"         # auto | bf16 | fp32
    workers: int | None = None      # dask workers of the local cluster
    threads: int | None = None      # torch threads per worker
    processes: bool = True          # local cluster of processes (False: threads in this process)
    scheduler: str | None = None    # address of an existing dask.distributed scheduler


@dataclass(frozen=True)
class BlockTask:
    """Everything a worker needs to predict one output block."""

    scene: str
    checkpoint: str
    window: tuple[int, int, int, int]   # col_off, row_off, width, height of the owned pixels
    chip: int
    overlap: int
    batch_size: int
    precision: str
    threads: int | None


@dataclass
class PredictResult:
    raster: Path
    grid: GeoGrid
    chips: int
    seconds: float

    @property
    def megapixels_per_second(self) -> float:
        return self.grid.width * self.grid.height / 1e6 / max(self.seconds, 1e-9)


def blend_weights(chip: int, overlap: int) -> np.ndarray:
    """A separable 2-D weight: 1 in the chip's core, linear ramps across the overlap, never 0.

    Neighbouring chips' ramps cross-fade so the blended probability changes
    smoothly from one chip to the next.
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
    return _load_model(os.path.abspath(path), os.path.getmtime(path), threads)


def predict_block(task: BlockTask) -> tuple[tuple[int, int, int, int], np.ndarray, int]:
    """Predict one owned window; returns (window, class codes [h, w], chips run)."""
    ckpt, model = model_for(task.checkpoint, task.threads)
    device = next(model.parameters()).device
    amp = autocast_dtype(device, task.precision)
    col_off, row_off, width, height = task.window
    owned = Window(col_off, row_off, width, height)
    with open_raster(task.scene) as src:
        grid = ChipGrid.for_scene(src.width, src.height, task.chip, task.overlap)
        rows, cols = grid.chips_covering(owned)
        span = span_window(grid, rows, cols)
        data, valid = read_padded(src, span, ckpt.bands)
    mean = np.asarray(ckpt.mean, np.float32)[:, None, None]
    std = np.asarray(ckpt.std, np.float32)[:, None, None]
    data = (data - mean) / std
    data[:, ~valid] = 0.0
    n_classes = len(ckpt.classes)
    acc = np.zeros((n_classes, height, width), np.float32)
    wsum = np.zeros((height, width), np.float32)
    weights = blend_weights(task.chip, task.overlap)
    sr, sc = int(span.row_off), int(span.col_off)

    chips = []
    for i in rows:
        for j in cols:
            r, c = grid.origin(i, j)
            if valid[r - sr:r - sr + task.chip, c - sc:c - sc + task.chip].any():
                chips.append((r, c))
    for start in range(0, len(chips), task.batch_size):
        batch = chips[start:start + task.batch_size]
        x = np.stack([data[:, r - sr:r - sr + task.chip, c - sc:c - sc + task.chip] for r, c in batch])
        probs = _forward(model, x, device, amp)
        for (r, c), p in zip(batch, probs):
            # Intersect the chip with the owned window, in owned-window coordinates.
            r0, r1 = max(r, row_off), min(r + task.chip, row_off + height)
            c0, c1 = max(c, col_off), min(c + task.chip, col_off + width)
            if r0 >= r1 or c0 >= c1:
                continue
            w = weights[r0 - r:r1 - r, c0 - c:c1 - c]
            acc[:, r0 - row_off:r1 - row_off, c0 - col_off:c1 - col_off] += p[:, r0 - r:r1 - r, c0 - c:c1 - c] * w
            wsum[r0 - row_off:r1 - row_off, c0 - col_off:c1 - col_off] += w
    index = acc.argmax(axis=0).astype(np.uint8)
    codes = ckpt.classes.index_to_code_lut()[index]
    own_valid = valid[row_off - sr:row_off - sr + height, col_off - sc:col_off - sc + width]
    codes[~own_valid | (wsum == 0)] = NODATA
    return task.window, codes, len(chips)


@torch.inference_mode()
def _forward(model: torch.nn.Module, x: np.ndarray, device: torch.device, amp: torch.dtype | None) -> np.ndarray:
    t = torch.from_numpy(x).to(device).contiguous(memory_format=torch.channels_last)
    with torch.autocast(device.type, dtype=amp or torch.float32, enabled=amp is not None):
        logits = model(t)
    return torch.softmax(logits.float(), dim=1).cpu().numpy()


@contextlib.contextmanager
def dask_client(options: PredictOptions) -> Iterator:
    """A dask.distributed client: to ``options.scheduler`` or to a new local cluster."""
    from distributed import Client, LocalCluster

    if options.scheduler:
        with Client(options.scheduler, timeout="20s") as client:
            yield client
        return
    workers = options.workers or 1
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=options.processes,
                               dashboard_address=None, silence_logs=50)
    try:
        with Client(cluster) as client:
            yield client
    finally:
        cluster.close()


def _default_threads(options: PredictOptions) -> int:
    if options.threads:
        return options.threads
    return max(1, (os.cpu_count() or 1) // (options.workers or 1))


def predict_scene(scene: str | os.PathLike, checkpoint: str | os.PathLike, output: str | os.PathLike,
                  options: PredictOptions = PredictOptions(), overwrite: bool = False) -> PredictResult:
    """Predict ``scene`` with ``checkpoint`` into a class GeoTIFF at ``output`` (plus a QGIS ``.qml``)."""
    output = check_output_path(output, overwrite)
    ckpt = load_checkpoint(checkpoint)
    with open_raster(scene) as src:
        check_bands(src, scene, ckpt.bands)
        grid = GeoGrid.from_dataset(src)
    if grid.crs is None:
        warnings.warn(f"{scene} has no CRS; the outputs will have none either")
    chip = ckpt.chip_size
    overlap = chip // 8 if options.overlap is None else options.overlap
    if not 0 <= overlap < chip:
        raise RasterError(f"--overlap must be between 0 and {chip - 1} pixels for this model's {chip} px chips")
    chip_grid = ChipGrid.for_scene(grid.width, grid.height, chip, overlap)
    block = chip_grid.stride * max(1, options.block_chips)
    windows = list(blocks(grid.width, grid.height, block))
    threads = _default_threads(options)
    tasks = [BlockTask(str(Path(scene).resolve()) if not str(scene).startswith("/vsi") else str(scene),
                       str(Path(checkpoint).resolve()),
                       (int(w.col_off), int(w.row_off), int(w.width), int(w.height)), chip, overlap,
                       options.batch_size, options.precision, threads) for w in windows]
    tags = {"geoseg_version": __version__, "checkpoint": str(Path(checkpoint).resolve()),
            "overlap": str(overlap), "chip_size": str(chip)}
    start = time.perf_counter()
    n_chips = 0
    with atomic_output(output, overwrite=True) as tmp:
        with rasterio.open(tmp, "w", **class_raster_profile(grid)) as dst:
            write_class_metadata(dst, ckpt.classes, tags)
            with dask_client(options) as client, bar(len(tasks), "predict", unit="block") as pbar:
                for window, codes, n in _run(client, tasks, max_in_flight=2 * max(1, options.workers or 1) + 1):
                    dst.write(codes, 1, window=Window(*window))
                    n_chips += n
                    pbar.update(1)
                    pbar.set_postfix(chips_per_s=f"{n_chips / (time.perf_counter() - start):.1f}")
    atomic_write_text(output.with_suffix(".qml"), raster_qml(ckpt.classes))
    result = PredictResult(output, grid, n_chips, time.perf_counter() - start)
    say(f"predicted {grid.width}×{grid.height} px ({n_chips} chips) in {result.seconds:.1f} s "
        f"= {result.megapixels_per_second:.2f} Mpx/s → {output}")
    return result


def _run(client, tasks: list[BlockTask], max_in_flight: int):
    """Submit tasks with at most ``max_in_flight`` pending; yield results as they complete."""
    from distributed import as_completed

    pending = iter(tasks)
    first = [client.submit(predict_block, t, pure=False) for t in _take(pending, max_in_flight)]
    if not first:
        return
    done = as_completed(first)
    for future in done:
        result = future.result()
        future.release()
        for t in _take(pending, 1):
            done.add(client.submit(predict_block, t, pure=False))
        yield result


def _take(it, n):
    out = []
    for _ in range(n):
        try:
            out.append(next(it))
        except StopIteration:
            break
    return out
