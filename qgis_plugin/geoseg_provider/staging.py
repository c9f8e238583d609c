"""Outputs written under temporary names and moved into place only when a run succeeds, as QGIS core's own
algorithms behave: a cancelled or failed run leaves an analyst's earlier files exactly as they were.

No QGIS import here, so geoseg's tests run it without QGIS.
"""

import json
import os
import shutil
import uuid
from pathlib import Path


class StagedOutputs:
    """Each output's folder gets a hidden staging folder; geoseg writes there (its sidecars beside its
    outputs, as always); :meth:`commit` moves every file it made to the real folder, :meth:`discard`
    removes the staging folders and nothing else."""

    def __init__(self, targets):
        self.targets = [Path(t) for t in targets if t]
        tag = uuid.uuid4().hex[:8]
        self.folders = {}
        for target in self.targets:
            folder = target.parent
            if folder not in self.folders:
                folder.mkdir(parents=True, exist_ok=True)
                staging = folder / f".geoseg-staging-{tag}"
                staging.mkdir()
                self.folders[folder] = staging

    def path(self, target):
        """Where geoseg writes ``target`` during the run."""
        if not target:
            return target
        target = Path(target)
        return str(self.folders[target.parent] / target.name)

    def commit(self):
        """Move every file the run made into place (each move atomic), STAC links kept right; then remove
        the staging folders."""
        moves = {}
        for folder, staging in self.folders.items():
            for made in staging.iterdir():
                if made.is_file() and not made.name.startswith("."):  # locks and resume state stay behind
                    moves[made] = folder / made.name
        for made in moves:
            if made.name.endswith(".stac.json"):
                _relink(made, moves)
        for made, final in moves.items():
            os.replace(made, final)
        self.discard()
        return sorted(str(final) for final in moves.values())

    def discard(self):
        for staging in self.folders.values():
            shutil.rmtree(staging, ignore_errors=True)


def _relink(item: Path, moves: dict) -> None:
    """Rewrite a STAC item's relative asset links for the files' final places."""
    final_of = {made.resolve(): final for made, final in moves.items()}
    final_item = final_of[item.resolve()]
    data = json.loads(item.read_text(encoding="utf-8"))
    for asset in data.get("assets", {}).values():
        href = asset.get("href", "")
        if "://" in href or os.path.isabs(href):
            continue
        target = (item.parent / href).resolve()
        if target in final_of:
            asset["href"] = os.path.relpath(final_of[target], final_item.parent)
    item.write_text(json.dumps(data, indent=1) + "\n", encoding="utf-8")
