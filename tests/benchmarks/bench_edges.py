"""Scene edges: does the model do better when chips that run past the scene see the scene reflected, or the
band means (zero after normalisation)?

    python -m tests.benchmarks.bench_edges --model runs/sample/<run>/best.ckpt \\
        sample_data/test_1.tif sample_data/test_1_classes.tif [SCENE LABELS …]

Predicts each scene both ways and prints, as JSON, the pixel accuracy of labelled pixels within 16, 32 and 64
px of the raster's border and over the whole scene. Use scenes the model was not trained on.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import warnings
from pathlib import Path

import numpy as np
import rasterio

import geoseg.inference.blocks as inference
from geoseg.inference.predict import PredictOptions, predict_scene
from geoseg.models.checkpoint import load_checkpoint

BANDS = (16, 32, 64)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("pairs", nargs="+", help="scene and labels, alternating")
    args = parser.parse_args()
    pairs = list(zip(args.pairs[::2], args.pairs[1::2]))
    lut = load_checkpoint(args.model).classes.code_to_index_lut()
    warnings.simplefilter("ignore")
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        for mode in ("zero", "reflect"):
            inference.EDGE_PADDING = mode
            hits = {b: [0, 0] for b in (*BANDS, None)}
            for k, (scene, truth) in enumerate(pairs):
                path = Path(tmp) / f"{mode}_{k}.tif"
                predict_scene(scene, args.model, path, PredictOptions(), overwrite=True)
                with rasterio.open(path) as p, rasterio.open(truth) as t:
                    pred, true = lut[p.read(1)], lut[t.read(1)]
                h, w = pred.shape
                y, x = np.mgrid[0:h, 0:w]
                border = np.minimum(np.minimum(y, h - 1 - y), np.minimum(x, w - 1 - x))
                scored = (true != 255) & (pred != 255)
                for b in hits:
                    m = scored if b is None else scored & (border < b)
                    hits[b][0] += int((pred[m] == true[m]).sum())
                    hits[b][1] += int(m.sum())
            out[mode] = {("all" if b is None else f"within {b} px"): {"accuracy": round(c / max(n, 1), 4),
                                                                        "pixels": n}
                         for b, (c, n) in hits.items()}
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
