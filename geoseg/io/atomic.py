"""Atomic outputs: write to a temporary name beside the target, rename on success.

A crash or Ctrl-C never leaves a half-written file under the final name, and an
existing output is untouched until the new one is complete.
"""

from __future__ import annotations

import contextlib
import errno
import os
from pathlib import Path
from typing import Iterator, Mapping

from geoseg.errors import OutputError, WriteError
from geoseg.io.formats import is_remote

#: Sidecars GDAL may write beside a raster; they travel with it.
SIDECAR_SUFFIXES = (".aux.xml", "-journal", "-wal", "-shm")
MULTIFILE_SUFFIXES = (".shx", ".dbf", ".prj", ".cpg", ".qix", ".sbn", ".sbx")
#: errno values that mean the bytes did not reach the disk.
DISK_FULL = (errno.ENOSPC, errno.EFBIG, errno.EDQUOT, errno.EIO, errno.EROFS)


def check_output_path(path: str | os.PathLike, overwrite: bool = True) -> Path:
    """Validate that ``path`` can be written; return it as a Path."""
    path = Path(path)
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir():
        raise OutputError(f"cannot write {path}: folder {parent} does not exist")
    if not os.access(parent, os.W_OK):
        raise OutputError(f"cannot write {path}: folder {parent} is not writable")
    if path.is_dir():
        raise OutputError(f"cannot write {path}: it is a directory")
    if path.exists() and not overwrite:
        raise OutputError(f"{path} already exists; pass --overwrite to replace it")
    return path


def check_not_input(output: str | os.PathLike, inputs: Mapping[str, str | os.PathLike | None],
                    suggestion: str | os.PathLike | None = None) -> None:
    """Refuse an output that is one of the ``inputs`` (name → path), also through symlinks, ``..`` or hard
    links, whether or not overwriting is allowed: writing it would destroy the input."""
    for what, source in inputs.items():
        if source is None or is_remote(source) or not _same_file(Path(output), Path(source)):
            continue
        other = suggestion or Path(output).with_name(f"{Path(output).stem}_geoseg{Path(output).suffix}")
        raise OutputError(f"the output {output} is the {what} {source}; writing it would destroy the input: "
                          f"choose another output name, e.g. {other}")


def _same_file(a: Path, b: Path) -> bool:
    if os.path.realpath(a) == os.path.realpath(b):
        return True
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def temporary_path(path: Path) -> Path:
    """A hidden temporary name in the same folder that keeps the extension (drivers need it)."""
    return path.with_name(f".{path.stem}.geoseg-tmp-{os.getpid()}{path.suffix}")


def _companions(path: Path) -> list[Path]:
    """Files that belong to ``path``: GDAL sidecars and multi-file formats' parts (.shx, .dbf, .prj …)."""
    stem = _stem(path)
    out = [Path(str(path) + s) for s in SIDECAR_SUFFIXES]
    if path.suffix.lower() == ".shp" and path.parent.is_dir():
        out += [p for p in path.parent.iterdir() if p != path and p.name.startswith(stem + ".")
                and p.suffix.lower() in MULTIFILE_SUFFIXES]
    return out


def _stem(path: Path) -> str:
    return path.name[: -len(path.suffix)] if path.suffix else path.name


def _remove(path: Path) -> None:
    for p in [path, *_companions(path)]:
        with contextlib.suppress(FileNotFoundError):
            p.unlink()


@contextlib.contextmanager
def atomic_output(path: str | os.PathLike, overwrite: bool = True, checked: bool = False) -> Iterator[Path]:
    """Yield a temporary path; on success rename it (and GDAL's ``.aux.xml``) to ``path``.

    ``checked``: the caller has validated ``path`` with :func:`check_output_path` already.
    """
    final = Path(path) if checked else check_output_path(path, overwrite)
    tmp = temporary_path(final)
    _remove(tmp)
    try:
        yield tmp
    except OSError as exc:
        _remove(tmp)
        if exc.errno in DISK_FULL:
            raise WriteError(f"{final} could not be written to disk ({exc.strerror}); free some space or "
                             f"choose another folder") from None
        raise
    except BaseException:
        _remove(tmp)
        raise
    promote(tmp, final)


def promote(tmp: Path, final: Path) -> None:
    """Rename a finished temporary (and its GDAL sidecars or multi-file parts) to its final name."""
    tmp_stem, final_stem = _stem(tmp), _stem(final)
    new_parts = {p.name[len(tmp_stem):]: p for p in _companions(tmp) if p.exists()}
    for old in _companions(final):  # parts of an earlier output that the new one does not have
        if old.exists() and old.name[len(final_stem):] not in new_parts:
            old.unlink()
    for ending, part in new_parts.items():
        os.replace(part, final.with_name(final_stem + ending))
    os.replace(tmp, final)


def discard(path: Path) -> None:
    """Remove a temporary output with its sidecars; missing files are fine."""
    _remove(path)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write a small text file atomically."""
    with atomic_output(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
