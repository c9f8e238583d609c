"""Progress bars: shown on a terminal, silent when not a TTY or when asked to be quiet."""

from __future__ import annotations

import sys

from tqdm.auto import tqdm

_quiet = False


def set_quiet(quiet: bool) -> None:
    global _quiet
    _quiet = quiet


def bar(total: int | None = None, desc: str = "", unit: str = "it", **kw) -> tqdm:
    """A tqdm bar that is disabled when output is not a terminal or ``--quiet`` was given."""
    disable = _quiet or not sys.stderr.isatty()
    return tqdm(total=total, desc=desc, unit=unit, disable=disable, dynamic_ncols=True, leave=False, **kw)


def say(message: str) -> None:
    """Print a status line unless quiet."""
    if not _quiet:
        print(message, flush=True)
