"""Evaluation reports a person would rather look at than read: plots, a gallery, Markdown and JSON."""

from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from geoseg.evaluation.scoring import ChipScore, Evaluation
from geoseg.io.atomic import atomic_output, atomic_write_text
from geoseg.io.grid import GeoGrid
from geoseg.io.labels import LabelReader
from geoseg.io.raster import open_raster
from geoseg.outputs.panels import class_palette, scene_limits, stretch, tiles


def _pyplot():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def _save(fig, path: Path) -> Path:
    with atomic_output(path) as tmp:
        fig.savefig(tmp, dpi=110, bbox_inches="tight", format="png")
    _pyplot().close(fig)
    return path


def _plot_confusion(ev: Evaluation, path: Path) -> Path:
    """Row-normalised confusion matrix (truth rows, prediction columns) with class names and shares."""
    plt = _pyplot()
    idx = ev.schema.evaluated_indices
    names = [ev.schema.names[i] for i in idx]
    cm = ev.confusion[np.ix_(idx, idx)].astype(float)
    rows = cm.sum(1, keepdims=True)
    norm = np.divide(cm, rows, out=np.zeros_like(cm), where=rows > 0)
    fig, ax = plt.subplots(figsize=(1.0 + 0.8 * len(idx), 0.8 + 0.7 * len(idx)))
    im = ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    for r in range(len(idx)):
        for c in range(len(idx)):
            ax.text(c, r, f"{norm[r, c]:.0%}" if rows[r] else "–", ha="center", va="center", fontsize=8,
                    color="white" if norm[r, c] > 0.5 else "black")
    ax.set_xticks(range(len(idx)), names, rotation=40, ha="right")
    ax.set_yticks(range(len(idx)), names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("truth")
    ax.set_title("confusion matrix (each truth row sums to 100 %)")
    fig.colorbar(im, ax=ax, fraction=0.046)
    return _save(fig, path)


def _plot_iou(ev: Evaluation, path: Path, interval: tuple[float, float] | None = None) -> Path:
    """Per-class IoU bars in class colours, the mIoU as a line."""
    plt = _pyplot()
    report = ev.report
    names = list(report["classes"])
    ious = [report["classes"][n]["iou"] for n in names]
    colours = [tuple(v / 255 for v in ev.schema.colors[ev.schema.names.index(n)]) for n in names]
    fig, ax = plt.subplots(figsize=(6, 0.5 + 0.45 * len(names)))
    ax.barh(names, [0 if math.isnan(v) else v for v in ious], color=colours, edgecolor="black")
    for y, v in enumerate(ious):
        ax.text(min(v, 0.9) + 0.01 if not math.isnan(v) else 0.01, y, "n/a" if math.isnan(v) else f"{v:.3f}",
                va="center", fontsize=8)
    ax.axvline(report["miou"], color="black", linestyle="--", label=f"mIoU {report['miou']:.3f}")
    if interval and all(map(math.isfinite, interval)):
        ax.axvspan(*interval, color="grey", alpha=0.2,
                   label=f"95 % interval {interval[0]:.3f}–{interval[1]:.3f}")
    ax.set_xlim(0, 1)
    ax.invert_yaxis()
    ax.set_xlabel("IoU")
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=2, fontsize=8, frameon=False)
    return _save(fig, path)


def _plot_iou_curves(metrics_json: Path, path: Path, names: list[str], colors: list) -> Path | None:
    """Per-class validation IoU over epochs from a training run's ``metrics.json``."""
    rows = json.loads(Path(metrics_json).read_text(encoding="utf-8"))
    if not rows:
        return None
    plt = _pyplot()
    epochs = [r["epoch"] for r in rows]
    fig, ax = plt.subplots(figsize=(7, 4))
    for name, colour in zip(names, colors):
        key = f"val_iou_{name}"
        if key in rows[0]:
            c = tuple(v / 255 for v in colour)
            c = (0.6, 0.6, 0.6) if c == (1.0, 1.0, 1.0) else c  # white (barren) on white paper
            ax.plot(epochs, [r.get(key, float("nan")) for r in rows], marker="o", ms=3, color=c, label=name,
                    markeredgecolor="black", markeredgewidth=0.3)
    ax.plot(epochs, [r["val_miou"] for r in rows], color="black", lw=2.2, label="val mIoU")
    if "train_miou" in rows[0]:
        ax.plot(epochs, [r["train_miou"] for r in rows], color="black", lw=1.2, ls="--", label="train mIoU")
    ax.set_xlabel("epoch")
    ax.set_ylabel("IoU")
    ax.set_ylim(0, 1)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncol=2, loc="lower right")
    ax.set_title("validation IoU per class")
    return _save(fig, path)


def _render_gallery(ev: Evaluation, worst: list[tuple[ChipScore, float]], path: Path, label: str) -> Path:
    """Rows of image | truth | prediction (class colours) for the worst chips, captioned with scene, window,
    IoU."""
    import rasterio


    plt = _pyplot()
    palette = class_palette(ev.schema.colors)
    lut = ev.schema.code_to_index_lut(keep_ignored=True)
    fig, axes = plt.subplots(len(worst), 3, figsize=(7.5, 2.6 * len(worst)), squeeze=False)
    limits: dict[str, np.ndarray] = {}  # one stretch per scene
    for row, (chip, value) in zip(axes, worst):
        w = chip.window
        with open_raster(chip.prediction) as pred:
            p = lut[pred.read(1, window=w)]
            grid = GeoGrid.from_dataset(pred)
        t = LabelReader(chip.truth, grid, ev.schema, ev.label_field, align=True).read(
            w, (int(w.height), int(w.width)))
        if chip.image:
            with open_raster(chip.image) as src, rasterio.Env():
                if chip.image not in limits:
                    limits[chip.image] = scene_limits(src)
                img = stretch(src.read(window=w, boundless=True).astype(np.float32), limits[chip.image])
        else:
            img = np.full((*p.shape, 3), 255, np.uint8)
        for ax, tile, title in zip(row, tiles(img, t, p, palette), ("image", "truth", "prediction")):
            ax.imshow(tile, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_title(title, fontsize=8)
        name = Path(chip.image or chip.prediction).name
        row[0].set_ylabel(f"{name}\ncol {int(w.col_off)} row {int(w.row_off)}\n{label} {value:.3f}",
                          fontsize=7)
    fig.tight_layout()
    return _save(fig, path)


def _write_worst_csv(worst: list[tuple[ChipScore, float]], path: Path, label: str) -> Path:
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["scene", "prediction", "col_off", "row_off", "width", "height", label, "labelled_pixels"])
    for chip, value in worst:
        win = chip.window
        w.writerow([chip.image or "", chip.prediction, int(win.col_off), int(win.row_off), int(win.width),
                    int(win.height), f"{value:.4f}", int(chip.confusion.sum())])
    atomic_write_text(path, buf.getvalue())
    return path


def _markdown_report(ev: Evaluation, intervals: dict[str, tuple[float, float]], files: dict[str, Path],
                    worst: list[tuple[ChipScore, float]], label: str) -> str:
    r = ev.report
    lines = ["# geoseg evaluation", "",
             f"{r['pixels']:,} labelled pixels in {len(ev.scenes)} scene(s), {len(ev.chips)} chips.", "",
             "| score | value |", "| --- | --- |",
             f"| mIoU | {r['miou']:.4f} |", f"| frequency-weighted IoU | {r['fwiou']:.4f} |",
             f"| pixel accuracy | {r['accuracy']:.4f} |", f"| Cohen's kappa | {r['kappa']:.4f} |"]
    units = {"chips": len(ev.chips), "scenes": len(ev.scenes)}
    for unit, (lo, hi) in intervals.items():
        lines.append(f"| mIoU 95 % bootstrap interval over {units[unit]} {unit} | {lo:.4f} – {hi:.4f} |")
    lines += ["", "| class | IoU | precision | recall | F1 | support (px) |",
              "| --- | --- | --- | --- | --- | --- |"]
    for name, c in r["classes"].items():
        lines.append(f"| {name} | {c['iou']:.4f} | {c['precision']:.4f} | {c['recall']:.4f} "
                     f"| {c['f1']:.4f} | {c['support']:,} |")
    if worst:
        lines += ["", f"## Worst chips ({label})", "", "| scene | col | row | size | " + label + " |",
                  "| --- | --- | --- | --- | --- |"]
        for chip, value in worst:
            w = chip.window
            name = Path(chip.image or chip.prediction).name
            lines.append(f"| {name} | {int(w.col_off)} | {int(w.row_off)} | {int(w.width)}×{int(w.height)} "
                         f"| {value:.4f} |")
    lines += ["", "## Files", ""] + [f"- {k}: `{v.name}`" for k, v in files.items()]
    return "\n".join(lines) + "\n"


def write_report(ev: Evaluation, out_dir: Path, worst_k: int = 0, worst_class: str | None = None,
                 run_metrics: Path | None = None, bootstrap: int = 1000) -> dict[str, Any]:
    """Write metrics.json, report.md, confusion.png, iou.png (+ iou_curves.png, worst.png/.csv) into
    ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    intervals = ev.interval(bootstrap) if bootstrap else {}
    files: dict[str, Path] = {}
    files["confusion matrix"] = _plot_confusion(ev, out_dir / "confusion.png")
    files["IoU per class"] = _plot_iou(ev, out_dir / "iou.png",
                                      intervals.get("scenes") or intervals.get("chips"))
    if run_metrics and Path(run_metrics).is_file():
        curves = _plot_iou_curves(run_metrics, out_dir / "iou_curves.png", ev.schema.names, ev.schema.colors)
        if curves:
            files["IoU over epochs"] = curves
    label = f"IoU {worst_class}" if worst_class else "mIoU"
    worst = ev.worst(worst_k, worst_class) if worst_k else []
    if worst:
        files["worst chips"] = _render_gallery(ev, worst, out_dir / "worst.png", label)
        files["worst chips (table)"] = _write_worst_csv(worst, out_dir / "worst.csv", label)
    report = ev.report
    payload = {**report, "intervals_95": {k: list(v) for k, v in intervals.items()},
               "confusion": ev.confusion.tolist(), "class_names": ev.schema.names,
               "worst": [{"scene": c.image, "prediction": c.prediction, "col_off": int(c.window.col_off),
                          "row_off": int(c.window.row_off), "width": int(c.window.width),
                          "height": int(c.window.height), "score": v} for c, v in worst]}
    files["metrics"] = out_dir / "metrics.json"
    files["report"] = out_dir / "report.md"
    atomic_write_text(files["metrics"], json.dumps(payload, indent=1, default=float))
    atomic_write_text(files["report"], _markdown_report(ev, intervals, files, worst, label))
    units = {"chips": len(ev.chips), "scenes": len(ev.scenes)}
    return {"report": report, "intervals": intervals, "units": units, "files": files, "worst": worst}
