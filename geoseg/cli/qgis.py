"""``geoseg qgis-plugin``: the QGIS Processing provider."""

from __future__ import annotations

import click

from geoseg.cli._app import cli


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
