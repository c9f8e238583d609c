"""The geoseg error hierarchy.

Every error a user can cause is a :class:`GeoSegError` whose message is one
sentence naming the file or value at fault. The CLI prints it without a
traceback; ``exit_code`` tells the shell what kind of failure it was.
"""

from __future__ import annotations


class GeoSegError(Exception):
    """Base class of all geoseg errors."""

    exit_code = 1


class InputError(GeoSegError):
    """A bad input or usage: missing file, wrong raster, bad option (exit code 2)."""

    exit_code = 2


class ConfigError(InputError):
    """A run configuration key is unknown or has a wrong value."""


class RasterError(InputError):
    """A raster cannot be used: not a raster, wrong bands, no CRS, mismatched grids."""


class LabelError(InputError):
    """A label file holds values or colours outside the class schema."""


class CheckpointError(InputError):
    """A checkpoint is missing, corrupt or does not match what is asked of it."""


class OutputError(InputError):
    """An output path cannot be written (missing folder, exists without --overwrite)."""


class WriteError(GeoSegError):
    """An output did not reach the disk (a full disk, a quota, a file-size limit): exit code 1."""


class ClusterError(GeoSegError):
    """The dask cluster failed the run (its scheduler went away, a task kept killing workers): exit code 1."""


class GeoSegWarning(UserWarning):
    """Something the user should know that does not stop the work (shown as one line by the CLI)."""


class WeightsUnavailableError(GeoSegError):
    """Pretrained encoder weights could not be downloaded or found in the cache."""
