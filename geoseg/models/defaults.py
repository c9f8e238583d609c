"""Which model ``geoseg predict`` uses when none is given.

Order: ``--model``; the default the user set with ``geoseg set-default-model``;
the best checkpoint of the latest training run. State lives in
``$GEOSEG_HOME`` (default ``~/.geoseg``).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from geoseg.errors import CheckpointError
from geoseg.io.atomic import atomic_write_text


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
        return Path(model)
    state = _state()
    for key in ("default", "latest"):
        if key in state and Path(state[key]).exists():
            return Path(state[key])
    raise CheckpointError(
        "no model given and none trained yet: train one with 'geoseg train --config pipelines/sample.yaml' "
        "or pass --model PATH"
    )
