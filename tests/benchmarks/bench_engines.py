"""Prediction engines on this CPU: chips/s of each engine at 512 px, and each engine's class raster against
torch fp32's on a trained model.

    python -m tests.benchmarks.bench_engines --model runs/sample/<run>/best.ckpt \
        --scene sample_data/test_1.tif

Speed: an untrained U-Net resnet34 with 512 px chips (speed does not depend on the
weights), batch 1, each engine in its own process (one engine's thread pool does not
slow the next), warm-up first, median of ``--repeats``: torch fp32 NCHW, torch fp32
channels_last, torch bf16 autocast (where the CPU has bf16), ONNX Runtime fp32 and
int8 (static QDQ quantization, calibrated on chips of ``--scene``). Agreement:
``predict_scene`` of ``--scene`` with ``--model`` through each engine, the share of
pixels whose class equals torch fp32's. Prints the CPU it ran on.
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
from pathlib import Path

import rasterio
import torch

from geoseg.io.classes import DEEPGLOBE
from geoseg.models.checkpoint import Checkpoint, build_model, save_checkpoint

MODEL = {"classes": 7, "encoder_name": "resnet34", "encoder_weights": None, "in_channels": 3}

SPEED = """
import json, statistics, sys, time
import numpy as np, torch
from geoseg.models.engines import select_engine
from geoseg.models.checkpoint import load_checkpoint
engine, ckpt_path, scene = sys.argv[1:4]
chips, repeats = int(sys.argv[4]), int(sys.argv[5])
ckpt = load_checkpoint(ckpt_path)
kind = engine if engine in ("onnx", "int8") else "torch"
chosen = select_engine(ckpt, kind, "bf16" if engine == "torch-bf16" else "fp32").prepare(scene).checkpoint
model = chosen.build(torch.get_num_threads())
if engine in ("onnx", "int8"):  # ONNX Runtime: numpy in, the probabilities prediction uses out
    x = np.random.default_rng(0).normal(size=(1, 3, ckpt.chip_size, ckpt.chip_size)).astype(np.float32)
    forward = model.probabilities
else:
    fmt = torch.contiguous_format if engine == "torch-nchw" else torch.channels_last
    model = model.to(memory_format=fmt)
    x = torch.randn(1, 3, ckpt.chip_size, ckpt.chip_size).contiguous(memory_format=fmt)
    def forward(x):
        with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16,
                                                    enabled=engine == "torch-bf16"):
            return torch.softmax(model(x), 1)
def run(n):
    t = time.perf_counter()
    for _ in range(n):
        forward(x)
    return n / (time.perf_counter() - t)
run(2)
print(json.dumps({"chips_per_s": statistics.median(run(chips) for _ in range(repeats))}))
"""


def speed_checkpoint(work: Path) -> Path:
    path = work / "unet_resnet34_512.ckpt"
    if not path.exists():
        torch.manual_seed(0)
        weights = build_model("Unet", MODEL).state_dict()
        save_checkpoint(Checkpoint(architecture="Unet", model_config=MODEL, state_dict=weights,
                                   classes=DEEPGLOBE, bands=[1, 2, 3], mean=[120.0] * 3, std=[60.0] * 3,
                                   chip_size=512, resolution=0.5), path)
    return path


def agreement(model: Path, scene: Path, work: Path, engines: list[str]) -> dict[str, float]:
    from geoseg.inference.predict import PredictOptions, predict_scene

    rasters = {}
    for engine in ["torch-fp32", *engines]:
        kind, precision = {"torch-fp32": ("torch", "fp32"), "torch-bf16": ("torch", "bf16"),
                           "onnx": ("onnx", "fp32"), "int8": ("int8", "fp32")}[engine]
        out = work / f"agreement_{engine}.tif"
        predict_scene(scene, model, out, PredictOptions(engine=kind, precision=precision), overwrite=True)
        with rasterio.open(out) as src:
            rasters[engine] = src.read(1)
    base = rasters["torch-fp32"]
    valid = base != 255
    return {e: float((rasters[e][valid] == base[valid]).mean()) for e in engines}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, required=True, help="a trained checkpoint (agreement)")
    parser.add_argument("--scene", type=Path, required=True)
    parser.add_argument("--chips", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--work", type=Path, default=Path("/tmp/geoseg-bench-engines"))
    parser.add_argument("--agreement-only", action="store_true", help="skip the speeds (e.g. a second model)")
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    from geoseg.models.checkpoint import autocast_dtype

    bf16 = autocast_dtype(torch.device("cpu"), "auto") is not None
    engines = ["torch-nchw", "torch-cl"] + (["torch-bf16"] if bf16 else []) + ["onnx", "int8"]
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    print(f"CPU: {cpu}; torch capability {torch.backends.cpu.get_cpu_capability()}, "
          f"bf16 {'yes' if bf16 else 'no'}, {torch.get_num_threads()} threads")
    ckpt = speed_checkpoint(args.work)
    for engine in [] if args.agreement_only else engines:
        command = [sys.executable, "-c", SPEED, engine, str(ckpt), str(args.scene), str(args.chips),
                   str(args.repeats)]
        done = subprocess.run(command, capture_output=True, text=True, check=True)
        speed = json.loads(done.stdout.strip().splitlines()[-1])["chips_per_s"]
        print(f"{engine:>11}: {speed:5.2f} chips/s (512 px, U-Net resnet34, batch 1)")
    shown = [e for e in engines if e not in ("torch-nchw", "torch-cl")]
    for engine, share in agreement(args.model, args.scene, args.work, shown).items():
        print(f"{engine:>11}: class raster agrees with torch fp32 on {share:.4%} of {args.scene.name}'s "
              "pixels")


if __name__ == "__main__":
    main()
