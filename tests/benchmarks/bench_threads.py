"""torch's forward on the main thread vs on a second thread, in one process.

    python -m tests.benchmarks.bench_threads [--chips 30] [--repeats 3]

Uses the untrained U-Net resnet34 checkpoint of bench_predict (512 px, bf16). Alternates
the same forward loop on the main thread and on a new thread, and reports chips/s and
the cores in use (process CPU time / wall time) for each. This is the measurement behind
the README's caveat about a model run on the main thread slowing dask's worker thread.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import threading
import time
from pathlib import Path

import torch

from geoseg.inference.blocks import model_for
from tests.benchmarks.bench_predict import prepare


def forward_loop(ckpt: Path, n: int, out: list, name: str) -> None:
    _, model = model_for(str(ckpt))
    x = torch.randn(1, 3, 512, 512).contiguous(memory_format=torch.channels_last)
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
        for _ in range(3):
            model(x)
        cpu0, t0 = os.times(), time.perf_counter()
        for _ in range(n):
            model(x)
        cpu1, wall = os.times(), time.perf_counter() - t0
    used = (cpu1.user + cpu1.system - cpu0.user - cpu0.system) / wall
    out.append({"where": name, "chips_per_s": n / wall, "cores_in_use": used})


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--chips", type=int, default=30)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--work", type=Path, default=Path("runs/bench"))
    args = ap.parse_args()
    _, ckpt = prepare(args.work, 4096, 512)
    runs: list[dict] = []
    for _ in range(args.repeats):
        forward_loop(ckpt, args.chips, runs, "main thread")
        t = threading.Thread(target=forward_loop, args=(ckpt, args.chips, runs, "second thread"))
        t.start()
        t.join()
    summary = {w: {k: statistics.median(r[k] for r in runs if r["where"] == w) for k in ("chips_per_s",
                                                                                         "cores_in_use")}
               for w in ("main thread", "second thread")}
    print(json.dumps({"runs": runs, "medians": summary}, indent=1))


if __name__ == "__main__":
    main()
