"""Which model ``geoseg predict`` uses when none is given.

Order: ``--model`` (a checkpoint, or a project or run folder or run config: the best checkpoint of its
newest run, so one project's runs never become another's model); the default the user set with
``geoseg set-default-model``; the best checkpoint of the latest training run. State lives in
``$GEOSEG_HOME`` (default ``~/.geoseg``).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import yaml

from geoseg.errors import CheckpointError
from geoseg.io.atomic import atomic_write_text
from geoseg.progress import say

_CONFIG_SUFFIXES = (".yaml", ".yml")


def home() -> Path:
    return Path(os.environ.get("GEOSEG_HOME", Path.home() / ".geoseg"))


def _state() -> dict:
    p = home() / "state.json"
    try:
        return json.loads(p.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return {}


def _update(**kw) -> None:
    h = home()
    h.mkdir(parents=True, exist_ok=True)
    state = _state()
    state.update({k: str(Path(v).resolve()) for k, v in kw.items()})
    atomic_write_text(h / "state.json", json.dumps(state, indent=2))


def record_latest(checkpoint: str | os.PathLike) -> None:
    """Remember the best checkpoint of the run that just finished."""
    _update(latest=checkpoint)


def set_default(checkpoint: str | os.PathLike) -> None:
    """Make ``checkpoint`` the model predict uses when ``--model`` is not given."""
    _update(default=checkpoint)


def resolve_model(model: str | os.PathLike | None) -> Path:
    """The checkpoint to use: the given one, the user's default, or the latest run's best."""
    if model is not None:
        path = Path(model)
        if path.is_dir() or path.suffix.lower() in _CONFIG_SUFFIXES:
            return newest_run_best(path)
        return path
    state = _state()
    for key in ("default", "latest"):
        if key in state and Path(state[key]).exists():
            return Path(state[key])
    raise CheckpointError(
        "no model given and none trained yet: train one with 'geoseg train --config pipelines/sample.yaml' "
        "or pass --model PATH"
    )


def newest_run_best(where: str | os.PathLike) -> Path:
    """The best checkpoint of the newest run under ``where``: a run folder (its ``best.ckpt``), a run config
    (its ``output_dir``), or a project folder (the ``output_dir`` of its ``geoseg.yaml``, else ``runs/``)."""
    where = Path(where)
    if where.is_dir() and (where / "best.ckpt").is_file():
        return where / "best.ckpt"
    config = where if where.is_file() else where / "geoseg.yaml"
    runs = where / "runs"
    if config.is_file():
        try:
            settings = yaml.safe_load(config.read_text()) or {}
        except (OSError, yaml.YAMLError) as e:
            raise CheckpointError(f"cannot read the run config {config} to find its runs ({e}); pass the "
                                  "checkpoint itself with --model") from None
        output_dir = settings.get("output_dir", "runs") if isinstance(settings, dict) else "runs"
        runs = config.parent / str(output_dir)
    elif not where.is_dir():
        raise CheckpointError(f"the model {where} does not exist: pass a checkpoint (.ckpt or .onnx), a run "
                              "folder or a project folder")
    bests = [p for p in runs.glob("*/best.ckpt") if p.is_file()] if runs.is_dir() else []
    if not bests:
        command = f"geoseg train --config {config if config.is_file() else 'CONFIG'}"
        raise CheckpointError(f"no trained run in {runs}: train one first ({command}) or pass a checkpoint "
                              "with --model")
    best = max(bests, key=lambda p: p.stat().st_mtime)
    say(f"model: {best} (the newest of {len(bests)} run{'s' * (len(bests) > 1)} in {runs})")
    return best
