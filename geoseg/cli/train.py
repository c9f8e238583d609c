"""``geoseg train`` and ``geoseg baseline``: a run config in, a model out."""

from __future__ import annotations

import os
from pathlib import Path

import click

from geoseg.cli._app import cli, quiet_option, report_results
from geoseg.progress import set_quiet


@cli.command()
@click.option("--config", "-c", "config_path", type=click.Path(dir_okay=False), default=None,
              help="YAML run config, e.g. pipelines/sample.yaml.")
@click.option("--resume", type=click.Path(dir_okay=False), default=None,
              help="Continue a run exactly from its last.ckpt (its own config unless --config is given).")
@click.option("--epochs", type=int, default=None, help="Override the config's epochs.")
@click.option("--until-epoch", type=click.IntRange(1), default=None,
              help="Stop after this epoch; continue later with --resume (e.g. time-limited jobs).")
@click.option("--budget", default=None, metavar="TIME",
              help="Train within this time, with its unit (15m, 90s, 1h30m): chips per epoch set from the "
                   "measured speed.")
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
        report_results(checkpoint=result.best, run_folder=Path(result.best).parent,
                       best_val_miou=result.best_val_miou)


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
