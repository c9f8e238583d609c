"""One run per output: a lock file beside an output while a run writes it, so two ``geoseg predict`` runs to
the same name (two terminals, two cluster jobs on shared storage) never interleave their files.

The lock is ``.<name>.geoseg-lock``, created with ``O_CREAT | O_EXCL`` (atomic on local disks and on NFS v3
and later) and holding the run's process id, host and start time. A second run to the same output is refused
in one sentence that names the first. A lock left by a run that was killed (SIGKILL, a power cut) is taken
over when its process is gone from this host; a lock from another host cannot be checked from here, so the
sentence says which file to delete once that run is known to be gone.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import sys
import time
from pathlib import Path
from typing import Iterator

from geoseg.errors import OutputError


def lock_path(output: Path) -> Path:
    return output.with_name(f".{output.name}.geoseg-lock")


@contextlib.contextmanager
def output_lock(output: str | os.PathLike) -> Iterator[Path]:
    """Hold the lock of ``output`` for the ``with`` block; refuse if another live run holds it."""
    lock = lock_path(Path(output))
    me = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.strftime("%Y-%m-%d %H:%M:%S"),
          "command": " ".join(sys.argv[:2])}
    _acquire(lock, me, Path(output))
    try:
        yield lock
    finally:
        if _holder(lock) == me:
            lock.unlink(missing_ok=True)


def _acquire(lock: Path, me: dict, output: Path) -> None:
    for _ in range(2):
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            holder = _holder(lock)
            if holder is not None and _gone(holder):
                lock.unlink(missing_ok=True)  # its run was killed: take over
                continue
            raise OutputError(_refusal(output, lock, holder)) from None
        except OSError:
            return  # a folder that takes no lock (read-only parent is reported by the write itself)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(me, fh)
        return
    raise OutputError(_refusal(output, lock, _holder(lock)))


def _holder(lock: Path) -> dict | None:
    try:
        holder = json.loads(lock.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return holder if isinstance(holder, dict) else None


def _gone(holder: dict) -> bool:
    """Whether the run that holds a lock has certainly ended (only known for a run on this host)."""
    pid = holder.get("pid")
    if holder.get("host") != socket.gethostname() or not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


def _refusal(output: Path, lock: Path, holder: dict | None) -> str:
    who = (f"process {holder.get('pid')} on {holder.get('host')}, started {holder.get('started')}"
           if holder else "a run that is still starting")
    return (f"{output} is being written by another geoseg run ({who}); wait for it to finish, or, if that "
            f"run is gone, delete {lock}")
