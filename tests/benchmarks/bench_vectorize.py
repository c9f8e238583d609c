"""Block-wise vs whole-raster vectorization of a large class raster: time and peak memory.

    python -m tests.benchmarks.bench_vectorize [--size 16384] [--block 2048]

Makes (once) a class raster of --size² pixels from the sample generator's land-cover
layout, then vectorizes it in two child processes: geoseg's block-wise path
(``write_polygons`` → GeoPackage) and the baseline that reads the whole raster and runs
``rasterio.features.shapes`` on it at once (→ GeoPackage). Reports wall time, peak RSS
and polygon counts.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np


def make_classes(path: Path, size: int, seed: int = 4343) -> None:
    import rasterio
    from scipy.spatial import cKDTree

    from geoseg.data.sample_data import scene_grid
    from geoseg.data.synth import labels, make_landscape
    from geoseg.io.classes import DEEPGLOBE
    from geoseg.io.grid import blocks
    from geoseg.outputs.class_raster import class_raster_profile, write_class_metadata

    land = make_landscape(size, size, seed)
    tree = cKDTree(land.seeds_xy)
    with rasterio.open(path, "w", **class_raster_profile(scene_grid(size, 0))) as dst:
        write_class_metadata(dst, DEEPGLOBE)
        for w in blocks(size, size, 1024):
            r0, c0 = int(w.row_off), int(w.col_off)
            y, x = np.mgrid[r0:r0 + int(w.height), c0:c0 + int(w.width)].astype(np.float64) + 0.5
            cls, _, _ = labels(land, x, y, tree)
            dst.write(cls, 1, window=w)


def run_blockwise(raster: str, out: str, block: int) -> int:
    from geoseg.io.classes import DEEPGLOBE
    from geoseg.outputs.polygons import write_polygons
    return write_polygons(raster, out, DEEPGLOBE, block=block, summary=False).polygons


def run_whole(raster: str, out: str) -> int:
    import geopandas as gpd
    import rasterio
    from rasterio.features import shapes
    from shapely.geometry import shape

    with rasterio.open(raster) as src:
        data = src.read(1)
        rows = [(shape(g), int(v)) for g, v in shapes(data, mask=data != 255, connectivity=4,
                                                      transform=src.transform)]
        crs = src.crs
    gdf = gpd.GeoDataFrame({"class_id": [v for _, v in rows]}, geometry=[g for g, _ in rows], crs=crs)
    gdf["area_m2"] = gdf.area
    gdf.to_file(out, layer="landcover")
    return len(gdf)


def child(mode: str, raster: str, out: str, block: int) -> None:
    start = time.perf_counter()
    n = run_blockwise(raster, out, block) if mode == "blockwise" else run_whole(raster, out)
    seconds = time.perf_counter() - start
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"mode": mode, "seconds": seconds, "peak_rss_mib": rss, "polygons": n}))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", type=int, default=16384)
    ap.add_argument("--block", type=int, default=2048)
    ap.add_argument("--work", type=Path, default=Path("runs/bench_vectorize"))
    ap.add_argument("--child", nargs=3)
    args = ap.parse_args()
    if args.child:
        child(args.child[0], args.child[1], args.child[2], args.block)
        return
    args.work.mkdir(parents=True, exist_ok=True)
    raster = args.work / f"classes_{args.size}.tif"
    if not raster.exists():
        t = time.perf_counter()
        make_classes(raster, args.size)
        print(f"made {raster} in {time.perf_counter() - t:.0f} s", file=sys.stderr)
    results = []
    for mode in ("blockwise", "whole"):
        out = args.work / f"{mode}.gpkg"
        out.unlink(missing_ok=True)
        r = subprocess.run([sys.executable, "-m", "tests.benchmarks.bench_vectorize", "--block",
                            str(args.block), "--child", mode, str(raster), str(out)], capture_output=True,
                           text=True)
        if r.returncode:
            raise SystemExit(r.stderr)
        results.append(json.loads(r.stdout.strip().splitlines()[-1]))
    print(json.dumps({"size": args.size, "block": args.block, "results": results}, indent=1))


if __name__ == "__main__":
    main()
