"""Chip loader throughput vs the model's training throughput, in one run.

    python -m tests.benchmarks.bench_loader [--chip 512] [--size 2448] [--chips 96] [--workers 0]

Makes (once, cached in --work) one synthetic scene of --size pixels in two forms:
a tiled JPEG GeoTIFF with a class-id GeoTIFF (geoseg's sample format), and the
DeepGlobe layout (``<id>_sat.jpg`` + ``<id>_mask.png`` RGB mask). Measures chips/s of
the training DataLoader (random chips with augmentation, labels decoded,
normalised) from each, windowed and with the reference's whole-image resize
(``downsize_res``), read directly and as training reads them (after the one-time
conversion to tiled GeoTIFF, whose cost is reported apart), and the chips/s of a
U-Net resnet34 training step (forward,
backward, Adam step; bf16 + channels_last) on the same chip size. Prints JSON
with medians and the loader/model ratios.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import time
from pathlib import Path

import numpy as np
import rasterio
import torch
from PIL import Image
from torch.utils.data import DataLoader

from geoseg.data.chips import ChipDataset
from geoseg.data.sample_data import write_scene
from geoseg.data.samplers import RandomChipSampler
from geoseg.data.scenes import scene_infos, tiled_copies
from geoseg.data.statistics import band_statistics
from geoseg.io.classes import DEEPGLOBE
from geoseg.io.manifest import SceneRecord
from geoseg.models.checkpoint import autocast_dtype, build_model

MODEL = {"classes": 7, "encoder_name": "resnet34", "encoder_weights": None, "in_channels": 3}


def prepare(work: Path, size: int) -> dict[str, SceneRecord]:
    work.mkdir(parents=True, exist_ok=True)
    tif, ids = work / f"loader_{size}.tif", work / f"loader_{size}_classes.tif"
    if not tif.exists():
        write_scene(work, f"loader_{size}", "train", size, seed=7, index=0, polygons=False)
    sat, mask = work / f"{size}_sat.jpg", work / f"{size}_mask.png"
    if not sat.exists():
        with rasterio.open(tif) as src:
            Image.fromarray(np.moveaxis(src.read(), 0, -1)).save(sat, quality=95)
        with rasterio.open(ids) as src:
            classes = src.read(1)
        colours = np.zeros((256, 3), np.uint8)
        colours[: len(DEEPGLOBE)] = [c.color for c in DEEPGLOBE.classes]
        Image.fromarray(colours[classes]).save(mask)
    return {"geotiff": SceneRecord(tif, ids, "train"), "deepglobe": SceneRecord(sat, mask, "train")}


def loader_chips_per_s(record: SceneRecord, chip: int, n: int, workers: int, downsize_res: int | None,
                       convert: Path | None = None) -> float:
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        scenes = scene_infos([record], [1, 2, 3], downsize_res)
    # as training does: JPEG/PNG converted once to tiled GeoTIFF (cached; the cost is reported apart)
    if convert:
        scenes = tiled_copies(scenes, convert)
    mean, std = band_statistics(scenes, [1, 2, 3])
    ds = ChipDataset(scenes, DEEPGLOBE, [1, 2, 3], chip, mean, std, [6])
    sampler = RandomChipSampler(scenes, chip, n, seed=1)
    loader = DataLoader(ds, batch_size=4, sampler=sampler, num_workers=workers)
    start = time.perf_counter()
    got = sum(len(b["image"]) for b in loader)
    return got / (time.perf_counter() - start)


def train_chips_per_s(chip: int, steps: int, batch: int) -> float:
    model = build_model("Unet", MODEL).to(memory_format=torch.channels_last).train()
    opt = torch.optim.Adam(model.parameters(), 3e-4)
    amp = autocast_dtype(torch.device("cpu"), "auto")
    x = torch.randn(batch, 3, chip, chip).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 6, (batch, chip, chip))
    loss_fn = torch.nn.CrossEntropyLoss()

    def step():
        with torch.autocast("cpu", dtype=amp or torch.float32, enabled=amp is not None):
            logits = model(x)
        loss = loss_fn(logits.float(), y)
        opt.zero_grad()
        loss.backward()
        opt.step()

    step()  # warm-up
    start = time.perf_counter()
    for _ in range(steps):
        step()
    return steps * batch / (time.perf_counter() - start)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--chip", type=int, default=512)
    ap.add_argument("--size", type=int, default=2448)
    ap.add_argument("--chips", type=int, default=96)
    ap.add_argument("--workers", type=int, default=0)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--train-steps", type=int, default=3)
    ap.add_argument("--work", type=Path, default=Path("runs/bench"))
    args = ap.parse_args()
    records = prepare(args.work, args.size)
    runs = []
    for _ in range(args.repeats):  # alternate, so both sides see the same machine
        r = {"train": train_chips_per_s(args.chip, args.train_steps, 4)}
        for name, rec in records.items():
            for res in (None, 512):
                label = "windowed" if res is None else "downsize_512"
                n = args.chips if res is None else args.chips // 4
                r[f"{name}_{label}_direct"] = loader_chips_per_s(rec, args.chip, n, args.workers, res)
                # as training reads it: JPEG/PNG and ≥ 2× coarser sampling converted once to tiled GeoTIFF
                cache = args.work / f"tiles_{name}_{res}"
                shutil.rmtree(cache, ignore_errors=True)
                start = time.perf_counter()
                tiled_copies(scene_infos([rec], [1, 2, 3], res), cache)
                r[f"{name}_{label}_convert_once_s"] = time.perf_counter() - start
                r[f"{name}_{label}_training"] = loader_chips_per_s(rec, args.chip, n, args.workers, res,
                                                                   cache)
        runs.append(r)
    med = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
    print(json.dumps({"chip": args.chip, "scene": args.size, "loader_workers": args.workers, "runs": runs,
                      "median_chips_per_s": med,
                      "loader_to_train_ratio": {k: v / med["train"] for k, v in med.items()
                                                if k != "train" and not k.endswith("_s")}},
                     indent=1))


if __name__ == "__main__":
    main()
