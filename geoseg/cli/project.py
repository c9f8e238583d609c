"""Starting out: ``geoseg init`` on your own imagery and polygons, ``geoseg sample-data``."""

from __future__ import annotations

from pathlib import Path

import click

from geoseg.cli._app import cli, overwrite_option, quiet_option
from geoseg.progress import set_quiet


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
