"""Resumable rasters: blocks committed to disk survive an interruption; --resume continues them."""

import json

import numpy as np
import pytest
import rasterio
from affine import Affine
from rasterio.windows import Window

from geoseg.errors import GeoSegWarning, InputError
from geoseg.inference.resume import partial_path, resumable_rasters, state_path
from geoseg.io.grid import GeoGrid
from geoseg.outputs.class_raster import class_raster_profile

from conftest import UTM

GRID = GeoGrid(64, 32, Affine(1, 0, 500000, 0, -1, 5000000), UTM)
FINGERPRINT = {"scene": {"path": "/s.tif"}, "options": {"overlap": 8, "tta": "none"}}


def _open(tmp_path, fingerprint=FINGERPRINT, resume=False, commit_seconds=0.0):
    final = tmp_path / "out.tif"
    prepared = []
    ctx = resumable_rasters({"classes": final}, {"classes": class_raster_profile(GRID)}, fingerprint, resume,
                            lambda ds, name: prepared.append(name), None, commit_seconds)
    return final, ctx, prepared


def _block(j):
    return Window(32 * j, 0, 32, 32)


def test_interrupted_blocks_are_kept_and_resume_completes_them(tmp_path):
    final, ctx, prepared = _open(tmp_path)
    with pytest.warns(GeoSegWarning, match="stopped with 1 blocks of out.tif finished"):
        with pytest.raises(KeyboardInterrupt):
            with ctx as writer:
                writer.write((0, 0), _block(0), {"classes": np.full((32, 32), 3,
                                                                    np.uint8)})  # committed at once
                raise KeyboardInterrupt
    assert prepared == ["classes"] and not final.exists()
    assert partial_path(final).exists()
    assert json.loads(state_path(final).read_text())["done"] == [[0, 0]]

    final, ctx, prepared = _open(tmp_path, resume=True)
    with ctx as writer:
        assert writer.done == {(0, 0)} and writer.resumed and prepared == []  # continued, not recreated
        writer.write((0, 1), _block(1), {"classes": np.full((32, 32), 5, np.uint8)})
    with rasterio.open(final) as ds:
        data = ds.read(1)
    assert (data[:, :32] == 3).all() and (data[:, 32:] == 5).all()
    assert not partial_path(final).exists() and not state_path(final).exists()


def test_resume_with_another_fingerprint_names_the_difference(tmp_path):
    final, ctx, _ = _open(tmp_path)
    with pytest.warns(GeoSegWarning), pytest.raises(KeyboardInterrupt):
        with ctx as writer:
            writer.write((0, 0), _block(0), {"classes": np.zeros((32, 32), np.uint8)})
            raise KeyboardInterrupt
    other = {"scene": {"path": "/s.tif"}, "options": {"overlap": 16, "tta": "none"}}
    _, ctx, _ = _open(tmp_path, fingerprint=other, resume=True)
    with pytest.raises(InputError,
                       match="made with a different --overlap; run without --resume to start over"):
        with ctx:
            pass


def test_a_failure_before_any_commit_leaves_nothing(tmp_path):
    final, ctx, _ = _open(tmp_path, commit_seconds=3600)
    with pytest.raises(RuntimeError):
        with ctx:
            raise RuntimeError("model failed")
    assert list(tmp_path.iterdir()) == []


def test_resume_without_an_earlier_run_starts_over(tmp_path, capsys):
    final, ctx, prepared = _open(tmp_path, resume=True)
    with ctx as writer:
        assert not writer.resumed and prepared == ["classes"]
        for j in range(2):
            writer.write((0, j), _block(j), {"classes": np.full((32, 32), j, np.uint8)})
    assert "no unfinished run of" in capsys.readouterr().out
    assert final.exists()
