"""Fixtures: tiny rasters written to tmp_path, a tiny model checkpoint, an isolated GEOSEG_HOME."""

from __future__ import annotations

import contextlib
import csv
import math
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch
from affine import Affine
from PIL import Image
from rasterio.crs import CRS

from geoseg.io.classes import DEEPGLOBE, NODATA
from geoseg.models.checkpoint import Checkpoint, build_model, save_checkpoint

UTM = CRS.from_epsg(32633)
TINY_MODEL = {"classes": 7, "encoder_name": "resnet18", "encoder_weights": None, "in_channels": 3,
              "encoder_depth": 3, "decoder_channels": [32, 16, 8]}


@pytest.fixture(autouse=True)
def geoseg_home(tmp_path, monkeypatch):
    """Keep the default-model registry of each test to itself; status lines on (a CLI test may have set
    --quiet in this process)."""
    from geoseg.progress import set_quiet

    set_quiet(False)
    home = tmp_path / "geoseg_home"
    monkeypatch.setenv("GEOSEG_HOME", str(home))
    monkeypatch.setenv("WANDB_MODE", "offline")
    # predictions compared with torch-computed references must not depend on the CPU's choice of engine
    monkeypatch.setenv("GEOSEG_ENGINE", "torch")
    return home


def write_raster(path: Path, data: np.ndarray, transform: Affine | None = None, crs=UTM, nodata=None,
                 **extra) -> Path:
    """Write ``data`` ([bands, h, w] or [h, w]) as a GeoTIFF."""
    if data.ndim == 2:
        data = data[None]
    profile = {"driver": "GTiff", "width": data.shape[2], "height": data.shape[1], "count": data.shape[0],
               "dtype": data.dtype.name, "crs": crs, "transform": transform or Affine(0.5, 0, 500000, 0, -0.5,
                                                                                      5000000)}
    if nodata is not None:
        profile["nodata"] = nodata
    profile.update(extra)
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data)
    return path


@pytest.fixture
def rgb_scene(tmp_path) -> Path:
    """A 200×150 RGB scene with structure, a nodata (0) triangle and an odd size."""
    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:150, 0:200]
    data = np.stack([(x * 1.2) % 255, (y * 1.5) % 255, ((x + y) * 0.7) % 255]).astype(np.uint8)
    data = np.clip(data.astype(int) + rng.integers(-5, 6, data.shape), 1, 255).astype(np.uint8)
    data[:, x + y < 40] = 0
    return write_raster(tmp_path / "scene.tif", data, nodata=0)


@pytest.fixture
def tiny_checkpoint(tmp_path) -> Path:
    """A randomly initialised tiny U-Net saved as a geoseg checkpoint (64 px chips)."""
    torch.manual_seed(0)
    model = build_model("Unet", TINY_MODEL)
    ckpt = Checkpoint(architecture="Unet", model_config=dict(TINY_MODEL), state_dict=model.state_dict(),
                      classes=DEEPGLOBE, bands=[1, 2, 3], mean=[120.0] * 3, std=[60.0] * 3, chip_size=64,
                      resolution=0.5)
    return save_checkpoint(ckpt, tmp_path / "tiny.ckpt")


@pytest.fixture
def sample_dir(tmp_path_factory) -> Path:
    """Synthetic sample scenes (train, val, test) of 160 px from geoseg's own generator."""
    from geoseg.data.sample_data import make_sample_data

    out = tmp_path_factory.mktemp("sample")
    make_sample_data(out, size=160, seed=43, splits=("train", "val", "test"))
    return out


def deepglobe_folder(root, n=6, size=96, metadata=False):
    """Tiny files in DeepGlobe's layout: <id>_sat.jpg + <id>_mask.png, plus an image without a mask."""
    root.mkdir(parents=True)
    rng = np.random.default_rng(0)
    colours = np.array([c.color for c in DEEPGLOBE.classes], np.uint8)
    rows = []
    for k in range(n):
        ident = str(100 + k * 37)
        classes = np.repeat(np.repeat(rng.integers(0, 6, (size // 16, size // 16)), 16, 0), 16, 1)
        mask = colours[classes]
        # JPEG-like noise on the mask colours stays on the right side of 128
        noisy = np.clip(mask.astype(int) + rng.integers(-40, 41, mask.shape), 0, 255).astype(np.uint8)
        Image.fromarray(noisy).save(root / f"{ident}_mask.png")
        sat = (mask // 2 + rng.integers(0, 60, mask.shape)).astype(np.uint8)
        Image.fromarray(sat).save(root / f"{ident}_sat.jpg", quality=90)
        rows.append((ident, "train", f"{ident}_sat.jpg", f"{ident}_mask.png"))
    Image.fromarray(np.zeros((size, size, 3), np.uint8)).save(root / "999_sat.jpg")  # no mask: left out
    rows.append(("999", "valid", "999_sat.jpg", ""))
    if metadata:
        with open(root / "metadata.csv", "w", newline="") as fh:
            w = csv.writer(fh)
            w.writerow(["image_id", "split", "sat_image_path", "mask_path"])
            w.writerows(rows)
    return root


WGS84_A, WGS84_E2 = 6378137.0, (1 / 298.257223563) * (2 - 1 / 298.257223563)


def cell_area(lon0, lat0, lon1, lat1):
    """Exact area (m²) of the WGS 84 region between two meridians and two parallels (closed form)."""
    e = math.sqrt(WGS84_E2)

    def q(phi):
        s = math.sin(math.radians(phi))
        return s / (1 - WGS84_E2 * s * s) + math.log((1 + e * s) / (1 - e * s)) / (2 * e)
    return abs(math.radians(lon1 - lon0)) * WGS84_A**2 * (1 - WGS84_E2) / 2 * abs(q(lat1) - q(lat0))


__all__ = ["cell_area", "WGS84_E2", "write_raster", "deepglobe_folder", "UTM", "TINY_MODEL", "NODATA"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class DaskCluster:
    """A real ``dask scheduler`` and ``dask worker`` processes on 127.0.0.1, each in its own process group
    (so a test can SIGKILL one), all stopped on exit."""

    def __init__(self, folder: Path, workers: int = 2, port: int | None = None):
        self.folder, self.workers = Path(folder), workers
        self.port = port or free_port()
        self.address = f"tcp://127.0.0.1:{self.port}"
        self.scheduler: subprocess.Popen | None = None
        self.worker_procs: list[subprocess.Popen] = []

    def _start(self, args: list[str], log: str) -> subprocess.Popen:
        env = {**os.environ, "DASK_DISTRIBUTED__WORKER__DAEMON": "False"}
        logs = self.folder / "dask-logs"
        logs.mkdir(parents=True, exist_ok=True)
        return subprocess.Popen([str(Path(sys.executable).parent / "dask"), *args],
                                stdout=open(logs / log, "a"), stderr=subprocess.STDOUT, env=env,
                                start_new_session=True)

    def __enter__(self) -> "DaskCluster":
        self.scheduler = self._start(["scheduler", "--host", "127.0.0.1", "--port", str(self.port),
                                      "--no-dashboard"], "scheduler.log")
        for k in range(self.workers):
            self.add_worker(f"w{k}")
        self.wait_for_workers(self.workers)
        return self

    def add_worker(self, name: str) -> subprocess.Popen:
        proc = self._start(["worker", self.address, "--nthreads", "1", "--nworkers", "1", "--no-dashboard",
                            "--name", name, "--local-directory", str(self.folder / name)], f"{name}.log")
        self.worker_procs.append(proc)
        return proc

    def wait_for_workers(self, n: int, seconds: float = 90) -> None:
        from distributed import Client

        deadline = time.monotonic() + seconds
        with Client(self.address, timeout="60s") as client:
            while len(client.scheduler_info()["workers"]) < n:
                assert time.monotonic() < deadline, f"{n} dask workers did not start within {seconds} s"
                time.sleep(0.2)

    @staticmethod
    def kill(proc: subprocess.Popen) -> None:
        """SIGKILL a process and everything it started (a worker's nanny and its worker process)."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)

    def __exit__(self, *exc) -> None:
        for p in [self.scheduler, *self.worker_procs]:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(p.pid, signal.SIGTERM)
        for p in [self.scheduler, *self.worker_procs]:
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)


def run_config(tmp_path, manifest, **changes):
    """A tiny U-Net run on ``manifest``: 64 px chips, 6 a epoch, 2 epochs, CSV logs in ``tmp_path``."""
    from geoseg.training.config import parse_config

    raw = {"batch_size": 2, "ce_weights": [1, 1, 1, 1, 1, 1, 0], "downsize_res": None, "epochs": 2,
           "loss_fn": "CrossEntropyLoss", "lr": 0.001, "model_architecture": "Unet",
           "model_config": TINY_MODEL, "num_workers": 0, "optimizer": "Adam", "manifest": str(manifest),
           "chip_size": 64, "chips_per_epoch": 6, "val_chips": 4, "output_dir": str(tmp_path / "runs"),
           "seed": 3, "logger": "csv"}
    raw.update(changes)
    return parse_config(raw, tmp_path)


def readme_block(heading: str) -> list[str]:
    """The command lines of the first code block under ``heading`` in the README, as printed."""
    text = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    section = text[text.index(heading):]
    block = section[section.index("```") + 3:]
    block = block[block.index("\n") + 1:block.index("```")]
    return [line for line in block.splitlines() if line.strip()]
