"""Would torch bf16, with ONNX Runtime fp32 predicting again the tiles where bf16 is unsure, beat ONNX Runtime
fp32 alone? The adaptive engine's rule (:func:`geoseg.models.adaptive.calibrate`) calibrated for bf16 instead
of int8, on tiles of several sides drawn at random from the model's training scenes.

    python -m tests.benchmarks.bench_recompute --model <run>/best.ckpt [--pixels-of 8] [--sides 128 256 512]

For each side: the rule, the share of tiles it sends to fp32 (to keep bf16's disagreement with fp32 at the
adaptive engine's target, half of 0.1 %), both engines' milliseconds per megapixel timed on those tiles one at
a time (``auto``'s timing: medians of 3 rounds), and the cost per megapixel of bf16 plus its recomputed share
in fp32 against fp32's. ``--pixels-of N``: as many pixels per side as N tiles of 512 px. Prints the CPU.
"""

from __future__ import annotations

import argparse

import numpy as np

from geoseg.models.adaptive import calibrate
from geoseg.models.checkpoint import load_checkpoint
from geoseg.models.engine_speed import _ms_per_tile
from geoseg.models.engines import _bf16_forward, _calibration_chips, _exported_model
from geoseg.models.hardware import cpu_name


class _Bf16:
    def __init__(self, ckpt):
        self.probabilities = _bf16_forward(ckpt)


def ms_per_mpx(model, tiles: np.ndarray) -> float:
    """Milliseconds a megapixel, ``tiles`` predicted one at a time (``auto``'s own timing: the median of its
    rounds, after a warm-up)."""
    return _ms_per_tile({"model": model.probabilities}, tiles)["model"] / (tiles[0, 0].size / 1e6)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--pixels-of", type=int, default=8)
    ap.add_argument("--sides", type=int, nargs="+", default=[128, 256, 512])
    args = ap.parse_args()
    ckpt = load_checkpoint(args.model)
    fp32 = load_checkpoint(_exported_model(ckpt)).build()
    bf16 = _Bf16(ckpt)
    print(f"CPU: {cpu_name()}")
    for side in args.sides:
        n = max(1, args.pixels_of * (512 // side) ** 2)
        tiles = _calibration_chips(ckpt, args.model, n=n, at_random=True, side=side)
        c = calibrate(bf16, fp32, tiles)
        fast, exact = ms_per_mpx(bf16, tiles), ms_per_mpx(fp32, tiles)
        both = fast + c.recomputed_share * exact
        print(f"{side} px, {n} tiles: bf16 alone differs on {c.int8_disagreement:.3%} of the pixels; "
              f"the rule (margin {c.rule.margin}, share {c.rule.share:.4f}) recomputes "
              f"{c.recomputed_share:.1%} of the tiles, leaving {c.residual_disagreement:.3%}; "
              f"bf16 {fast:.0f} ms/Mpx, fp32 {exact:.0f} ms/Mpx, bf16 + recomputed {both:.0f} ms/Mpx "
              f"({exact / both:.2f}× fp32)", flush=True)


if __name__ == "__main__":
    main()
