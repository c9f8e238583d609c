"""Scheduling prediction on dask: the client, one accumulate and one finish task per output block, and
finished blocks streamed back in row-major order with a bounded number in flight.

The task graph holds no task per chip: :func:`run_blocks` submits, per block, an
:func:`~geoseg.inference.blocks.accumulate_block` task, small tasks that pick out the
overlap strips its right, lower and diagonal neighbours need, and a
:func:`~geoseg.inference.blocks.finish_block` task that adds the strips handed to it.
The same graph runs on a local cluster (default: one worker thread in this
process) or on an existing ``dask.distributed`` scheduler.
"""

from __future__ import annotations

import collections
import contextlib
import itertools
import os
import threading
import warnings
from typing import Iterator

import numpy as np
from rasterio.windows import Window

from geoseg.errors import ClusterError, InputError
from geoseg.inference.blocks import (
    BlockTask,
    FinishedBlock,
    ModelRef,
    accumulate_block,
    finish_block,
    model_for,
)
from geoseg.io.grid import GeoGrid, GridBlock
from geoseg.io.raster import open_raster
from geoseg.models.checkpoint import Checkpoint
from geoseg.models.hardware import cuda_available
from geoseg.progress import say

#: dask samples every worker thread's stack each 10 ms and watches the GIL each 1 ms; on a machine whose
#: cores all run the model that takes cycles from it, so both are off.
QUIET_DASK = {"distributed.worker.profile.enabled": False,
              "distributed.admin.system-monitor.gil.enabled": False}

BlockKey = tuple[int, int]


def local_processes(workers: int | None, processes: bool | None) -> bool:
    """Whether the local cluster's workers are processes (default: only when there are several)."""
    return processes if processes is not None else (workers or 1) > 1


def default_threads(threads: int | None, workers: int | None) -> int:
    """Threads per worker (torch's or ONNX Runtime's): ``threads``, else the cores shared out among the
    local workers."""
    if threads:
        return threads
    return max(1, (os.cpu_count() or 1) // (workers or 1))


class _Done:
    """The result of a task :class:`InlineClient` has run, with the part of a dask future's interface
    :func:`run_blocks` uses."""

    _keys = itertools.count()

    def __init__(self, value):
        self.value, self.key = value, next(self._keys)

    def result(self):
        return self.value

    def release(self) -> None:
        self.value = None


class InlineClient:
    """Runs each task in the calling thread as it is submitted: one in-process worker without a dask
    cluster to start (measured in ``tests/benchmarks/bench_startup.py``)."""

    def submit(self, fn, *args, pure: bool = False) -> _Done:
        return _Done(fn(*(a.value if isinstance(a, _Done) else a for a in args)))


class _InOrder:
    """:func:`distributed.as_completed` for an :class:`InlineClient`: its tasks are done in order."""

    def __init__(self, futures):
        self.queue = collections.deque(futures)

    def add(self, future) -> None:
        self.queue.append(future)

    def __iter__(self):
        while self.queue:
            yield self.queue.popleft()


def in_process(scheduler: str | None, workers: int | None, processes: bool | None) -> bool:
    """Whether one worker in this process does the job (no cluster, no scheduler)."""
    return not scheduler and (workers or 1) == 1 and not local_processes(workers, processes)


@contextlib.contextmanager
def dask_client(scheduler: str | None = None, workers: int | None = None,
                processes: bool | None = None) -> Iterator:
    """A client to run blocks on: to ``scheduler``, to a new local cluster of ``workers`` (threads, or
    processes when there are several), or an :class:`InlineClient` when one in-process worker does it."""
    if in_process(scheduler, workers, processes):
        yield InlineClient()
        return
    import dask  # only for a cluster: one in-process worker starts without dask (0.3 s of imports)
    from distributed import Client, LocalCluster

    if scheduler:
        try:
            client = Client(scheduler, timeout="20s")
        except OSError as exc:
            raise InputError(f"cannot reach the dask scheduler at {scheduler} ({exc})") from None
        with client, _cluster_faults(scheduler):
            yield client
        return
    dashboard = ":0" if _has_bokeh() else None
    with warnings.catch_warnings(), dask.config.set(QUIET_DASK):
        warnings.simplefilter("ignore")
        cluster = LocalCluster(n_workers=workers or 1, threads_per_worker=1,
                               processes=local_processes(workers, processes),
                               dashboard_address=dashboard, silence_logs=50)
    try:
        with Client(cluster) as client:
            if dashboard and client.dashboard_link:
                say(f"dask dashboard: {client.dashboard_link}")
            yield client
    finally:
        cluster.close()


@contextlib.contextmanager
def _cluster_faults(scheduler: str) -> Iterator[None]:
    """A scheduler that went away, or a task that killed worker after worker, as one sentence. Workers that
    die are survived without a word: dask reruns their tasks elsewhere, and finished blocks are written by
    this process (a scene of a region is written under a partial name and promoted only when complete)."""
    import concurrent.futures

    from distributed import KilledWorker
    from distributed.comm import CommClosedError

    try:
        yield
    except KilledWorker:
        raise ClusterError(f"a task killed dask worker after worker on {scheduler} (out of memory?); give "
                           "the workers more memory or use fewer --block-chips, and rerun with --resume") \
            from None
    except (concurrent.futures.CancelledError, CommClosedError, TimeoutError) as exc:
        raise ClusterError(f"lost the dask scheduler at {scheduler} while predicting "
                           f"({type(exc).__name__}); the finished blocks are kept: start it again and rerun "
                           "the same command with --resume") from None


def _has_bokeh() -> bool:
    try:
        import bokeh  # noqa: F401  (the dashboard needs it)
    except ImportError:
        return False
    return True


def preload_model(checkpoint: Checkpoint, threads: int) -> threading.Event:
    """Build the model in a thread (while the cluster starts) for a worker that is a thread of this process:
    it finds the model in the per-process cache instead of loading the checkpoint again. Returns an event set
    once the thread is done. The thread is not a daemon, so an interrupted run exits only after it (a process
    that finalizes while a thread is inside torch aborts); wait on the event, not with ``Thread.join``, which,
    interrupted, takes the thread for finished while it still runs (Python 3.11)."""
    done = threading.Event()
    threading.Thread(target=_build_quietly, args=(checkpoint, threads, done), name="geoseg-preload").start()
    return done


def _build_quietly(checkpoint: Checkpoint, threads: int, done: threading.Event) -> None:
    try:
        model_for(checkpoint.path, threads, checkpoint=checkpoint)
    except Exception:  # the worker's own load reports it
        pass
    finally:
        done.set()


def access_problem(scene: str, checkpoint: str) -> str | None:
    """Run on a dask worker: why it cannot read the scene or the checkpoint, or None when it can."""
    try:
        with open_raster(scene) as src:
            src.read(1, window=Window(0, 0, 1, 1))
    except Exception as exc:  # any failure means the same to the user
        return f"cannot read the scene {scene} ({exc})"
    try:
        with open(checkpoint, "rb") as fh:
            fh.read(1)
    except OSError as exc:
        return f"cannot read the checkpoint {checkpoint} ({exc.strerror or exc})"
    return None


def check_workers(client, scene: str, checkpoint: str) -> None:
    """On an external cluster, every worker must read the scene and the checkpoint itself."""
    for worker, problem in sorted(client.run(access_problem, scene, checkpoint).items()):
        if problem:
            raise InputError(f"dask worker {worker} {problem}; the scene and the checkpoint must be "
                             "reachable from every worker (a shared path, or a /vsicurl/ or /vsis3/ URL for "
                             "the scene)")


def block_tasks(layout: list[list[GridBlock]], grid: GeoGrid, *, scene: str, checkpoint: ModelRef, chip: int,
                overlap: int, batch_size: int | None, precision: str, tta: str, threads: int,
                bands: tuple[int, ...], area: bytes | None = None,
                training_chip: int | None = None) -> list[list[BlockTask]]:
    """One :class:`~geoseg.inference.blocks.BlockTask` per output block; each hands ``overlap`` pixels
    (clipped to the scene) to its right and lower neighbours. Without ``batch_size``: one tile at a time on
    a CPU, and on a GPU as many tiles as hold the pixels of 8 ``training_chip`` chips (at least one)."""
    batch = batch_size or (default_gpu_batch(chip, training_chip or chip) if cuda_available() else 1)
    tasks = []
    for row in layout:
        out_row = []
        for b in row:
            r1 = int(b.window.row_off + b.window.height)
            c1 = int(b.window.col_off + b.window.width)
            spill = (min(overlap, grid.height - r1), min(overlap, grid.width - c1))
            out_row.append(BlockTask(scene, checkpoint, b, chip, overlap, spill, batch, precision, tta,
                                     threads, bands, area))
        tasks.append(out_row)
    return tasks


def default_gpu_batch(tile: int, training_chip: int) -> int:
    """Tiles of ``tile`` px a GPU predicts at once: the pixels of 8 training chips, at least one tile."""
    return max(1, 8 * training_chip * training_chip // (tile * tile))


def run_blocks(client, tasks: list[list[BlockTask]], lut: np.ndarray, *, confidence: bool,
               probabilities: str | None, max_in_flight: int,
               skip: set[BlockKey] = frozenset()) -> Iterator[tuple[BlockKey, FinishedBlock]]:
    """Submit accumulate → finish pairs in row-major order, at most ``max_in_flight`` unfinished.

    Blocks in ``skip`` (already on disk) are not finished again; their chips run
    only where a neighbour still to be finished needs their overlap strips. The
    client keeps only the futures of strips still to be handed on; dask
    releases everything else as soon as it is consumed.
    """
    if isinstance(client, InlineClient):
        as_completed = _InOrder
    else:
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
        future = client.submit(finish_block, acc, t.block.window, lut, left, above, diagonal, confidence,
                               probabilities, pure=False)
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
