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


def test_a_project_or_run_folder_or_config_means_the_best_of_its_newest_run(tmp_path, capsys):
    """--model myproject: that project's own newest run, whatever ran last elsewhere on the machine."""
    import os

    project = tmp_path / "myproject"
    (project / "out").mkdir(parents=True)
    (project / "geoseg.yaml").write_text("output_dir: out\n")
    with pytest.raises(CheckpointError, match=r"^no trained run in .*out: train one first \(geoseg train "
                                              r"--config .*geoseg.yaml\) or pass a checkpoint"):
        resolve_model(project)
    older, newer = project / "out/20260101-1/best.ckpt", project / "out/20260102-1/best.ckpt"
    for i, path in enumerate((older, newer)):
        path.parent.mkdir()
        path.write_bytes(b"x")
        os.utime(path, (1_000_000 + i, 1_000_000 + i))
    (project / "out/.cache").mkdir()  # not a run
    elsewhere = tmp_path / "other/best.ckpt"
    elsewhere.parent.mkdir()
    elsewhere.write_bytes(b"y")
    record_latest(elsewhere)  # another project's run finished last
    assert resolve_model(project) == newer
    assert f"model: {newer} (the newest of 2 runs in {project / 'out'})" in capsys.readouterr().out
    assert resolve_model(project / "geoseg.yaml") == newer
    assert resolve_model(older.parent) == older  # a run folder: its own best
    assert resolve_model(tmp_path / "x.ckpt") == tmp_path / "x.ckpt"  # a checkpoint path stays as given
    with pytest.raises(CheckpointError, match=r"^the model .*missing.yaml does not exist: pass a checkpoint"):
        resolve_model(tmp_path / "missing.yaml")
    runs_only = tmp_path / "plain"
    (runs_only / "runs/r1").mkdir(parents=True)
    (runs_only / "runs/r1/best.ckpt").write_bytes(b"z")
    assert resolve_model(runs_only) == runs_only / "runs/r1/best.ckpt"  # no geoseg.yaml: runs/
