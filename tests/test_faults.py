"""Interruptions: Ctrl-C, kill and kill -9 of a running ``geoseg predict``, and ``--resume``."""

import json
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import rasterio
import torch

from conftest import TINY_MODEL, write_raster

# one engine for every run here, the module's reference included (it runs before the per-test GEOSEG_ENGINE):
# on a CPU without bf16, auto would take ONNX Runtime, whose rounding differs from torch's
ARGS = ["--block-chips", "1", "--quiet", "--engine", "torch"]


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """A scene, a tiny model and the class raster of an uninterrupted run, shared by the tests here."""
    folder = tmp_path_factory.mktemp("faults")
    scene = _long_scene(folder)
    ckpt = _tiny_checkpoint(folder)
    ref = folder / "ref" / "lc.tif"
    ref.parent.mkdir()
    start = time.monotonic()
    r = subprocess.run(predict_cmd(scene, ref, ckpt), capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    assert time.monotonic() - start > 4, "the scene is too small to interrupt reliably"
    with rasterio.open(ref) as ds:
        return scene, ckpt, (ds.read(1), ds.profile)


@pytest.fixture
def long_scene(setup):
    return setup[0]


@pytest.fixture
def tiny_checkpoint(setup):
    return setup[1]


@pytest.fixture
def reference(setup):
    return setup[2]


def _tiny_checkpoint(folder):
    from geoseg.io.classes import DEEPGLOBE
    from geoseg.models.checkpoint import Checkpoint, build_model, save_checkpoint
    torch.manual_seed(0)
    model = build_model("Unet", TINY_MODEL)
    return save_checkpoint(Checkpoint(architecture="Unet", model_config=dict(TINY_MODEL),
                                      state_dict=model.state_dict(), classes=DEEPGLOBE, bands=[1, 2, 3],
                                      mean=[120.0] * 3, std=[60.0] * 3, chip_size=64, resolution=0.5),
                           folder / "tiny.ckpt")


def _long_scene(tmp_path):
    """A scene big enough for a tiny model to take several seconds in 1-chip blocks."""
    rng = np.random.default_rng(3)
    y, x = np.mgrid[0:1600, 0:1600]
    data = np.stack([(x * 0.9) % 255, (y * 1.3) % 255, ((x + y) * 0.4) % 255]).astype(np.uint8)
    data = np.clip(data.astype(int) + rng.integers(-20, 21, data.shape), 1, 255).astype(np.uint8)
    data[:, :60, :90] = 0  # a nodata corner
    return write_raster(tmp_path / "long.tif", data, nodata=0, tiled=True, blockxsize=256, blockysize=256)


def predict_cmd(scene, out, model, *extra):
    return [sys.executable, "-m", "geoseg", "predict", str(scene), "-o", str(out), "--model", str(model),
            *ARGS, *extra]


def start_and_stop(cmd, out, sig):
    """Start ``cmd``, wait until it has committed finished blocks, send ``sig``; return (exit code,
    stderr)."""
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    state = out.with_name(f".{out.stem}.geoseg-partial.json")
    deadline = time.monotonic() + 120
    while not state.exists():
        assert proc.poll() is None, "predict finished before it could be interrupted: " + proc.stderr.read()
        assert time.monotonic() < deadline, "no blocks were committed within 120 s"
        time.sleep(0.05)
    time.sleep(0.5)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=120)
    return proc.returncode, err


def files(folder):
    return sorted(p.name for p in folder.iterdir())


def resume_and_compare(out, long_scene, tiny_checkpoint, reference):
    r = subprocess.run(predict_cmd(long_scene, out, tiny_checkpoint, "--resume"), capture_output=True,
                       text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    with rasterio.open(out) as ds:
        classes, profile = ds.read(1), ds.profile
        assert ds.colormap(1)[4] == (0, 0, 255, 255)
    expected, ref_profile = reference
    assert (classes == expected).all()
    assert profile == ref_profile
    # no partials or state left
    assert files(out.parent) == ["lc.qml", "lc.stac.json", "lc.tif", "lc.tif.aux.xml"]


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_interrupt_keeps_finished_blocks_and_resume_completes_them(tmp_path, long_scene, tiny_checkpoint,
                                                                   reference, sig):
    out = tmp_path / "run" / "lc.tif"
    out.parent.mkdir()
    code, err = start_and_stop(predict_cmd(long_scene, out, tiny_checkpoint), out, sig)
    assert code == 130, err
    assert "Traceback" not in err
    assert "geoseg: interrupted" in err and "run the same command with --resume" in err
    # nothing under the final name; only the hidden partial raster and its record
    assert files(out.parent) == [".lc.geoseg-partial.json", ".lc.geoseg-partial.tif"]
    done = json.loads((out.parent / ".lc.geoseg-partial.json").read_text())["done"]
    assert done
    resume_and_compare(out, long_scene, tiny_checkpoint, reference)


def test_kill_9_leaves_nothing_under_the_final_name_and_resume_completes(tmp_path, long_scene,
                                                                         tiny_checkpoint, reference):
    out = tmp_path / "run" / "lc.tif"
    out.parent.mkdir()
    code, _ = start_and_stop(predict_cmd(long_scene, out, tiny_checkpoint), out, signal.SIGKILL)
    assert code == -signal.SIGKILL
    assert not out.exists()
    assert all(name.startswith(".lc.") for name in files(out.parent))
    resume_and_compare(out, long_scene, tiny_checkpoint, reference)


def test_interrupt_before_any_block_leaves_nothing(tmp_path, long_scene, tiny_checkpoint):
    out = tmp_path / "run" / "lc.tif"
    out.parent.mkdir()
    proc = subprocess.Popen(predict_cmd(long_scene, out, tiny_checkpoint), stderr=subprocess.PIPE, text=True)
    partial = out.with_name(".lc.geoseg-partial.tif")
    deadline = time.monotonic() + 120
    while not partial.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130 and "Traceback" not in err
    assert files(out.parent) == []


def test_an_interrupted_run_does_not_touch_an_existing_output(tmp_path, long_scene, tiny_checkpoint):
    out = tmp_path / "run" / "lc.tif"
    out.parent.mkdir()
    out.write_bytes(b"an earlier result")
    code, _ = start_and_stop(predict_cmd(long_scene, out, tiny_checkpoint, "--overwrite"), out, signal.SIGINT)
    assert code == 130
    assert out.read_bytes() == b"an earlier result"


def test_resume_with_other_settings_is_refused(tmp_path, long_scene, tiny_checkpoint):
    out = tmp_path / "run" / "lc.tif"
    out.parent.mkdir()
    start_and_stop(predict_cmd(long_scene, out, tiny_checkpoint), out, signal.SIGKILL)
    r = subprocess.run(predict_cmd(long_scene, out, tiny_checkpoint, "--resume", "--overlap", "4"),
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 2
    # the default tile is chosen with the overlap, so it changed too
    assert r.stderr.strip().endswith("was made with a different --overlap, --tile; run without --resume to "
                                     "start over")
    # a run without --resume starts over and leaves no partial behind
    r = subprocess.run(predict_cmd(long_scene, out, tiny_checkpoint), capture_output=True, text=True,
                       timeout=600)
    assert r.returncode == 0, r.stderr
    assert files(out.parent) == ["lc.qml", "lc.stac.json", "lc.tif", "lc.tif.aux.xml"]


def test_resume_without_an_earlier_run_starts_from_the_beginning(tmp_path, rgb_scene, tiny_checkpoint):
    out = tmp_path / "lc.tif"
    cmd = [c for c in predict_cmd(rgb_scene, out, tiny_checkpoint, "--resume") if c != "--quiet"]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    assert "no unfinished run" in r.stdout and out.exists()
