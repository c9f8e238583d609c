"""Scene records: which images and labels a run uses, in which split, from a CSV manifest or a DeepGlobe
folder."""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from geoseg.errors import ConfigError

SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class SceneRecord:
    """One manifest row: an image, its label file and its split."""

    image: Path
    label: Path | None
    split: str


def read_manifest(path: str | os.PathLike) -> list[SceneRecord]:
    """Read a CSV manifest with columns ``image``, ``label``, ``split`` (paths relative to it)."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"manifest {path} does not exist")
    with open(p, newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    if not rows or "image" not in rows[0] or "split" not in rows[0]:
        raise ConfigError(f"manifest {path} needs a header with columns image, label, split")
    records = []
    for n, row in enumerate(rows, start=2):
        split = (row.get("split") or "").strip()
        if split not in SPLITS:
            raise ConfigError(f"manifest {path} line {n}: split must be one of {', '.join(SPLITS)}, got "
                              f"{split!r}")
        label = (row.get("label") or "").strip()
        records.append(SceneRecord(p.parent / row["image"].strip(), p.parent / label if label else None,
                                   split))
    return records


def read_deepglobe(folder: str | os.PathLike, fractions: Sequence[float] = (0.8, 0.1, 0.1),
                   seed: int = 0) -> list[SceneRecord]:
    """Scenes of a DeepGlobe Land Cover folder (``<id>_sat.jpg`` + ``<id>_mask.png``), split by scene.

    ``metadata.csv`` (columns ``image_id, sat_image_path, mask_path``) is used
    when present; images without a mask (DeepGlobe's own valid/test sets) are
    left out. The split into train/val/test by ``fractions`` is a seeded
    shuffle of the sorted image ids, so it is the same on every machine.
    """
    root = Path(folder)
    pairs: dict[str, tuple[Path, Path]] = {}
    meta = root / "metadata.csv"
    if meta.is_file():
        with open(meta, newline="", encoding="utf-8") as fh:
            for row in csv.DictReader(fh):
                sat, mask = (row.get("sat_image_path") or "").strip(), (row.get("mask_path") or "").strip()
                if sat and mask and (root / mask).is_file():
                    pairs[str(row.get("image_id") or Path(sat).stem)] = (root / sat, root / mask)
    else:
        for sat in sorted(root.rglob("*_sat.jpg")):
            mask = sat.with_name(sat.name[: -len("_sat.jpg")] + "_mask.png")
            if mask.is_file():
                pairs[sat.name[: -len("_sat.jpg")]] = (sat, mask)
    if not pairs:
        raise ConfigError(f"{folder} holds no DeepGlobe pairs <id>_sat.jpg + <id>_mask.png")
    ids = sorted(pairs)
    order = np.random.default_rng(seed).permutation(len(ids))
    f = np.asarray(fractions, float) / float(sum(fractions))
    n_train = int(round(f[0] * len(ids)))
    n_val = int(round(f[1] * len(ids)))
    if len(ids) >= 2 and f[1] > 0 and n_val == 0:  # a validation scene whenever one is asked for
        n_val, n_train = 1, min(n_train, len(ids) - 1)
    splits = ["train"] * n_train + ["val"] * n_val + ["test"] * (len(ids) - n_train - n_val)
    return [SceneRecord(*pairs[ids[k]], split) for k, split in zip(order, splits)]


def read_records(path: str | os.PathLike, fractions: Sequence[float] = (0.8, 0.1, 0.1),
                 seed: int = 0) -> list[SceneRecord]:
    """Scenes from a CSV manifest or a DeepGlobe-layout folder."""
    return read_deepglobe(path, fractions, seed) if Path(path).is_dir() else read_manifest(path)
