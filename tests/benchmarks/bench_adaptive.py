"""Adaptive precision against the other engines: each engine's class raster against torch fp32's, its speed,
and the share of chips the adaptive engine predicts again in fp32.

    python -m tests.benchmarks.bench_adaptive --model runs/sample/<run>/best.ckpt sample_data/test_1.tif
    python -m tests.benchmarks.bench_adaptive --model <korea run>/best.ckpt --val-of <korea run>/best.ckpt

Every engine (torch fp32, ``auto``, ONNX Runtime fp32, int8 and adaptive) predicts all the scenes in its own
process (one engine's thread pool does not slow the next): once to warm up (the export, int8 model and
adaptive rule are made then, once per checkpoint, and not timed), then ``--rounds`` times, the engines
alternating round by round, each time twice in one process, the second (warm: the model built) timed.
Reported per engine: the share of valid pixels whose class equals torch fp32's, the median over rounds of the
summed prediction seconds (``PredictResult.seconds``: reading, the model and blending, as a user waits for
them), its ratio to ``auto``'s, and for the adaptive engine the chips it ran and recomputed and its rule.
``--tile`` predicts with tiles of that side (default: the training chip). Prints the CPU.
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

from geoseg.io.classes import NODATA
from geoseg.models.hardware import cpu_name

ENGINES = {"fp32": ("torch", "fp32"), "auto": ("auto", "auto"), "onnx": ("onnx", "auto"),
           "int8": ("int8", "auto"), "adaptive": ("adaptive", "auto")}

RUN = """
import json, sys
from pathlib import Path
from geoseg.inference import blocks
from geoseg.inference.predict import PredictOptions, predict_scene
from geoseg.models.adaptive import AdaptiveModel
engine, precision, model, out, passes, tile = sys.argv[1:7]
scenes = sys.argv[7:]
options = PredictOptions(engine=engine, precision=precision, tile=int(tile) or None)
seconds, name = [], ""
for _ in range(int(passes)):
    total = 0.0
    for scene in scenes:
        result = predict_scene(scene, model, Path(out) / (Path(scene).stem + ".tif"), options, overwrite=True)
        total += result.seconds
        name = result.engine
    seconds.append(total)
chips = recomputed = 0
for _, m in blocks._MODELS.values():
    if isinstance(m, AdaptiveModel):
        chips, recomputed = chips + m.chips, recomputed + m.recomputed
print(json.dumps({"engine": name, "seconds": seconds, "chips": chips, "recomputed": recomputed}))
"""


def run_engine(label: str, model: str, scenes: list[str], work: Path, passes: int, tile: int) -> dict:
    engine, precision = ENGINES[label]
    out = work / label
    out.mkdir(parents=True, exist_ok=True)
    r = subprocess.run([sys.executable, "-c", RUN, engine, precision, model, str(out), str(passes), str(tile),
                        *scenes], capture_output=True, text=True, check=True)
    return json.loads(r.stdout.strip().splitlines()[-1])  # "seconds": the last pass's is warm


def classes(path: Path) -> np.ndarray:
    with rasterio.open(path) as src:
        return src.read(1)


def held_out_scenes(checkpoint: str) -> list[str]:
    """The validation scenes of the run ``checkpoint`` was trained in (never its training scenes, which the
    int8 model and the adaptive rule are calibrated on)."""
    from geoseg.io.manifest import read_records
    from geoseg.models.checkpoint import load_checkpoint

    training = load_checkpoint(checkpoint).training
    records = read_records(training.manifest, list(training.split_fractions), training.seed)
    return [str(r.image) for r in records if r.split == "val"]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("scenes", nargs="*")
    ap.add_argument("--model", required=True)
    ap.add_argument("--val-of", help="also predict the validation scenes of this checkpoint's run")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--tile", type=int, default=0)
    ap.add_argument("--work", type=Path, default=Path("runs/bench_adaptive"))
    args = ap.parse_args()
    scenes = list(args.scenes) + (held_out_scenes(args.val_of) if args.val_of else [])
    labels = list(ENGINES)
    first = {label: run_engine(label, args.model, scenes, args.work, 1, args.tile) for label in labels}
    seconds: dict[str, list[float]] = {label: [] for label in labels}
    counts = {"chips": 0, "recomputed": 0}
    for _ in range(args.rounds):
        for label in labels:
            r = run_engine(label, args.model, scenes, args.work, 2, args.tile)
            seconds[label].append(r["seconds"][-1])
            if label == "adaptive":
                counts = {"chips": r["chips"], "recomputed": r["recomputed"]}
    agreement = {}
    for label in labels:
        same = total = 0
        for scene in scenes:
            reference = classes(args.work / "fp32" / (Path(scene).stem + ".tif"))
            other = classes(args.work / label / (Path(scene).stem + ".tif"))
            valid = reference != NODATA
            same += int((other[valid] == reference[valid]).sum())
            total += int(valid.sum())
        agreement[label] = same / total
    median = {label: statistics.median(s) for label, s in seconds.items()}
    print(json.dumps({
        "cpu": cpu_name(), "scenes": len(scenes), "pixels": total,
        "engines": {label: first[label]["engine"] for label in labels},
        "agreement_with_torch_fp32": agreement,
        "seconds": seconds, "median_seconds": median,
        "speed_vs_auto": {label: median["auto"] / median[label] for label in labels},
        "adaptive_chips": counts["chips"], "adaptive_recomputed": counts["recomputed"],
        "adaptive_recomputed_share": counts["recomputed"] / max(counts["chips"], 1),
        "adaptive_rule": _adaptive_rule(args.model),
    }, indent=1))


def _adaptive_rule(model: str) -> dict:
    """The adaptive model file's rule and what it was calibrated on."""
    from geoseg.models.checkpoint import load_checkpoint
    from geoseg.models.engines import engine_folder

    found = sorted(engine_folder(load_checkpoint(model)).glob("*.adaptive"))
    return json.loads(found[-1].read_text()) if found else {}


if __name__ == "__main__":
    main()
