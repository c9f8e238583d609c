"""Predict throughput vs the bare model forward, side by side in one run.

    python -m tests.benchmarks.bench_predict [--size 4096] [--repeats 2] [--precision auto]

Makes (once, cached in --work) a synthetic scene of --size pixels and an untrained
U-Net resnet34 checkpoint with 512 px chips (speed does not depend on the weights),
then alternates: (a) the bare model forward over as many chips as predict runs,
at the same batch size and precision; (b) ``predict_scene`` end to end, file to
file (dask, reading, blending, writing the class GeoTIFF). Reports medians and
the ratio of throughputs.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import rasterio
import torch

from geoseg.classes import DEEPGLOBE
from geoseg.models import Checkpoint, autocast_dtype, build_model, save_checkpoint
from geoseg.predict import PredictOptions, dask_client, model_for, predict_scene
from geoseg.sampledata import write_scene

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
        save_checkpoint(Checkpoint("Unet", MODEL, model.state_dict(), DEEPGLOBE, [1, 2, 3], [120.0] * 3,
                                   [60.0] * 3, chip, 0.5), ckpt)
    return scene, ckpt


def bare_forward(ckpt: Path, n_chips: int, chip: int, batch: int, precision: str, threads: int) -> float:
    """Seconds for the model's forward alone on ``n_chips`` chips (channels_last, same batch and precision)."""
    _, model = model_for(str(ckpt), threads)
    device = next(model.parameters()).device
    amp = autocast_dtype(device, precision)
    x = torch.randn(batch, 3, chip, chip).contiguous(memory_format=torch.channels_last)

    def forward():
        with torch.inference_mode(), torch.autocast(device.type, dtype=amp or torch.float32, enabled=amp is not None):
            model(x)

    forward()  # warm-up
    start = time.perf_counter()
    for _ in range(-(-n_chips // batch)):
        forward()
    return time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", type=int, default=4096)
    ap.add_argument("--chip", type=int, default=512)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--precision", default="auto")
    ap.add_argument("--batch-size", type=int, default=1)
    ap.add_argument("--block-chips", type=int, default=4)
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--work", type=Path, default=Path("runs/bench"))
    args = ap.parse_args()
    scene, ckpt = prepare(args.work, args.size, args.chip)
    opts = PredictOptions(precision=args.precision, batch_size=args.batch_size, block_chips=args.block_chips,
                          workers=args.workers)
    threads = max(1, (torch.get_num_threads()))
    bare, bare_worker, pred = [], [], []
    chips = None
    for _ in range(args.repeats):
        res = predict_scene(scene, ckpt, args.work / "out.tif", opts, overwrite=True)
        chips = res.chips
        pred.append(res.seconds)
        bare.append(bare_forward(ckpt, chips, args.chip, args.batch_size, args.precision, threads))
        with dask_client(opts) as client:  # the same forward loop, run where predict runs it
            bare_worker.append(client.submit(bare_forward, ckpt, chips, args.chip, args.batch_size,
                                             args.precision, threads, pure=False).result())
    with rasterio.open(args.work / "out.tif") as ds:
        assert ds.shape == (args.size, args.size)
    b, bw, p = statistics.median(bare), statistics.median(bare_worker), statistics.median(pred)
    warm = statistics.median(pred[1:]) if len(pred) > 1 else p
    report = {"size": args.size, "chips": chips, "precision": args.precision, "batch_size": args.batch_size,
              "bare_forward_s": bare, "bare_forward_in_dask_worker_s": bare_worker, "predict_s": pred,
              "bare_chips_per_s": chips / b, "bare_in_worker_chips_per_s": chips / bw,
              "predict_chips_per_s": chips / p, "predict_warm_chips_per_s": chips / warm,
              "ratio_median": b / p, "ratio_warm": b / warm, "ratio_warm_vs_worker_forward": bw / warm}
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
