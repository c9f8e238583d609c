"""Progress bars: shown on a terminal, silent when not a TTY or when asked to be quiet; as plain lines for
programs that run geoseg (``GEOSEG_PROGRESS=lines``: the QGIS Processing provider reads them)."""

from __future__ import annotations

import os
import sys

from tqdm.auto import tqdm

_quiet = False


def set_quiet(quiet: bool) -> None:
    global _quiet
    _quiet = quiet


def bar(total: int | None = None, desc: str = "", unit: str = "it", epoch: tuple[int, int] | None = None,
        **kw):
    """A tqdm bar that is disabled when output is not a terminal or ``--quiet`` was given; with
    ``GEOSEG_PROGRESS=lines`` in the environment, lines ``PROGRESS <desc> <done>/<total>`` on stderr instead
    (``?`` for an unknown total; `` epoch=<e>/<E>`` after them in training), the protocol the QGIS provider
    reads (``qgis_plugin/geoseg_provider/progress_lines.py``). ``desc`` is one word: the stage."""
    if os.environ.get("GEOSEG_PROGRESS") == "lines":
        return LineProgress(total, desc, epoch)
    disable = _quiet or not sys.stderr.isatty()
    label = f"{desc} {epoch[0]}/{epoch[1]}" if epoch else desc
    return tqdm(total=total, desc=label, unit=unit, disable=disable, dynamic_ncols=True, leave=False, **kw)


class LineProgress:
    """Progress as one line per step, for a program reading geoseg's stderr."""

    def __init__(self, total: int | None, desc: str, epoch: tuple[int, int] | None = None):
        self.total, self.desc, self.n = total, desc or "work", 0
        self.suffix = f" epoch={epoch[0]}/{epoch[1]}" if epoch else ""
        self._say()

    def update(self, n: int = 1) -> None:
        self.n += n
        self._say()

    def set_postfix(self, *args, **kwargs) -> None:
        pass

    def _say(self) -> None:
        total = "?" if self.total is None else self.total
        print(f"PROGRESS {self.desc} {self.n}/{total}{self.suffix}", file=sys.stderr, flush=True)

    def __enter__(self) -> "LineProgress":
        return self

    def __exit__(self, *exc) -> None:
        pass


def say(message: str) -> None:
    """Print a status line unless quiet."""
    if not _quiet:
        print(message, flush=True)
