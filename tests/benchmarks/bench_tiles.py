"""The default tile against the training chip: held-out mIoU, class agreement and whole-command speed.

    python -m tests.benchmarks.bench_tiles --model <run>/best.ckpt [--split val] [--speed SCENE ...] \
        [--engine onnx] [--rounds 3]

Quality: ``evaluate_model`` predicts every scene of ``--split`` of the model's own run (its ``config.yaml``
beside the checkpoint, or ``--data``) twice, with ``--tile <training chip>`` (the tiling before the default
changed) and with the default tile, and scores both against the labels; printed: both mIoUs, the share of
valid pixels whose class is the same in both, and the tiles the default took. Speed: ``geoseg predict`` of
each ``--speed`` scene (default: the split's first scene), whole processes with start-up, the two tilings
alternated ``--rounds`` times after one untimed run of each (the engine's export is made then); medians of
wall time and peak RSS. The CPU is printed with the figures.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

import numpy as np
import rasterio

from geoseg.evaluation.evaluate import evaluate_model
from geoseg.inference.options import PredictOptions
from geoseg.models.checkpoint import load_checkpoint
from geoseg.models.hardware import cpu_name
from tests.benchmarks.bench_geoai import timed


def agreement(first: Path, second: Path) -> tuple[int, int]:
    """(pixels with the same class, valid pixels) over the class rasters of the same names in two folders."""
    same = valid = 0
    for path in sorted(first.glob("*.tif")):
        with rasterio.open(path) as a, rasterio.open(second / path.name) as b:
            x, y = a.read(1), b.read(1)
            mask = x != a.nodata
            same += int(((x == y) & mask).sum())
            valid += int(mask.sum())
    return same, valid


def tiles_used(folder: Path) -> list[str]:
    tiles = []
    for path in sorted(folder.glob("*.tif")):
        with rasterio.open(path) as ds:
            tiles.append(ds.tags()["tile"])
    return tiles


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--data", help="manifest or run config (default: the config.yaml beside the model)")
    ap.add_argument("--split", default="val")
    ap.add_argument("--speed", nargs="*", default=None, help="scenes timed (default: the split's first)")
    ap.add_argument("--engine", default="onnx")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--work", type=Path, default=Path("runs/bench_tiles"))
    args = ap.parse_args()
    ckpt = load_checkpoint(args.model)
    chip = ckpt.chip_size
    data = args.data or str(Path(args.model).with_name("config.yaml"))
    scores = {}
    for label, tile in (("chip", chip), ("default", None)):
        out = args.work / label
        options = PredictOptions(tile=tile, engine=args.engine)
        ev = evaluate_model(ckpt, data, out, args.split, options, overwrite=True)
        scores[label] = ev.metrics["miou"]
    same, valid = agreement(args.work / "chip" / "predictions", args.work / "default" / "predictions")
    print(f"CPU: {cpu_name()}; model {args.model} ({chip} px chips), split {args.split}, "
          f"engine {args.engine}")
    print(f"mIoU: training chip {scores['chip']:.4f}, default tile {scores['default']:.4f} "
          f"({scores['default'] - scores['chip']:+.4f}); same class on {100 * same / valid:.3f} % of "
          f"{valid:,} px; default tiles {', '.join(tiles_used(args.work / 'default' / 'predictions'))}")
    speed = args.speed or [sorted((args.work / "chip" / "predictions").glob("*.tif"))[0].stem]
    scenes = [s if Path(s).exists() else next(_split_images(data, args.split, s)) for s in speed]
    geoseg = str(Path(sys.executable).with_name("geoseg"))
    for scene in scenes:
        commands = {label: [geoseg, "predict", scene, "-o", str(args.work / f"speed-{label}.tif"), "--model",
                            args.model, "--engine", args.engine, "--overwrite", "--quiet", *extra]
                    for label, extra in (("chip", ["--tile", str(chip)]), ("default", []))}
        for command in commands.values():
            timed(command)
        runs = {label: [] for label in commands}
        for _ in range(args.rounds):
            for label, command in commands.items():
                runs[label].append(timed(command))
        med = {label: (statistics.median(r[0] for r in v), statistics.median(r[1] for r in v))
               for label, v in runs.items()}
        print(f"{scene}: training chip {med['chip'][0]:.2f} s, {med['chip'][1]:.2f} GB; default tile "
              f"{med['default'][0]:.2f} s, {med['default'][1]:.2f} GB "
              f"({med['chip'][0] / med['default'][0]:.2f}× faster); "
              f"seconds {np.round([r[0] for r in runs['chip']], 2).tolist()} / "
              f"{np.round([r[0] for r in runs['default']], 2).tolist()}")


def _split_images(data: str, split: str, stem: str):
    from geoseg.evaluation.evaluate import _records

    records, _ = _records(data, "class_id")
    return (str(r.image) for r in records if r.split == split and Path(r.image).stem == stem)


if __name__ == "__main__":
    main()
