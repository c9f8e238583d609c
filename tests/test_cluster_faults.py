"""Faults on a real dask.distributed cluster lose nothing.

A scheduler and worker processes are started by the test; a worker is killed with SIGKILL while it runs a
scene's blocks (single-scene mode) or a whole scene (region mode, where workers write the scene rasters). dask
reschedules its work, the outputs are identical to an undisturbed run and no partial file is left. When the
scheduler itself dies, the command fails in one sentence and ``--resume`` on a new cluster completes the rest.
"""

import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import rasterio

from conftest import DaskCluster, free_port, write_raster

pytestmark = pytest.mark.serial  # kills and restarts processes: run alone, after the parallel tests


def scene(path: Path, size: int, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:size, 0:size]
    data = np.stack([(x * 1.3) % 255, (y * 0.9) % 255, ((x + y) * 0.5) % 255]).astype(np.int16)
    data = np.clip(data + rng.integers(-9, 10, data.shape), 1, 255).astype(np.uint8)
    return write_raster(path, data, nodata=0)


def geoseg(*args, timeout: float = 400) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "geoseg", *map(str, args)], capture_output=True, text=True,
                          timeout=timeout)


def start(*args) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "geoseg", *map(str, args)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def kill_a_busy_worker(cluster: DaskCluster, runs: subprocess.Popen, task: str, seconds: float = 240) -> str:
    """SIGKILL the worker process group of the first worker seen running a ``task`` task; its name."""
    from distributed import Client

    deadline = time.monotonic() + seconds
    with Client(cluster.address, timeout="30s") as client:
        while time.monotonic() < deadline:
            assert runs.poll() is None, "the run ended before a worker could be killed: " + runs.stderr.read()
            busy = [(address, keys) for address, keys in client.processing().items()
                    if any(task in str(k) for k in keys)]
            if busy:
                name = client.scheduler_info()["workers"][busy[0][0]]["name"]
                time.sleep(0.3)  # well inside the task
                proc = cluster.worker_procs[int(str(name).lstrip("w"))]
                cluster.kill(proc)
                return str(name)
            time.sleep(0.02)
    raise AssertionError("no worker ran a task in time")


def same_raster(a: Path, b: Path) -> None:
    with rasterio.open(a) as x, rasterio.open(b) as y:
        assert x.transform == y.transform and x.crs == y.crs
        assert np.array_equal(x.read(), y.read())


def no_partial_files(folder: Path) -> None:
    odd = [p.name for p in folder.rglob("*") if p.is_file() and (".tmp" in p.name or ".partial" in p.name
                                                                  or p.name.startswith("."))]
    assert odd == [], odd


def test_a_worker_killed_in_the_middle_of_a_scene_loses_nothing(tmp_path, tiny_checkpoint):
    big = scene(tmp_path / "big.tif", 1536)
    (tmp_path / "ref").mkdir()
    reference = geoseg("predict", big, "-o", tmp_path / "ref" / "lc.tif", "--model", tiny_checkpoint,
                       "--block-chips", "2", "--quiet")
    assert reference.returncode == 0, reference.stderr
    out = tmp_path / "out"
    out.mkdir()
    with DaskCluster(tmp_path, workers=2) as cluster:
        run = start("predict", big, "-o", out / "lc.tif", "--model", tiny_checkpoint, "--block-chips", "2",
                    "--scheduler", cluster.address, "--quiet")
        kill_a_busy_worker(cluster, run, "accumulate_block")
        _, err = run.communicate(timeout=400)
        assert run.returncode == 0, err
    same_raster(tmp_path / "ref" / "lc.tif", out / "lc.tif")
    no_partial_files(out)


def test_a_worker_killed_while_writing_a_regions_scene_loses_nothing(tmp_path, tiny_checkpoint):
    scenes = [scene(tmp_path / f"s{k}.tif", 768, seed=k) for k in range(3)]
    (tmp_path / "ref").mkdir()
    reference = geoseg("predict", *scenes, "-o", tmp_path / "ref" / "region.vrt", "--model", tiny_checkpoint,
                       "--quiet")
    assert reference.returncode == 0, reference.stderr
    out = tmp_path / "out"
    out.mkdir()
    with DaskCluster(tmp_path, workers=2) as cluster:
        run = start("predict", *scenes, "-o", out / "region.vrt", "--model", tiny_checkpoint,
                    "--scheduler", cluster.address, "--quiet")
        kill_a_busy_worker(cluster, run, "predict_one")
        _, err = run.communicate(timeout=400)
        assert run.returncode == 0, err
    same_raster(tmp_path / "ref" / "region.vrt", out / "region.vrt")
    for ref in sorted((tmp_path / "ref" / "region_scenes").glob("*.tif")):
        same_raster(ref, out / "region_scenes" / ref.name)
    no_partial_files(out)


def test_resume_after_the_scheduler_died_completes_the_rest(tmp_path, tiny_checkpoint):
    from geoseg.errors import GeoSegError
    from geoseg.inference.predict import PredictOptions, predict_scene
    from geoseg.inference.resume import state_path

    big = scene(tmp_path / "big.tif", 1536)
    (tmp_path / "ref").mkdir()
    whole = predict_scene(big, tiny_checkpoint, tmp_path / "ref" / "lc.tif", PredictOptions(block_chips=2))
    out = tmp_path / "out" / "lc.tif"
    out.parent.mkdir()
    port = free_port()
    failure: list[BaseException] = []
    with DaskCluster(tmp_path / "first", workers=1, port=port) as cluster:
        options = PredictOptions(block_chips=2, scheduler=cluster.address, commit_seconds=0.2)

        def run():
            try:
                predict_scene(big, tiny_checkpoint, out, options)
            except BaseException as exc:  # what the dead scheduler does to the client
                failure.append(exc)

        client_thread = threading.Thread(target=run)
        client_thread.start()
        deadline = time.monotonic() + 240
        while not state_path(out).exists() and time.monotonic() < deadline and client_thread.is_alive():
            time.sleep(0.05)
        time.sleep(1.5)  # a few blocks committed
        cluster.kill(cluster.scheduler)
        client_thread.join(timeout=300)
    assert failure and isinstance(failure[0], GeoSegError), failure
    assert "\n" not in str(failure[0]) and "scheduler" in str(failure[0])
    assert not out.exists()  # nothing promoted under the final name
    with DaskCluster(tmp_path / "second", workers=1) as cluster:
        result = predict_scene(big, tiny_checkpoint, out, PredictOptions(block_chips=2,
                                                                         scheduler=cluster.address),
                               resume=True)
    assert 0 < result.chips < whole.chips  # the blocks committed before the scheduler died were kept
    same_raster(tmp_path / "ref" / "lc.tif", out)
    no_partial_files(out.parent)
