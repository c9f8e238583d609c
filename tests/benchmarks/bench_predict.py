"""Predict throughput vs the bare model forward, side by side in one run (each side in its own process).

    python -m tests.benchmarks.bench_predict [--size 4096] [--repeats 2] [--precision auto]

Makes (once, cached in --work) a synthetic scene of --size pixels and an untrained
U-Net resnet34 checkpoint with 512 px chips (speed does not depend on the weights),
then alternates fresh processes: (a) ``predict_scene`` end to end, file to file
(dask, reading, blending, writing the class GeoTIFF), once cold (model load) and
once warm; (b) the bare forward of the engine predict chose (``--engine``, default
``auto``, as measured for the model and the scene) on the main thread over as many
tiles of the size predict used (the raster's ``tile`` tag), at the same batch size and
precision. Separate processes keep one side's OpenMP
thread team from slowing the other's. Reports medians and throughput ratios.
"""

from __future__ import annotations

import argparse
import itertools
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import rasterio
import torch

from geoseg.data.sample_data import write_scene
from geoseg.inference.blocks import model_for
from geoseg.inference.predict import PredictOptions, predict_scene
from geoseg.io.classes import DEEPGLOBE
from geoseg.models.checkpoint import Checkpoint, autocast_dtype, build_model, load_checkpoint, save_checkpoint
from geoseg.models.engines import select_engine
from geoseg.models.onnx_runtime import OnnxModel

MODEL = {"classes": 7, "encoder_name": "resnet34", "encoder_weights": None, "in_channels": 3}


def prepare(work: Path, size: int, chip: int) -> tuple[Path, Path]:
    work.mkdir(parents=True, exist_ok=True)
    scene = work / f"scene_{size}.tif"
    if not scene.exists():
        write_scene(work, f"scene_{size}", "test", size, seed=4242, index=0, polygons=False)
    ckpt = work / f"unet_resnet34_{chip}.ckpt"
    if not ckpt.exists():
        torch.manual_seed(0)
        model = build_model("Unet", MODEL)
        save_checkpoint(Checkpoint(architecture="Unet", model_config=MODEL, state_dict=model.state_dict(),
                                   classes=DEEPGLOBE, bands=[1, 2, 3], mean=[120.0] * 3, std=[60.0] * 3,
                                   chip_size=chip, resolution=0.5), ckpt)
    return scene, ckpt


def bare_forward(ckpt: Path, n_chips: int, chip: int, batch: int, precision: str,
                 threads: int, engine: str = "auto", scene: Path | None = None) -> tuple[float, float]:
    """Seconds for the engine's forward alone on ``n_chips`` chips (channels_last, same batch and precision).

    Returns (warm, cold): warm after a warm-up forward; cold from before the
    model is loaded (smp import, build, weights) to the last chip.
    """
    cold_start = time.perf_counter()
    chosen = select_engine(load_checkpoint(ckpt), engine, precision).prepare(scene or ckpt).checkpoint
    _, model = model_for(str(chosen.path or ckpt), threads)
    x = np.random.default_rng(0).normal(size=(batch, 3, chip, chip)).astype(np.float32)
    if isinstance(model, OnnxModel):  # what prediction runs: ONNX Runtime's probabilities from numpy chips
        def forward():
            model.probabilities(x)
    else:
        device = next(itertools.chain(model.parameters(), model.buffers())).device
        amp = autocast_dtype(device, precision)
        t = torch.from_numpy(x).contiguous(memory_format=torch.channels_last)

        def forward():
            with torch.inference_mode(), torch.autocast(device.type, dtype=amp or torch.float32,
                                                        enabled=amp is not None):
                torch.softmax(model(t), 1)

    n_batches = -(-n_chips // batch)
    for _ in range(n_batches):  # cold: the first batch pays the kernels' first-call set-up
        forward()
    cold_s = time.perf_counter() - cold_start
    start = time.perf_counter()
    for _ in range(n_batches):  # warm
        forward()
    return time.perf_counter() - start, cold_s


#: The ``--engine`` that runs an engine predict names, and the precision it runs at.
ENGINE_KINDS = {"onnx-fp32": ("onnx", "auto"), "onnx-int8": ("int8", "auto"),
                "onnx-int8+fp32": ("adaptive", "auto"), "torch-bf16": ("torch", "bf16"),
                "torch-fp32": ("torch", "fp32"), "torch-fp16": ("torch", "auto")}


def child_predict(scene: Path, ckpt: Path, out: Path, opts: PredictOptions) -> dict:
    """In a fresh process: predict twice; the first run is cold (model load), the second warm."""
    cold = predict_scene(scene, ckpt, out, opts, overwrite=True)
    warm = predict_scene(scene, ckpt, out, opts, overwrite=True)
    with rasterio.open(out) as ds:
        tile = int(ds.tags()["tile"])
    return {"chips": warm.chips, "cold_s": cold.seconds, "warm_s": warm.seconds, "engine": warm.engine,
            "tile": tile}


def child_bare(ckpt: Path, chips: int, chip: int, batch: int, precision: str, engine: str,
               scene: Path) -> dict:
    """In a fresh process: the engine's bare forward on the main thread."""
    warm_s, cold_s = bare_forward(ckpt, chips, chip, batch, precision, torch.get_num_threads(), engine, scene)
    return {"bare_main_s": warm_s, "bare_cold_s": cold_s}


def _in_child(kind: str, args: argparse.Namespace, chips: int = 0, tile: int = 0, engine: str = "",
              precision: str = "") -> dict:
    cmd = [sys.executable, "-m", "tests.benchmarks.bench_predict", "--child", kind, "--size", str(args.size),
           "--chip", str(args.chip), "--precision", precision or args.precision,
           "--batch-size", str(args.batch_size), "--block-chips", str(args.block_chips),
           "--workers", str(args.workers), "--work", str(args.work), "--engine", engine or args.engine,
           "--chips", str(chips), "--tile", str(tile or args.chip)]
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode:
        raise SystemExit(r.stderr)
    return json.loads(r.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", type=int, default=4096)
    ap.add_argument("--chip", type=int, default=512)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--precision", default="auto")
    ap.add_argument("--engine", default="auto")
    ap.add_argument("--batch-size", type=int, default=1)
    ap.add_argument("--block-chips", type=int, default=4)
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--work", type=Path, default=Path("runs/bench"))
    ap.add_argument("--child", choices=["predict", "bare"])
    ap.add_argument("--chips", type=int, default=0)
    ap.add_argument("--tile", type=int, default=0, help="(child) the side of the tiles the bare forward runs")
    args = ap.parse_args()
    scene, ckpt = prepare(args.work, args.size, args.chip)
    opts = PredictOptions(precision=args.precision, engine=args.engine, batch_size=args.batch_size,
                          block_chips=args.block_chips,
                          workers=args.workers, processes=None if args.workers > 1 else False)
    if args.child == "predict":
        print(json.dumps(child_predict(scene, ckpt, args.work / "out.tif", opts)))
        return
    if args.child == "bare":
        print(json.dumps(child_bare(ckpt, args.chips, args.tile or args.chip, args.batch_size, args.precision,
                                    args.engine, scene)))
        return
    runs = []
    for _ in range(args.repeats):  # each side in its own fresh process, alternating
        p = _in_child("predict", args)
        b = _in_child("bare", args, p["chips"], p["tile"], *ENGINE_KINDS[p["engine"]])
        runs.append({**p, **b})
    with rasterio.open(args.work / "out.tif") as ds:
        assert ds.shape == (args.size, args.size)
    chips = runs[0]["chips"]
    med = {k: statistics.median(r[k] for r in runs) for k in ("cold_s", "warm_s", "bare_main_s",
                                                              "bare_cold_s")}
    print(json.dumps({
        "size": args.size, "chips": chips, "tile": runs[0]["tile"], "engine": runs[0]["engine"],
        "precision": args.precision,
        "batch_size": args.batch_size,
        "runs": runs, "bare_chips_per_s": chips / med["bare_main_s"],
        "predict_warm_chips_per_s": chips / med["warm_s"], "predict_cold_chips_per_s": chips / med["cold_s"],
        "ratio_warm": med["bare_main_s"] / med["warm_s"], "ratio_cold": med["bare_main_s"] / med["cold_s"],
        "ratio_cold_both": med["bare_cold_s"] / med["cold_s"],  # both sides load the model and warm up
    }, indent=1))


if __name__ == "__main__":
    main()
