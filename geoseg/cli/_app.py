"""The ``geoseg`` command group, its shared options and the entry point that turns geoseg errors into one
line and an exit code. The commands live beside it, one module per concern."""

from __future__ import annotations

import json
import logging
import os
import signal
import sys
import warnings

import click

from geoseg import __version__
from geoseg.errors import GeoSegError, GeoSegWarning

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


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    if issubclass(category, GeoSegWarning):
        click.echo(f"geoseg: warning: {message}", err=True)
    else:
        _default_showwarning(message, category, filename, lineno, file, line)


_default_showwarning = warnings.showwarning


def _one_line(exc: GeoSegError) -> str:
    """The error's sentence, also when a DataLoader worker wrapped it with its traceback."""
    message = str(exc)
    if "Original Traceback" in message:
        message = message.strip().splitlines()[-1].split(": ", 1)[-1]
    return message


def _interrupt(signum, frame) -> None:
    raise KeyboardInterrupt


#: Environment variable naming a JSON file a command writes its results to (paths, counts): what programs that
#: run geoseg (the QGIS provider) read instead of its printed prose.
RESULTS = "GEOSEG_RESULTS"


def report_results(**results) -> None:
    """Write ``results`` as JSON to the file ``$GEOSEG_RESULTS`` names, if it names one."""
    path = os.environ.get(RESULTS)
    if path:
        from geoseg.io.atomic import atomic_write_text

        atomic_write_text(path, json.dumps(results, default=str) + "\n")


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
