"""Seams: are class changes denser along chip edges than elsewhere?

    python -m tests.benchmarks.bench_seams --model runs/sample/<run>/best.ckpt SCENE.tif [SCENE.tif …]
        [--overlaps 0,32]

For each overlap, predicts the scenes and measures the rate of class changes between
neighbouring pixels across the boundaries that coincide with a chip edge of the global
grid, and across all other boundaries. A ratio near 1 means no seams.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import rasterio

from geoseg.inference.predict import PredictOptions, predict_scene
from geoseg.io.classes import NODATA
from geoseg.io.grid import ChipGrid
from geoseg.models.checkpoint import load_checkpoint


def edge_positions(length: int, grid: ChipGrid) -> set[int]:
    """Pixel boundaries (between p-1 and p) where some chip starts or ends."""
    edges = set()
    for k in range(max(grid.rows, grid.cols) + 1):
        for e in (k * grid.stride - grid.offset, k * grid.stride - grid.offset + grid.chip):
            if 0 < e < length:
                edges.add(e)
    return edges


def change_rates(classes: np.ndarray, grid: ChipGrid) -> tuple[int, int, int, int]:
    """(changes on edges, boundaries on edges, changes elsewhere, boundaries elsewhere)."""
    out = np.zeros(4, np.int64)
    for axis in (0, 1):
        a = classes if axis == 1 else classes.T
        diff = (a[:, 1:] != a[:, :-1]) & (a[:, 1:] != NODATA) & (a[:, :-1] != NODATA)
        valid = (a[:, 1:] != NODATA) & (a[:, :-1] != NODATA)
        on = np.zeros(a.shape[1] - 1, bool)
        for e in edge_positions(a.shape[1], grid):
            on[e - 1] = True
        out += [diff[:, on].sum(), valid[:, on].sum(), diff[:, ~on].sum(), valid[:, ~on].sum()]
    return tuple(int(v) for v in out)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("scenes", nargs="+", type=Path)
    ap.add_argument("--model", required=True)
    ap.add_argument("--overlaps", default="0,32")
    ap.add_argument("--work", type=Path, default=Path("runs/bench_seams"))
    args = ap.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    chip = load_checkpoint(args.model).chip_size
    report = {}
    for overlap in (int(v) for v in args.overlaps.split(",")):
        totals = np.zeros(4, np.int64)
        for scene in args.scenes:
            out = args.work / f"{scene.stem}_o{overlap}.tif"
            predict_scene(scene, args.model, out, PredictOptions(overlap=overlap), overwrite=True)
            with rasterio.open(out) as ds:
                classes = ds.read(1)
            grid = ChipGrid.for_scene(classes.shape[1], classes.shape[0], chip, overlap)
            totals += change_rates(classes, grid)
        on_rate, off_rate = totals[0] / totals[1], totals[2] / totals[3]
        report[f"overlap_{overlap}"] = {"changes_per_boundary_on_chip_edges": on_rate,
                                        "changes_per_boundary_elsewhere": off_rate,
                                        "ratio": on_rate / off_rate, "edge_boundaries": int(totals[1])}
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
