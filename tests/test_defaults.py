"""Which model predict uses without --model: the given one, else the user's default, else the latest run's
best (state in $GEOSEG_HOME, isolated per test by conftest)."""

import pytest

from geoseg.errors import CheckpointError
from geoseg.models.defaults import home, record_latest, resolve_model, set_default


def test_the_default_wins_over_the_latest_run_and_a_given_model_over_both(tmp_path):
    latest, default = tmp_path / "latest.ckpt", tmp_path / "default.ckpt"
    latest.write_bytes(b"1")
    default.write_bytes(b"2")
    with pytest.raises(CheckpointError, match="no model given and none trained yet"):
        resolve_model(None)
    record_latest(latest)
    assert resolve_model(None) == latest.resolve()
    set_default(default)
    assert resolve_model(None) == default.resolve()
    assert resolve_model(tmp_path / "x.ckpt") == tmp_path / "x.ckpt"
    default.unlink()  # a default that is gone falls back to the latest run
    assert resolve_model(None) == latest.resolve()
    assert (home() / "state.json").is_file()
