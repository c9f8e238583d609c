"""Commands about model files: ``geoseg export`` and ``geoseg set-default-model``."""

from __future__ import annotations

from pathlib import Path

import click

from geoseg.cli._app import cli, overwrite_option


@cli.command()
@click.argument("checkpoint", type=click.Path())
@click.option("--output", "-o", required=True, type=click.Path(dir_okay=False), help="model.onnx")
@click.option("--overlap", type=int, default=None,
              help="Tile overlap in pixels recorded for QGIS plugins (default tile/8).")
@click.option("--tile", type=int, default=None,
              help="Tile side in pixels of the exported model, a multiple of 32 (default: the chip size).")
@click.option("--dynamic", is_flag=True,
              help="Any batch and tile size, with logits as a second output (for runtimes other than "
                   "Deepness, which needs a fixed tile and one output).")
@overwrite_option
def export(checkpoint, output, overlap, tile, dynamic, overwrite) -> None:
    """Export CHECKPOINT (or the newest run of a project or run folder) as an ONNX model that Deepness (the
    QGIS plugin) loads as it is, and that ONNX Runtime and geoseg predict --model run."""
    from geoseg.models.defaults import resolve_model
    from geoseg.models.export import export_onnx

    checkpoint = resolve_model(checkpoint)
    click.echo(f"wrote {export_onnx(checkpoint, output, overwrite, overlap, tile=tile, dynamic=dynamic)}")


@cli.command("set-default-model")
@click.argument("checkpoint", type=click.Path())
def set_default_model(checkpoint) -> None:
    """Make CHECKPOINT the model predict uses when --model is not given."""
    from geoseg.models.checkpoint import load_checkpoint
    from geoseg.models.defaults import set_default

    load_checkpoint(checkpoint)
    set_default(checkpoint)
    click.echo(f"default model: {Path(checkpoint).resolve()}")
