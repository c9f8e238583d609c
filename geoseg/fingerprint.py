"""Identity of input files, for caches and for ``--resume``: the same key means the same file."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any


def file_identity(path: str | os.PathLike) -> dict[str, Any]:
    """Resolved path, size and modification time of a file (the path alone for GDAL ``/vsi`` URLs and
    files that do not exist)."""
    p = str(path)
    if p.startswith("/vsi") or not os.path.exists(p):
        return {"path": p}
    st = os.stat(p)
    return {"path": str(Path(p).resolve()), "size": st.st_size, "mtime_ns": st.st_mtime_ns}


def cache_key(*parts: Any) -> str:
    """A short hex digest of JSON-serialisable ``parts`` (file identities, options) for cache file names."""
    text = json.dumps(parts, sort_keys=True, default=str)
    return hashlib.sha1(text.encode()).hexdigest()[:16]
