"""Resumable raster outputs: finished blocks survive a crash, Ctrl-C or kill; ``--resume`` completes the rest.

Prediction writes its rasters under hidden partial names beside the outputs
(``.landcover.geoseg-partial.tif``). Every few seconds the rasters are closed,
which puts every block written so far on disk with a valid TIFF directory, and
the blocks are recorded in ``.landcover.geoseg-partial.json`` together with a
fingerprint of the scene, checkpoint and options. After an interruption the
partial files stay (only if a block was recorded; otherwise they are removed);
a run with ``resume=True`` and the same fingerprint reopens them and skips the
recorded blocks, any other run starts over. On success the partials are renamed
to the final names, so a final name never holds an unfinished raster.
"""

from __future__ import annotations

import contextlib
import json
import time
import warnings
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import rasterio
from rasterio.windows import Window

from geoseg.errors import GeoSegWarning, InputError, WriteError
from geoseg.inference.options import COMMIT_SECONDS
from geoseg.io.atomic import atomic_write_text, discard, promote
from geoseg.outputs.class_raster import verify_raster
from geoseg.progress import say

BlockKey = tuple[int, int]


def partial_path(final: Path) -> Path:
    """The hidden name a raster is written under until it is complete."""
    return final.with_name(f".{final.stem}.geoseg-partial{final.suffix}")


def state_path(final: Path) -> Path:
    """The JSON record of the blocks safely on disk, beside the partial raster."""
    return final.with_name(f".{final.stem}.geoseg-partial.json")


class BlockWriter:
    """Open partial rasters; write finished blocks and commit them to disk every few seconds."""

    def __init__(self, finals: dict[str, Path], profiles: dict[str, dict], fingerprint: dict,
                 done: set[BlockKey], resumed: bool, commit_seconds: float):
        self.finals = finals
        self.profiles = profiles
        self.fingerprint = fingerprint
        self.done = set(done)          # blocks on disk as of the last commit (or the resumed run)
        self.resumed = resumed
        self.written: dict[BlockKey, Window] = {}  # blocks written since the last commit
        self.commit_seconds = commit_seconds
        self._datasets: dict[str, rasterio.io.DatasetWriter] = {}
        self._last_commit = time.monotonic()

    @property
    def state(self) -> Path:
        return state_path(self.finals["classes"])

    def open(self, mode: str) -> None:
        for name, final in self.finals.items():
            path = partial_path(final)
            self._datasets[name] = (rasterio.open(path, "w", **self.profiles[name]) if mode == "w"
                                    else rasterio.open(path, "r+"))

    def dataset(self, name: str):
        return self._datasets[name]

    def write(self, key: BlockKey, window: Window, arrays: dict[str, np.ndarray]) -> None:
        """Write one finished block (class codes and any extra rasters) and commit when it is time."""
        for name, array in arrays.items():
            ds = self._datasets[name]
            try:
                if array.ndim == 2:
                    ds.write(array, 1, window=window)
                else:
                    ds.write(array, window=window)
            except Exception as exc:  # GDAL's failures to write come as several exception types
                raise _write_error(self.finals[name], exc) from None
        self.written[key] = window
        if time.monotonic() - self._last_commit >= self.commit_seconds:
            self.commit()

    def close(self) -> None:
        """Close the rasters, flushing every written block; a flush that fails is an OutputError."""
        datasets, self._datasets = self._datasets, {}
        for name, ds in datasets.items():
            try:
                ds.close()
            except Exception as exc:  # GDAL's failures to write come as several exception types
                raise _write_error(self.finals[name], exc) from None

    def commit(self) -> None:
        """Close the rasters, read the blocks written since the last commit back from disk, record them as
        done, reopen for update. A block that did not reach the disk is never recorded."""
        self.close()
        self.verify()
        self._record()
        self.open("r+")
        self._last_commit = time.monotonic()

    def verify(self) -> None:
        """Read the blocks written since the last commit back from each (closed) partial raster."""
        for name, final in self.finals.items():
            verify_raster(partial_path(final), list(self.written.values()), name=final)

    def _record(self) -> None:
        self.done |= set(self.written)
        self.written = {}
        atomic_write_text(self.state, json.dumps({"fingerprint": self.fingerprint,
                                                  "done": sorted(map(list, self.done))}))

    def discard(self) -> None:
        self.close()
        for final in self.finals.values():
            discard(partial_path(final))
        with contextlib.suppress(FileNotFoundError):
            self.state.unlink()


@contextlib.contextmanager
def resumable_rasters(finals: dict[str, Path], profiles: dict[str, dict], fingerprint: dict, resume: bool,
                      prepare: Callable[[rasterio.io.DatasetWriter, str], None],
                      finalize: Callable[[Path, str], None] | None = None,
                      commit_seconds: float = COMMIT_SECONDS) -> Iterator[BlockWriter]:
    """Partial rasters for ``finals`` (name → final path); renamed to the final names when the block ends.

    ``prepare(dataset, name)`` is called on each new raster (colour table, tags);
    ``finalize(partial_path, name)`` on each closed raster before the rename
    (sidecars). With ``resume`` an earlier run's partials with the same
    ``fingerprint`` are continued; their recorded blocks are in ``writer.done``.
    """
    writer = None
    try:  # from the first file created: an interruption anywhere keeps recorded blocks, or removes everything
        writer = _reopen(finals, profiles, fingerprint, commit_seconds) if resume else None
        if writer is None:
            if resume:
                say(f"no unfinished run of {finals['classes']} to resume; starting from the beginning")
            writer = BlockWriter(finals, profiles, fingerprint, set(), False, commit_seconds)
            writer.discard()  # a stale partial of an earlier run with other inputs
            writer.open("w")
            for name in finals:
                prepare(writer.dataset(name), name)
        yield writer
        writer.close()
        writer.verify()
    except BaseException as exc:
        if writer is not None:
            _keep_or_discard(writer, exc)
        raise
    if finalize:
        for name, final in finals.items():
            finalize(partial_path(final), name)
    for final in finals.values():
        promote(partial_path(final), final)
    with contextlib.suppress(FileNotFoundError):
        writer.state.unlink()


def _reopen(finals: dict[str, Path], profiles: dict[str, dict], fingerprint: dict,
            commit_seconds: float) -> BlockWriter | None:
    """The writer of an earlier run's partial rasters, or None when there is nothing to continue."""
    state = state_path(finals["classes"])
    if not state.exists() or not all(partial_path(f).exists() for f in finals.values()):
        return None
    try:
        record = json.loads(state.read_text(encoding="utf-8"))
        done = {(int(i), int(j)) for i, j in record["done"]}
    except (ValueError, KeyError, TypeError):
        return None
    if record.get("fingerprint") != fingerprint:
        raise InputError(f"the unfinished run of {finals['classes']} was made with a different "
                         f"{', '.join(_differences(fingerprint, record.get('fingerprint') or {}))}; "
                         f"run without --resume to start over")
    writer = BlockWriter(finals, profiles, fingerprint, done, True, commit_seconds)
    try:
        writer.open("r+")
    except rasterio.errors.RasterioIOError:
        writer.close()
        return None
    say(f"resuming {finals['classes']}: {len(done)} blocks already done")
    return writer


def _differences(new: dict, old: dict) -> list[str]:
    """Names of what differs between two fingerprints: the options by name, the inputs as a whole."""
    out = []
    for key in sorted(set(new) | set(old)):
        a, b = new.get(key), old.get(key)
        if a == b:
            continue
        if key == "options" and isinstance(a, dict) and isinstance(b, dict):
            out += [f"--{k.replace('_', '-')}" for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]
        else:
            out.append(key.replace("_", " "))
    return out


def _write_error(final: Path, exc: Exception) -> WriteError:
    return WriteError(f"{final} could not be written to disk ({str(exc).splitlines()[0]}); free some space "
                      f"or choose another folder")


def _keep_or_discard(writer: BlockWriter, cause: BaseException) -> None:
    """After a failure or interruption: keep the blocks safely on disk for --resume, if there are any. After
    a write that did not reach the disk the partial files cannot be trusted: they are removed."""
    if isinstance(cause, WriteError):
        writer.discard()
        return
    try:
        writer.close()  # every block whose write returned is now complete on disk …
        writer.verify()  # … unless the disk is full: then none of them is recorded
    except Exception:
        writer.written = {}
    try:
        if not writer.done and not writer.written:
            writer.discard()
            return
        writer._record()
    except Exception:  # the original error matters more; the last recorded state stays as it was
        pass
    if writer.done:
        final = writer.finals["classes"]
        warnings.warn(f"stopped with {len(writer.done)} blocks of {final.name} finished; they are kept in "
                      f"{partial_path(final).name}: run the same command with --resume to complete it",
                      GeoSegWarning)
