"""Experiment tracking: local CSV/JSON always, Weights & Biases when asked (offline by default)."""

from __future__ import annotations

import csv
import io
import json
import math
import os
from pathlib import Path
from typing import Any

import numpy as np

from geoseg.io.atomic import atomic_write_text


class LocalLog:
    """Per-epoch metrics in ``metrics.csv`` and ``metrics.json``, rewritten atomically each epoch;
    per-step batch loss, its moving average and the learning rate in ``steps.csv``.

    A resumed run passes the history and step it continues from; steps logged
    after that (by a run that stopped before its next checkpoint) are dropped.
    """

    STEP_KEYS = ("step", "epoch", "batch_loss", "loss_ema", "lr")

    def __init__(self, run_dir: Path, history: list[dict[str, Any]] | None = None, step: int = 0):
        self.run_dir = run_dir
        self.rows: list[dict[str, Any]] = list(history or [])
        steps = run_dir / "steps.csv"
        if step and steps.exists():
            with open(steps, newline="", encoding="utf-8") as fh:
                kept = [r for r in csv.DictReader(fh) if int(r["step"]) <= step]
            self._write_steps(kept, replace=True)
        elif steps.exists():
            steps.unlink()

    def log_steps(self, rows: list[dict[str, Any]]) -> None:
        self._write_steps(rows, replace=False)

    def _write_steps(self, rows: list[dict[str, Any]], replace: bool) -> None:
        path = self.run_dir / "steps.csv"
        new = replace or not path.exists()
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=self.STEP_KEYS)
        if new:
            writer.writeheader()
        for r in rows:
            writer.writerow({k: _fmt(r.get(k)) for k in self.STEP_KEYS})
        if replace:
            atomic_write_text(path, buf.getvalue())
        else:
            with open(path, "a", encoding="utf-8", newline="") as fh:  # one append per epoch
                fh.write(buf.getvalue())

    def log_epoch(self, row: dict[str, Any]) -> None:
        self.rows.append(row)
        keys = list(dict.fromkeys(k for r in self.rows for k, v in r.items() if not isinstance(v, list)))
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=keys)
        writer.writeheader()
        for r in self.rows:
            writer.writerow({k: _fmt(r.get(k)) for k in keys})  # lists (confusion matrices): JSON only
        atomic_write_text(self.run_dir / "metrics.csv", buf.getvalue())
        atomic_write_text(self.run_dir / "metrics.json", json.dumps(self.rows, indent=1, default=_json))


def _fmt(v: Any) -> Any:
    return f"{v:.6g}" if isinstance(v, float) else v


def _json(v: Any) -> Any:
    if isinstance(v, (np.floating, np.integer)):
        return v.item()
    return str(v)


class WandbLog:
    """A thin wrapper over a wandb run; ``WANDB_MODE`` defaults to offline so no account is needed."""

    def __init__(self, run_dir: Path, name: str, config: dict[str, Any], run_id: str | None = None):
        os.environ.setdefault("WANDB_MODE", "offline")
        os.environ.setdefault("WANDB_SILENT", "true")
        import wandb

        self.wandb = wandb
        self.run = wandb.init(project="geoseg", name=name, dir=str(run_dir), config=_jsonable(config),
                              reinit="finish_previous", id=run_id, resume="allow" if run_id else None)
        import pandas  # noqa: F401  (wandb imports it, 0.3 s, on the first image logged: pay it at start-up)

    def log(self, data: dict[str, Any], step: int | None = None) -> None:
        self.run.log({k: v for k, v in data.items() if not (isinstance(v, float) and math.isnan(v))},
                     step=step)

    def log_image(self, key: str, path: Path, step: int | None = None) -> None:
        self.run.log({key: self.wandb.Image(str(path))}, step=step)

    def finish(self) -> None:
        self.run.finish()


def _jsonable(d: Any) -> Any:
    return json.loads(json.dumps(d, default=str))
