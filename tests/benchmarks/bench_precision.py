"""bf16 + channels_last (the default) vs fp32: speed and agreement of the class rasters.

    python -m tests.benchmarks.bench_precision --model runs/sample/<run>/best.ckpt SCENE.tif [SCENE.tif …]

Predicts each scene at both precisions (alternating, twice) and reports the median time
ratio and the share of pixels on which the two class rasters agree. fp32 here is the
plain NCHW float32 forward, as a model runs without geoseg's speed settings.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import rasterio
import torch

from geoseg.inference.blocks import model_for
from geoseg.inference.predict import PredictOptions, predict_scene
from geoseg.io.classes import NODATA


def fp32_nchw_seconds(ckpt: str, n_chips: int, chip: int) -> float:
    """The forward of ``n_chips`` chips in plain fp32 NCHW (no channels_last, no autocast)."""
    _, model = model_for(ckpt)
    model = model.to(memory_format=torch.contiguous_format)
    x = torch.randn(1, 3, chip, chip)
    with torch.inference_mode():
        model(x)
        start = time.perf_counter()
        for _ in range(n_chips):
            model(x)
    model.to(memory_format=torch.channels_last)
    return time.perf_counter() - start


def bf16_seconds(ckpt: str, n_chips: int, chip: int) -> float:
    _, model = model_for(ckpt)
    x = torch.randn(1, 3, chip, chip).contiguous(memory_format=torch.channels_last)
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
        model(x)
        start = time.perf_counter()
        for _ in range(n_chips):
            model(x)
    return time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("scenes", nargs="+", type=Path)
    ap.add_argument("--model", required=True)
    ap.add_argument("--work", type=Path, default=Path("runs/bench_precision"))
    args = ap.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    agree = total = 0
    times = {"auto": [], "fp32": []}
    chips = 0
    for scene in args.scenes:
        outs = {}
        for precision in ("auto", "fp32"):
            out = args.work / f"{scene.stem}_{precision}.tif"
            res = predict_scene(scene, args.model, out, PredictOptions(precision=precision), overwrite=True)
            times[precision].append(res.seconds)
            chips += res.chips if precision == "auto" else 0
            with rasterio.open(out) as ds:
                outs[precision] = ds.read(1)
        valid = outs["fp32"] != NODATA
        agree += int((outs["auto"][valid] == outs["fp32"][valid]).sum())
        total += int(valid.sum())
    from geoseg.models.checkpoint import load_checkpoint
    chip = load_checkpoint(args.model).chip_size
    fwd32 = [fp32_nchw_seconds(args.model, 64, chip) for _ in range(2)]
    fwd16 = [bf16_seconds(args.model, 64, chip) for _ in range(2)]
    print(json.dumps({
        "pixels_compared": total, "agreement": agree / total,
        "predict_seconds_bf16": times["auto"], "predict_seconds_fp32_channels_last": times["fp32"],
        "forward_64_chips_fp32_nchw_s": fwd32, "forward_64_chips_bf16_channels_last_s": fwd16,
        "forward_speedup_bf16_vs_fp32_nchw": statistics.median(fwd32) / statistics.median(fwd16),
        "predict_speedup_bf16_vs_fp32": sum(times["fp32"]) / sum(times["auto"]),
    }, indent=1))


if __name__ == "__main__":
    main()
