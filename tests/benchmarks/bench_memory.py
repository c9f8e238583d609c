"""Peak memory of predict on a 4096² and a 16384² scene (each in its own process).

    python -m tests.benchmarks.bench_memory [--sizes 4096,16384]

Scenes come from the sample generator (made once, block by block); the model is the
untrained U-Net resnet34 checkpoint with 512 px chips of bench_predict. Reports peak RSS
(ru_maxrss of the child process) and the growth from the smallest to the largest scene.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path


def child(scene: str, ckpt: str, out: str) -> None:
    from geoseg.inference.predict import PredictOptions, predict_scene
    start = time.perf_counter()
    res = predict_scene(scene, ckpt, out, PredictOptions(), overwrite=True)
    print(json.dumps({"scene": scene, "chips": res.chips, "seconds": time.perf_counter() - start,
                      "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="4096,16384")
    ap.add_argument("--work", type=Path, default=Path("runs/bench"))
    ap.add_argument("--child", nargs=3)
    args = ap.parse_args()
    if args.child:
        child(*args.child)
        return
    from tests.benchmarks.bench_predict import prepare
    results = []
    for size in (int(s) for s in args.sizes.split(",")):
        scene, ckpt = prepare(args.work, size, 512)
        r = subprocess.run([sys.executable, "-m", "tests.benchmarks.bench_memory", "--child", str(scene),
                            str(ckpt), str(args.work / f"mem_out_{size}.tif")], capture_output=True,
                           text=True)
        if r.returncode:
            raise SystemExit(r.stderr)
        results.append({"size": size, **json.loads(r.stdout.strip().splitlines()[-1])})
    growth = results[-1]["peak_rss_mib"] / results[0]["peak_rss_mib"] - 1
    print(json.dumps({"results": results, "rss_growth": growth}, indent=1))


if __name__ == "__main__":
    main()
