"""``geoseg predict`` against geoai's ``semantic_segmentation``: whole processes, the same scene and the same
U-Net resnet34 weights, each tool with its defaults.

    python -m tests.benchmarks.bench_geoai --geoai-python /path/to/geoai-venv/bin/python \
        [--sizes 2048 4096] [--rounds 3] [--model trained.ckpt]

geoai is never a dependency of geoseg (its install is ~7 GB): give the Python of a separate virtual
environment where ``pip install geoai-py`` was run. The scene and the untrained checkpoint (7 classes, 512 px
chips: speed does not depend on the weights) are :mod:`tests.benchmarks.bench_predict`'s; the same weights are
saved as the plain state dict geoai loads. One untimed ``geoseg predict`` first makes the model's engines and
``auto``'s measurement (once per model and CPU, as for a user); then the two commands alternate, ``--rounds``
times per size, each in a fresh process: wall time and peak RSS (``wait4``) of the whole command, start-up
included. Prints the medians, geoseg's speed-up and the CPU.

``--model``: a trained checkpoint instead (a smp ``Unet`` with smp's default decoder, as geoai builds it, on 3
bands sampled as the scene is, 0.5 m): which engine ``auto`` may take depends on the weights (an untrained
model's nearly equal probabilities make any reduced precision change classes), not the speed of each engine.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

from geoseg.models.checkpoint import load_checkpoint
from geoseg.models.hardware import cpu_name
from tests.benchmarks.bench_predict import prepare

GEOAI = """
import sys, geoai
geoai.semantic_segmentation(sys.argv[1], sys.argv[2], sys.argv[3], architecture="unet",
                            encoder_name=sys.argv[5], num_channels=3, num_classes=int(sys.argv[4]),
                            quiet=True)
"""


def timed(command: list[str]) -> tuple[float, float]:
    """Wall seconds and peak RSS (GB) of ``command`` run to its end."""
    start = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(process.pid, 0)
    seconds = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(f"{command[:3]} failed: {process.stderr.read().decode()[-2000:]}")
    return seconds, usage.ru_maxrss / 1024 ** 2


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--geoai-python", required=True, help="the Python of a virtual environment with geoai-py")
    ap.add_argument("--sizes", type=int, nargs="+", default=[2048, 4096])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--work", type=Path, default=Path("runs/bench"))
    ap.add_argument("--model", type=Path, help="a trained checkpoint to use instead of the untrained one")
    args = ap.parse_args()
    geoseg = str(Path(sys.executable).with_name("geoseg"))
    results = {}
    for size in args.sizes:
        scene, ckpt = prepare(args.work, size, 512)
        ckpt = args.model or ckpt
        loaded = load_checkpoint(ckpt)
        weights = args.work / "state_dict.pth"  # written each time: --model may name another checkpoint
        torch.save(loaded.state_dict, weights)
        out = args.work / f"geoseg_{size}.tif"
        ours = [geoseg, "predict", str(scene), "-o", str(out), "--model", str(ckpt), "--overwrite", "--quiet"]
        theirs = [args.geoai_python, "-c", GEOAI, str(scene), str(args.work / f"geoai_{size}.tif"),
                  str(weights), str(len(loaded.classes)), loaded.model_config["encoder_name"]]
        first = subprocess.run([*ours[:-1]], capture_output=True, text=True, check=True)  # engines made once
        engine = next((line for line in first.stdout.splitlines() if "chips/s" in line), "")
        runs = {"geoseg": [], "geoai": []}
        for _ in range(args.rounds):
            runs["geoseg"].append(timed(ours))
            runs["geoai"].append(timed(theirs))
        median = {tool: (statistics.median(r[0] for r in rs), max(r[1] for r in rs))
                  for tool, rs in runs.items()}
        results[size] = {"runs": runs, "median_seconds": {t: m[0] for t, m in median.items()},
                         "peak_rss_gb": {t: m[1] for t, m in median.items()},
                         "speedup": median["geoai"][0] / median["geoseg"][0], "geoseg_summary": engine}
    print(json.dumps({"cpu": cpu_name(), "cores": os.cpu_count(), "results": results}, indent=1))


if __name__ == "__main__":
    main()
