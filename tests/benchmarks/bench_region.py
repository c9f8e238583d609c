"""A 2 × 2 mosaic of scenes against one scene of the same total size, on a local cluster of 2 workers: wall
time and the client's peak memory (each run in its own process).

    python -m tests.benchmarks.bench_region [--size 2048] [--workers 2] [--repeats 2]

The mosaic's scenes are predicted by the workers, one scene per task, each
writing its own raster, so no pixel passes through the client; the single
scene's blocks are computed by the workers and written by the client. The
model is an untrained U-Net resnet18 with 256 px chips (speed does not depend
on the weights). The client's peak is its own high-water mark (``VmHWM``);
about 0.67 GB of it is the imports (torch, smp, dask). Outputs are rasters only (``.vrt`` / ``.tif``), so the
comparison is of prediction, not vectorization. Reports medians.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

import numpy as np
import rasterio
import torch
from affine import Affine

from geoseg.io.classes import DEEPGLOBE
from geoseg.models.checkpoint import Checkpoint, build_model, save_checkpoint

MODEL = {"classes": 7, "encoder_name": "resnet18", "encoder_weights": None, "in_channels": 3}

RUN = """
import json, sys, time
from pathlib import Path
from geoseg.inference.predict import PredictOptions, predict_scene
from geoseg.inference.region import predict_region
kind, ckpt, out, workers, *scenes = sys.argv[1:]
options = PredictOptions(workers=int(workers))
t = time.perf_counter()
if kind == "mosaic":
    chips = predict_region(scenes, out, ckpt, options=options, overwrite=True).chips
else:
    chips = predict_scene(scenes[0], ckpt, out, options, overwrite=True).chips
# VmHWM, not ru_maxrss: Linux carries ru_maxrss over from the parent across fork and exec
hwm = next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmHWM"))
print(json.dumps({"seconds": time.perf_counter() - t, "chips": chips, "client_peak_mb": hwm / 1024}))
"""


def prepare(work: Path, size: int) -> tuple[list[Path], Path, Path]:
    """Four adjacent scenes of ``size`` px, the same ground as one scene of 2 × ``size``, and a checkpoint."""
    work.mkdir(parents=True, exist_ok=True)
    whole = work / f"whole_{2 * size}.tif"
    tiles = [work / f"tile_{size}_{i}{j}.tif" for i in range(2) for j in range(2)]
    if not whole.exists():
        rng = np.random.default_rng(0)
        y, x = np.mgrid[0:2 * size, 0:2 * size]
        data = np.stack([120 + 80 * np.sin(x / 53.0), 120 + 80 * np.cos(y / 37.0),
                         120 + 60 * np.sin((x + y) / 71.0)])
        data = np.clip(data + rng.normal(0, 8, data.shape), 0, 255).astype(np.uint8)
        profile = {"driver": "GTiff", "count": 3, "dtype": "uint8", "crs": "EPSG:32633", "tiled": True,
                   "blockxsize": 256, "blockysize": 256, "compress": "deflate"}
        with rasterio.open(whole, "w", width=2 * size, height=2 * size,
                           transform=Affine(0.5, 0, 500000, 0, -0.5, 5000000), **profile) as dst:
            dst.write(data)
        for k, tile in enumerate(tiles):
            i, j = divmod(k, 2)
            t = Affine(0.5, 0, 500000 + j * size * 0.5, 0, -0.5, 5000000 - i * size * 0.5)
            with rasterio.open(tile, "w", width=size, height=size, transform=t, **profile) as dst:
                dst.write(data[:, i * size:(i + 1) * size, j * size:(j + 1) * size])
    ckpt = work / "unet_resnet18_256.ckpt"
    if not ckpt.exists():
        torch.manual_seed(0)
        save_checkpoint(Checkpoint(architecture="Unet", model_config=MODEL,
                                   state_dict=build_model("Unet", MODEL).state_dict(), classes=DEEPGLOBE,
                                   bands=[1, 2, 3], mean=[120.0] * 3, std=[60.0] * 3, chip_size=256,
                                   resolution=0.5), ckpt)
    return tiles, whole, ckpt


def run(kind: str, ckpt: Path, out: Path, workers: int, scenes: list[Path]) -> dict:
    done = subprocess.run([sys.executable, "-c", RUN, kind, str(ckpt), str(out), str(workers),
                           *map(str, scenes)], capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=2048, help="side of each of the four scenes")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--work", type=Path, default=Path("/tmp/geoseg-bench-region"))
    args = parser.parse_args()
    tiles, whole, ckpt = prepare(args.work, args.size)
    results: dict[str, list[dict]] = {"mosaic": [], "single": []}
    for _ in range(args.repeats):
        results["mosaic"].append(run("mosaic", ckpt, args.work / "mosaic.vrt", args.workers, tiles))
        results["single"].append(run("single", ckpt, args.work / "single.tif", args.workers, [whole]))
    for kind, rows in results.items():
        print(f"{kind:>7}: {statistics.median(r['seconds'] for r in rows):7.1f} s, client peak "
              f"{statistics.median(r['client_peak_mb'] for r in rows):6.0f} MB, {rows[0]['chips']} chips "
              f"({args.workers} workers, {2 * args.size}² px in all)")


if __name__ == "__main__":
    main()
