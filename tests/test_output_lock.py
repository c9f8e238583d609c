"""Two runs to the same output never interleave: the second is refused in one sentence naming the first; a
lock left by a killed run is taken over; one from another host is named with the file to delete."""

import json
import socket
import subprocess
import sys
import time

import numpy as np
import pytest
import rasterio

from geoseg.cli import main
from geoseg.io.output_lock import lock_path

from conftest import write_raster


def run_cli(capsys, args) -> tuple[int, str]:
    with pytest.raises(SystemExit) as exit_:
        main([str(a) for a in args])
    return exit_.value.code, capsys.readouterr().err


def big_scene(path, size=768):
    y, x = np.mgrid[0:size, 0:size]
    data = np.stack([(x * 1.1) % 255, (y * 0.7) % 255, ((x + y) * 0.3) % 255]).astype(np.uint8) + 1
    return write_raster(path, data)


def test_a_second_run_to_the_same_output_is_refused_while_the_first_writes(tmp_path, capsys, tiny_checkpoint):
    scene = big_scene(tmp_path / "big.tif")
    out = tmp_path / "lc.tif"
    first = subprocess.Popen([sys.executable, "-m", "geoseg", "predict", str(scene), "-o", str(out),
                              "--model", str(tiny_checkpoint), "--quiet"], stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not lock_path(out).exists():
        assert first.poll() is None and time.monotonic() < deadline, first.stderr.read()
        time.sleep(0.02)
    code, err = run_cli(capsys, ["predict", scene, "-o", out, "--model", tiny_checkpoint, "--overwrite",
                                 "--quiet"])
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert f"is being written by another geoseg run (process {first.pid} on {socket.gethostname()}" in err
    _, first_err = first.communicate(timeout=300)
    assert first.returncode == 0, first_err
    assert not lock_path(out).exists()
    with rasterio.open(tmp_path / "lc.tif") as ds:
        assert ds.read(1).shape == (768, 768)


def test_a_lock_left_by_a_killed_run_is_taken_over(tmp_path, capsys, rgb_scene, tiny_checkpoint):
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True).stdout.strip()
    out = tmp_path / "lc.tif"
    lock_path(out).write_text(json.dumps({"pid": int(gone), "host": socket.gethostname(),
                                          "started": "2026-01-01 00:00:00"}))
    code, err = run_cli(capsys, ["predict", rgb_scene, "-o", out, "--model", tiny_checkpoint, "--quiet"])
    assert code == 0, err
    assert out.exists() and not lock_path(out).exists()


@pytest.mark.parametrize("output", ["lc.tif", "region.vrt"])
def test_a_lock_held_on_another_host_is_named_with_the_file_to_delete(tmp_path, capsys, rgb_scene,
                                                                      tiny_checkpoint, output):
    out = tmp_path / output
    holder = {"pid": 1, "host": "node-17.cluster", "started": "2026-12-06 10:00:00"}
    lock_path(out).write_text(json.dumps(holder))
    other = tmp_path / "other.tif"
    other.write_bytes(rgb_scene.read_bytes())
    scenes = [rgb_scene] if output.endswith(".tif") else [rgb_scene, other]
    code, err = run_cli(capsys, ["predict", *scenes, "-o", out, "--model", tiny_checkpoint, "--quiet"])
    assert code == 2, err
    assert "process 1 on node-17.cluster, started 2026-12-06 10:00:00" in err and str(lock_path(out)) in err
    assert not out.exists() and lock_path(out).exists()
