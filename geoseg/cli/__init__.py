"""``geoseg`` command line: parse options, call the library, print. Nothing else lives here.

:mod:`geoseg.cli._app` holds the command group, the shared options and :func:`main`; each command lives in the
module of its concern (``train``, ``predict``, ``evaluate``, ``model``, ``project``, ``qgis``), imported here
so that it registers with the group.
"""

from geoseg.cli import evaluate, model, predict, project, qgis, train  # noqa: F401  (each registers its commands)
from geoseg.cli._app import cli, main

__all__ = ["cli", "main"]
