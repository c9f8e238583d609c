"""``geoseg qgis-plugin``: the QGIS Processing provider."""

from __future__ import annotations

import click

from geoseg.cli._app import cli, overwrite_option


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
    config = target.parents[3].parent  # the folder that holds profiles/
    click.echo(f"installed the geoseg Processing provider in {target}; restart QGIS and find it in the "
               f"Processing Toolbox under geoseg (for qgis_process, which has no profile option: "
               f"QGIS_CUSTOM_CONFIG_PATH={config})")


@qgis_plugin.command("zip")
@click.option("--output", "-o", required=True, type=click.Path(dir_okay=False), help="geoseg_provider.zip")
@overwrite_option
def qgis_plugin_zip(output, overwrite) -> None:
    """Pack the provider as a ZIP for QGIS's Install from ZIP (then set the geoseg executable under
    Settings → Options → Processing → Providers → geoseg)."""
    from geoseg.cli.qgis_plugin import zip_plugin

    click.echo(f"wrote {zip_plugin(output, overwrite)}; in QGIS: Plugins → Manage and Install Plugins → "
               "Install from ZIP")
