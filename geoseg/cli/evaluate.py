"""``geoseg evaluate``: scores, plots and the report."""

from __future__ import annotations

from pathlib import Path

import click

from geoseg.cli._app import cli, model_option, overwrite_option, quiet_option, report_results
from geoseg.inference.options import TTA_MODES
from geoseg.progress import set_quiet


@cli.command()
@click.argument("prediction", type=click.Path(), required=False)
@click.option("--truth", "-t", type=click.Path(), default=None,
              help="Labels: class ids, RGB mask or polygons.")
@click.option("--label-field", default="class_id", show_default=True,
              help="The polygon labels' class attribute: class codes or class names.")
@click.option("--truth-codes", default=None, metavar="NAME=CODE,…",
              help="The codes the labels use for the classes, where they differ from the model's "
                   "(e.g. building=10,road=30); unnamed classes keep their own.")
@model_option
@click.option("--data", type=click.Path(), default=None,
              help="A manifest, DeepGlobe folder or run config: predict its --split with --model, then "
                   "score.")
@click.option("--split", default="test", show_default=True, help="Which split of --data to evaluate.")
@click.option("--image", type=click.Path(), default=None,
              help="The scene PREDICTION was made from (default: recorded in its tags), for the gallery.")
@click.option("--out", "out_dir", type=click.Path(file_okay=False), default=None,
              help="Report folder (default: <prediction>_evaluation beside PREDICTION, or "
                   "with --data evaluation_<split> beside a run's best.ckpt, <name>_evaluation_<split> "
                   "beside any other checkpoint).")
@click.option("--worst", type=click.IntRange(0), default=8, show_default=True,
              help="List and render the K chips with the lowest IoU (0: none).")
@click.option("--class", "class_name", default=None,
              help="Rank the worst chips by this class's IoU (default mIoU).")
@click.option("--chip", type=click.IntRange(16), default=256, show_default=True,
              help="Chip size for the per-chip scores.")
@click.option("--bootstrap", type=click.IntRange(0), default=1000, show_default=True,
              help="Bootstrap resamples for the mIoU interval (0: none).")
@click.option("--tta", type=click.Choice(TTA_MODES), default="none", show_default=True,
              help="With --model: test-time augmentation, as geoseg predict --tta.")
@click.option("--json", "json_path", type=click.Path(), default=None,
              help="Also write the metrics JSON here.")
@overwrite_option
@quiet_option
def evaluate(prediction, truth, label_field, truth_codes, model, data, split, image, out_dir, worst,
             class_name, chip, bootstrap, tta, json_path, overwrite, quiet) -> None:
    """Score predictions against labels: metrics, plots, an error map and the worst chips.

    Either PREDICTION --truth LABELS (an existing class raster), or --model CKPT --data DATA [--split test].
    Without --model the classes are those of the checkpoint recorded in PREDICTION, else DeepGlobe's.
    """
    from geoseg.evaluation.evaluate import evaluate as run_evaluation
    from geoseg.io.classes import parse_code_mapping

    set_quiet(quiet)
    result = run_evaluation(prediction, truth, model=model, data=data, split=split, image=image,
                            out_dir=out_dir, worst=worst, class_name=class_name, chip=chip,
                            bootstrap=bootstrap, json_path=json_path, overwrite=overwrite,
                            label_field=label_field,
                            truth_codes=parse_code_mapping(truth_codes) if truth_codes else None, tta=tta)
    _print_report(result)
    click.echo(f"report: {result['files']['report']}")
    report_results(report=result["files"]["report"], folder=Path(result["files"]["report"]).parent)


def _print_report(result: dict) -> None:
    r = result["report"]
    click.echo(f"{'class':>14s}  {'IoU':>7s} {'prec.':>7s} {'recall':>7s} {'F1':>7s} {'support':>12s}")
    for name, c in r["classes"].items():
        click.echo(f"{name:>14s}  {c['iou']:7.4f} {c['precision']:7.4f} {c['recall']:7.4f} {c['f1']:7.4f} "
                   f"{c['support']:12,d}")
    for key in ("miou", "fwiou", "accuracy", "kappa"):
        click.echo(f"{key:>14s}  {r[key]:7.4f}")
    for unit, (lo, hi) in result["intervals"].items():
        n = result["units"][unit]
        rough = "; few units, a rough interval" if n < 20 else ""
        click.echo(f"{'miou 95% CI':>14s}  {lo:.4f}–{hi:.4f} (bootstrap over {n} {unit}{rough})")
    for chip, value in result["worst"][:3]:
        w = chip.window
        click.echo(f"{'worst chip':>14s}  {Path(chip.image or chip.prediction).name} col {int(w.col_off)} "
                   f"row {int(w.row_off)}: {value:.3f}")
