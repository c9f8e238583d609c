"""A cold ``geoseg predict``: how long before the first chip, and where that time goes.

Each run is a fresh process that runs the real command (``geoseg.cli.main``) with the library's own
functions wrapped to note when they are first called: the interpreter and imports, loading the checkpoint,
building the model (or the ONNX Runtime session), and the first chip's forward; and whether torch was
imported at all. Medians of the repeats, after one run not counted (a checkpoint's first prediction may
export it to ONNX, once).

    python -m tests.benchmarks.bench_startup --model runs/sample/<run>/best.ckpt \
        --scene sample_data/test_1.tif
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from tests.benchmarks.bench_train_step import cpu_name

#: Run in the child: note the first call of each stage (seconds since the interpreter started).
CHILD = r"""
import json, sys, time
T0 = time.perf_counter()
marks = {}
def mark(name):
    marks.setdefault(name, time.perf_counter() - T0)
import geoseg.cli
mark("import geoseg.cli")
import geoseg.inference.predict, geoseg.inference.blocks
mark("import geoseg.inference.predict")
def wrap(module, name, stage, after=False):
    original = getattr(module, name)
    def wrapped(*args, **kwargs):
        if not after:
            mark(stage)
        out = original(*args, **kwargs)
        if after:
            mark(stage)
        return out
    setattr(module, name, wrapped)
wrap(geoseg.inference.predict, "select_engine", "checkpoint loaded", after=True)
wrap(geoseg.inference.blocks, "model_for", "model built", after=True)
wrap(geoseg.inference.blocks, "predict_probabilities", "first chip starts")
wrap(geoseg.inference.blocks, "predict_probabilities", "first chip done", after=True)
try:
    geoseg.cli.main(sys.argv[2:])
except SystemExit:
    pass
mark("command done")
marks["torch imported"] = "torch" in sys.modules
json.dump(marks, open(sys.argv[1], "w"))
"""


def run_once(args: argparse.Namespace, out: Path) -> dict[str, float]:
    marks = out / "marks.json"
    command = [sys.executable, "-c", CHILD, str(marks), "predict", args.scene, "-o", str(out / "lc.tif"),
               "--model", args.model, "--overwrite", "--quiet"]
    subprocess.run(command + (["--engine", args.engine] if args.engine else []), check=True)
    return json.loads(marks.read_text())


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--scene", required=True)
    parser.add_argument("--engine", default=None)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    print(cpu_name())
    with tempfile.TemporaryDirectory() as tmp:
        run_once(args, Path(tmp))  # a checkpoint's first prediction may export it (cached): not counted
        runs = [run_once(args, Path(tmp)) for _ in range(args.repeats)]
    torch_imported = [r.pop("torch imported") for r in runs]
    print(f"torch imported: {sum(torch_imported)} of {len(runs)} runs")
    stages = sorted({k for r in runs for k in r}, key=lambda k: statistics.median(r.get(k, 0) for r in runs))
    previous = 0.0
    for stage in stages:
        t = statistics.median(r[stage] for r in runs if stage in r)
        print(f"{stage:24s} {t:6.2f} s after start (+{t - previous:.2f})")
        previous = t


if __name__ == "__main__":
    main()
