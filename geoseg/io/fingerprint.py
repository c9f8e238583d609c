"""Identity of input files, for caches and for ``--resume``: the same key means the same file.

A path, size and modification time alone are not enough: ``cp -p`` gives another
scene the same three. The identity also hashes a sample of the content (the
header, the end, and 16 evenly spread 4 KiB pieces, the whole of a file under
1 MiB), which costs a few reads whatever the file's size.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

from geoseg.io.formats import is_remote

#: Bytes read from the start and the end of a file, and the size and number of pieces from in between.
HEAD = 65536
PIECE, PIECES = 4096, 16


def file_identity(path: str | os.PathLike) -> dict[str, Any]:
    """Resolved path, size, modification time and a content sample hash of a file (the path alone for
    GDAL ``/vsi`` paths, URLs and files that do not exist)."""
    p = str(path)
    if is_remote(p) or not os.path.exists(p):
        return {"path": p}
    st = os.stat(p)
    return {"path": str(Path(p).resolve()), "size": st.st_size, "mtime_ns": st.st_mtime_ns,
            "sample": content_sample(p, st.st_size)}


def content_sample(path: str | os.PathLike, size: int) -> str:
    """A hash of the start, the end and evenly spread pieces of a file (all of it when small)."""
    digest = hashlib.sha1()
    with open(path, "rb") as fh:
        if size <= 2 * HEAD + PIECES * PIECE:
            digest.update(fh.read())
        else:
            digest.update(fh.read(HEAD))
            for k in range(1, PIECES + 1):
                fh.seek(HEAD + (size - 2 * HEAD) * k // (PIECES + 1))
                digest.update(fh.read(PIECE))
            fh.seek(size - HEAD)
            digest.update(fh.read(HEAD))
    return digest.hexdigest()


def cache_key(*parts: Any) -> str:
    """A short hex digest of JSON-serialisable ``parts`` (file identities, options) for cache file names."""
    text = json.dumps(parts, sort_keys=True, default=str)
    return hashlib.sha1(text.encode()).hexdigest()[:16]
