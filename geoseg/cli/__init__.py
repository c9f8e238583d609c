"""``geoseg`` command line: parse options, call the library, print. Nothing else lives here."""

from __future__ import annotations

import logging
import os
import signal
import sys
import warnings
from pathlib import Path

import click

from geoseg import __version__
from geoseg.errors import GeoSegError, GeoSegWarning
from geoseg.inference.options import PredictOptions, VectorOptions
from geoseg.inference.options import declared as options_of
from geoseg.progress import set_quiet

_debug = False

# Options several commands share, declared once (as rasterio's rio/options.py does).
quiet_option = click.option("--quiet", "-q", is_flag=True, help="No progress bars or status lines.")
model_option = click.option("--model", "-m", type=click.Path(), default=None,
                            help="Checkpoint; default: the one set with set-default-model, else the latest "
                                 "run's best.")
overwrite_option = click.option("--overwrite", is_flag=True, help="Replace existing outputs.")


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="geoseg")
@click.option("--debug", is_flag=True, help="Show tracebacks for errors.")
def cli(debug: bool) -> None:
    """Land-cover segmentation for satellite and aerial imagery."""
    global _debug
    _debug = debug
    # a command runs: a scene without georeferencing is named once in a geoseg warning, not once per read
    from rasterio.errors import NotGeoreferencedWarning
    warnings.filterwarnings("ignore", category=NotGeoreferencedWarning)


@cli.command()
@click.option("--config", "-c", "config_path", type=click.Path(dir_okay=False), default=None,
              help="YAML run config, e.g. pipelines/sample.yaml.")
@click.option("--resume", type=click.Path(dir_okay=False), default=None,
              help="Continue a run exactly from its last.ckpt (its own config unless --config is given).")
@click.option("--epochs", type=int, default=None, help="Override the config's epochs.")
@click.option("--until-epoch", type=click.IntRange(1), default=None,
              help="Stop after this epoch; continue later with --resume (e.g. time-limited jobs).")
@click.option("--budget", default=None, metavar="TIME",
              help="Train within this time (15m, 90s, 1h30m): chips per epoch set from the measured speed.")
@click.option("--set", "settings", multiple=True, metavar="KEY=VALUE",
              help="Override a config key (YAML value; model_config.encoder_name=resnet18 for a nested one). "
                   "Repeatable.")
@quiet_option
def train(config_path: str | None, resume: str | None, epochs: int | None, until_epoch: int | None,
          budget: str | None, settings: tuple[str, ...], quiet: bool) -> None:
    """Train a model as a run config says; writes best.ckpt, last.ckpt and metrics to the run folder."""
    from geoseg.training.config import config_from_checkpoint, load_config
    from geoseg.training.trainer import train as run_training

    set_quiet(quiet)
    if not config_path and not resume:
        raise click.UsageError("give --config, or --resume with a run's last.ckpt")
    overrides = {k: v for k, v in (("epochs", epochs), ("budget", budget)) if v is not None} or None
    if config_path:
        cfg = load_config(config_path, overrides, list(settings))
    else:
        if settings:
            raise click.UsageError("--set changes a config file's keys; give --config with it")
        cfg = config_from_checkpoint(resume, overrides)
    result = run_training(cfg, resume=resume, until_epoch=until_epoch)
    if os.environ.get("RANK", "0") == "0":  # under torchrun, rank 0 speaks for all
        click.echo(f"best val mIoU {result.best_val_miou:.3f}; best checkpoint {result.best}")


@cli.command()
@click.argument("checkpoint", type=click.Path())
@click.option("--output", "-o", required=True, type=click.Path(dir_okay=False), help="model.onnx")
@click.option("--overlap", type=int, default=None,
              help="Chip overlap in pixels recorded for QGIS plugins (default chip/8).")
@overwrite_option
def export(checkpoint, output, overlap, overwrite) -> None:
    """Export CHECKPOINT as an ONNX model (with Deepness's metadata) that QGIS plugins, ONNX Runtime and
    geoseg predict --model run."""
    from geoseg.models.export import export_onnx

    click.echo(f"wrote {export_onnx(checkpoint, output, overwrite, overlap)}")


@cli.command()
@click.option("--config", "-c", "config_path", required=True, type=click.Path(dir_okay=False),
              help="YAML run config (the data, classes and bands the baseline learns from).")
@click.option("--output", "-o", type=click.Path(dir_okay=False), default=None,
              help="Where to save it (default: a new run folder's baseline.ckpt).")
@click.option("--set", "settings", multiple=True, metavar="KEY=VALUE", help="Override a config key.")
@quiet_option
def baseline(config_path, output, settings, quiet) -> None:
    """Fit the per-pixel baseline (gradient boosting on band values and local statistics) in seconds to a
    minute, report its validation IoU, and save it as a model geoseg predict runs."""
    from geoseg.training.config import load_config
    from geoseg.training.trainer import train_baseline

    set_quiet(quiet)
    path, result = train_baseline(load_config(config_path, settings=list(settings)), output)
    click.echo(f"baseline val mIoU {result.scores['miou']:.3f}; saved {path} (geoseg predict SCENE -o OUT "
               f"--model {path})")


@cli.group("qgis-plugin")
def qgis_plugin() -> None:
    """The QGIS Processing provider: geoseg in the Processing Toolbox."""


@qgis_plugin.command("install")
@click.option("--profile", type=click.Path(file_okay=False), default=None,
              help="QGIS profile folder (default: the 'default' profile of this user).")
@click.option("--copy", is_flag=True, help="Copy the plugin instead of linking it to this checkout.")
def qgis_plugin_install(profile, copy) -> None:
    """Install the provider into a QGIS profile, enabled and pointed at this geoseg."""
    from geoseg.cli.qgis_plugin import install_plugin

    target = install_plugin(profile, copy)
    click.echo(f"installed the geoseg Processing provider in {target}; restart QGIS and find it in the "
               "Processing Toolbox under geoseg")


@cli.command()
@click.option("--images", "-i", required=True, multiple=True,
              help="Scenes: a folder, a glob ('scenes/*.tif') or files; repeatable.")
@click.option("--labels", "-l", required=True, multiple=True, type=click.Path(dir_okay=False),
              help="Polygon labels (GeoPackage, shapefile, GeoJSON …); repeatable: later files are drawn "
                   "over earlier ones.")
@click.option("--label-field", "-f", required=True, help="The polygons' class field (names or codes).")
@click.option("--out", "-o", type=click.Path(file_okay=False), default=".", show_default=True,
              help="Folder for the manifest, the config and (for one scene) its split blocks.")
@click.option("--config-name", default="geoseg.yaml", show_default=True, help="File name of the config.")
@overwrite_option
def init(images, labels, label_field, out, config_name, overwrite) -> None:
    """Start a project on your own imagery and polygon labels: a manifest with a train/val/test split, a
    config with defaults for the imagery found and the classes of the labels, and the command to train."""
    from geoseg.data.project import init_project

    project = init_project(list(images), list(labels), label_field, out, config_name, overwrite=overwrite)
    classes = ", ".join(f"{c.name} ({c.code})" for c in project.classes.classes)
    click.echo(f"classes from '{label_field}': {classes}")
    click.echo(f"wrote {project.manifest} ({project.splits['train']} train / {project.splits['val']} val / "
               f"{project.splits['test']} test) and {project.config}")
    if project.unlabelled:
        click.echo(f"{len(project.unlabelled)} scene(s) have no labels and are left out (predict them after "
                   f"training), e.g. {project.unlabelled[0]}")
    click.echo(f"next: geoseg train --config {project.config}")


def declared_options(command):
    """``geoseg predict``'s options, made from their declarations in :mod:`geoseg.inference.options`."""
    for cls in (VectorOptions, PredictOptions):
        for name, default, meta in reversed(options_of(cls)):
            if meta["flag"]:
                command = click.option(meta["flag"], name, default=default, help=meta["help"],
                                       show_default=meta["show_default"], **_click_type(meta))(command)
    return command


def _click_type(meta: dict) -> dict:
    kind, low = meta["kind"], meta["minimum"]
    if meta["choices"]:
        return {"type": click.Choice(list(meta["choices"]))}
    if kind == "flag":
        return {"is_flag": True}
    if kind == "int":
        return {"type": int if low is None else click.IntRange(int(low))}
    if kind == "float":
        return {"type": float if low is None else click.FloatRange(min=low)}
    if kind == "file":
        return {"type": click.Path(dir_okay=False)}
    return {"metavar": meta["metavar"]} if meta["metavar"] else {}


@cli.command()
@click.argument("scenes", nargs=-1, required=True, type=click.Path())
@click.option("--output", "-o", required=True, type=click.Path(),
              help="landcover.gpkg (polygons + class raster beside it) or landcover.tif (raster only). "
                   "Also .geojson, .shp, .fgb, .parquet. Several scenes (or a folder, or a glob): "
                   "region.gpkg or region.vrt, with one raster per scene in region_scenes/.")
@model_option
@click.option("--raster", type=click.Path(), default=None, help="Where to write the class GeoTIFF.")
@declared_options
@overwrite_option
@click.option("--resume", is_flag=True,
              help="Complete an interrupted run of the same command, keeping its finished blocks.")
@quiet_option
def predict(scenes, output, model, raster, overwrite, resume, quiet, **declared) -> None:
    """Predict land cover of SCENES (one scene, several, a folder or a glob) into class GeoTIFFs and
    land-cover polygons."""
    from geoseg.inference.predict import predict as run_prediction
    from geoseg.inference.predict import scene_inputs

    set_quiet(quiet)
    declared["bands"] = _parse_bands(declared["bands"])
    options, vector = (cls(**{name: declared[name] for name, _, meta in options_of(cls) if meta["flag"]})
                       for cls in (PredictOptions, VectorOptions))
    found = scene_inputs(scenes)
    if len(found) > 1:
        from geoseg.inference.region import predict_region

        if raster:
            raise click.UsageError("--raster names one class raster; several scenes get one each in "
                                   "<output>_scenes/")
        predict_region(found, output, model, options=options, vector=vector, overwrite=overwrite,
                       resume=resume)
        return
    run_prediction(found[0], output, model, raster=raster, options=options, vector=vector,
                   overwrite=overwrite, resume=resume)


@cli.command()
@click.argument("prediction", type=click.Path(), required=False)
@click.option("--truth", "-t", type=click.Path(), default=None,
              help="Labels: class ids, RGB mask or polygons.")
@click.option("--label-field", default="class_id", show_default=True,
              help="The polygon labels' class attribute: class codes or class names.")
@model_option
@click.option("--data", type=click.Path(), default=None,
              help="A manifest, DeepGlobe folder or run config: predict its --split with --model, then "
                   "score.")
@click.option("--split", default="test", show_default=True, help="Which split of --data to evaluate.")
@click.option("--image", type=click.Path(), default=None,
              help="The scene PREDICTION was made from (default: recorded in its tags), for the gallery.")
@click.option("--out", "out_dir", type=click.Path(file_okay=False), default=None,
              help="Report folder (default: <prediction>_evaluation, or evaluation/ with --data).")
@click.option("--worst", type=click.IntRange(0), default=8, show_default=True,
              help="List and render the K chips with the lowest IoU (0: none).")
@click.option("--class", "class_name", default=None,
              help="Rank the worst chips by this class's IoU (default mIoU).")
@click.option("--chip", type=click.IntRange(16), default=256, show_default=True,
              help="Chip size for the per-chip scores.")
@click.option("--bootstrap", type=click.IntRange(0), default=1000, show_default=True,
              help="Bootstrap resamples for the mIoU interval (0: none).")
@click.option("--json", "json_path", type=click.Path(), default=None,
              help="Also write the metrics JSON here.")
@overwrite_option
@quiet_option
def evaluate(prediction, truth, label_field, model, data, split, image, out_dir, worst, class_name, chip,
             bootstrap, json_path, overwrite, quiet) -> None:
    """Score predictions against labels: metrics, plots, an error map and the worst chips.

    Either PREDICTION --truth LABELS (an existing class raster), or --model CKPT --data DATA [--split test].
    Without --model the classes are those of the checkpoint recorded in PREDICTION, else DeepGlobe's.
    """
    from geoseg.evaluation.evaluate import evaluate as run_evaluation

    set_quiet(quiet)
    result = run_evaluation(prediction, truth, model=model, data=data, split=split, image=image,
                            out_dir=out_dir, worst=worst, class_name=class_name, chip=chip,
                            bootstrap=bootstrap, json_path=json_path, overwrite=overwrite,
                            label_field=label_field)
    _print_report(result)
    click.echo(f"report: {result['files']['report']}")


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


@cli.command("sample-data")
@click.argument("out_dir", type=click.Path(file_okay=False))
@click.option("--size", type=click.IntRange(64, 1 << 20), default=1024, show_default=True,
              help="Scene side in pixels.")
@click.option("--seed", type=int, default=43, show_default=True)
@click.option("--splits", default="train,train,train,val,test", show_default=True,
              help="One scene per entry, e.g. 'train,val,test'.")
@click.option("--compress", type=click.Choice(["jpeg", "deflate"]), default="jpeg", show_default=True,
              help="Imagery compression (jpeg keeps nodata in an internal mask, deflate uses nodata 0).")
@click.option("--no-polygons", is_flag=True, help="Skip the polygon labels (GeoPackage).")
@overwrite_option
@quiet_option
def sample_data(out_dir, size, seed, splits, compress, no_polygons, overwrite, quiet) -> None:
    """Generate synthetic georeferenced scenes with labels in three forms and a manifest."""
    from geoseg.data.sample_data import make_sample_data, render_blocks
    from geoseg.progress import bar

    set_quiet(quiet)
    from geoseg.io.manifest import SPLITS

    names = tuple(s.strip() for s in splits.split(",") if s.strip())
    if not names or any(s not in SPLITS for s in names):
        raise click.BadParameter("use train, val and test, comma-separated", param_hint="--splits")
    with bar(render_blocks(size) * len(names), "render", unit="block") as pbar:
        scenes = make_sample_data(out_dir, size, seed, names, compress, not no_polygons, progress=pbar.update,
                                  overwrite=overwrite)
    for s in scenes:
        total = sum(s.class_counts) or 1
        share = " ".join(f"{c / total:.0%}" for c in s.class_counts)
        click.echo(f"{s.split:5s} {s.image}  classes {share}")
    click.echo(f"manifest {Path(out_dir) / 'manifest.csv'}")


@cli.command("set-default-model")
@click.argument("checkpoint", type=click.Path())
def set_default_model(checkpoint) -> None:
    """Make CHECKPOINT the model predict uses when --model is not given."""
    from geoseg.models.checkpoint import load_checkpoint
    from geoseg.models.defaults import set_default

    load_checkpoint(checkpoint)
    set_default(checkpoint)
    click.echo(f"default model: {Path(checkpoint).resolve()}")


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    if issubclass(category, GeoSegWarning):
        click.echo(f"geoseg: warning: {message}", err=True)
    else:
        _default_showwarning(message, category, filename, lineno, file, line)


_default_showwarning = warnings.showwarning


def _parse_bands(text: str | None) -> tuple[int | str, ...] | None:
    """Band numbers or band descriptions, comma-separated: ``3,2,1`` or ``B04,B03,B02``."""
    if not text:
        return None
    bands = tuple(int(b) if b.strip().lstrip("-").isdigit() else b.strip() for b in text.split(","))
    if any(b == "" for b in bands):
        raise click.BadParameter(f"expected band numbers or names like 3,2,1 or B04,B03,B02, got {text!r}",
                                 param_hint="--bands")
    return bands


def _one_line(exc: GeoSegError) -> str:
    """The error's sentence, also when a DataLoader worker wrapped it with its traceback."""
    message = str(exc)
    if "Original Traceback" in message:
        message = message.strip().splitlines()[-1].split(": ", 1)[-1]
    return message


def _interrupt(signum, frame) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> None:
    """Entry point: run the CLI, turning geoseg errors into one line on stderr and an exit code."""
    warnings.filterwarnings("ignore", category=UserWarning, module="torch")
    logging.getLogger("rasterio").addHandler(logging.NullHandler())  # GDAL errors come as our sentences
    warnings.showwarning = _show_warning
    signal.signal(signal.SIGTERM, _interrupt)  # `kill` cleans up like Ctrl-C
    # Ctrl-C stops cleanly even where the shell started us with SIGINT ignored (`cmd &` in a script)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        cli.main(args=argv, prog_name="geoseg", standalone_mode=False)
    except GeoSegError as exc:
        if _debug:
            raise
        click.echo(f"geoseg: error: {_one_line(exc)}", err=True)
        sys.exit(exc.exit_code)
    except click.exceptions.Abort:
        click.echo("geoseg: interrupted", err=True)
        sys.exit(130)
    except KeyboardInterrupt:
        click.echo("geoseg: interrupted", err=True)
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    sys.exit(0)
