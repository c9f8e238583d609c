"""Fuzzing: damaged GeoTIFFs and checkpoints through the command line.

Whatever the damage: no traceback, no hang, exit code 0, 1 or 2, and after a
failure nothing in the output folder (after a success, complete outputs).
"""

import shutil
import signal
import warnings

import pytest
import rasterio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from geoseg.cli import main

HANG_SECONDS = 120


def damage(data: bytes, kind: str, where: float, length: int, seed: int) -> bytes:
    """Truncate, flip bytes in, or overwrite a stretch of ``data``."""
    pos = min(len(data) - 1, int(where * len(data)))
    if kind == "truncate":
        return data[:pos]
    out = bytearray(data)
    import random
    rng = random.Random(seed)
    for i in range(pos, min(len(out), pos + length)):
        out[i] = rng.randrange(256) if kind == "overwrite" else out[i] ^ (1 << rng.randrange(8))
    return bytes(out)


damages = st.tuples(st.sampled_from(["truncate", "flip", "overwrite"]), st.floats(0, 1),
                    st.integers(1, 4096), st.integers(0, 2**32))


class Hang(Exception):
    pass


def run_cli(capsys, args) -> tuple[int, str]:
    """The real entry point, with an alarm that turns a hang into a failure."""
    show, term = warnings.showwarning, signal.getsignal(signal.SIGTERM)

    def alarm(signum, frame):
        raise Hang(f"geoseg {' '.join(args)} ran over {HANG_SECONDS} s")

    previous = signal.signal(signal.SIGALRM, alarm)
    signal.alarm(HANG_SECONDS)
    try:
        with pytest.raises(SystemExit) as exit_:
            main([str(a) for a in args])
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
        warnings.showwarning = show
        signal.signal(signal.SIGTERM, term)
    return exit_.value.code, capsys.readouterr().err


def check_outcome(code: int, err: str, out_dir, expect: list[str]) -> None:
    assert code in (0, 1, 2)
    assert "Traceback" not in err
    names = sorted(p.name for p in out_dir.iterdir())
    if code == 0:
        assert names == expect
    else:
        assert names == [], err
        assert err.startswith("geoseg: error: ") and len(err.strip().splitlines()) == 1, err


FUZZ = settings(max_examples=25, derandomize=True, deadline=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture])


def fresh_case(tmp_path):
    """An empty case folder with an empty ``out`` (hypothesis reuses ``tmp_path`` across examples)."""
    case = tmp_path / "case"
    shutil.rmtree(case, ignore_errors=True)
    (case / "out").mkdir(parents=True)
    return case


@FUZZ
@given(hurt=damages)
def test_damaged_geotiff(capsys, tmp_path, rgb_scene, tiny_checkpoint, hurt):
    case = fresh_case(tmp_path)
    scene = case / "scene.tif"
    scene.write_bytes(damage(rgb_scene.read_bytes(), *hurt))
    code, err = run_cli(capsys, ["predict", scene, "-o", case / "out" / "lc.gpkg", "--model", tiny_checkpoint,
                                 "--quiet"])
    check_outcome(code, err, case / "out", ["lc.gpkg", "lc.qml", "lc.stac.json", "lc.tif",
                                            "lc.tif.aux.xml", "lc_summary.csv"])
    if code == 0:
        with rasterio.open(case / "out" / "lc.tif") as ds:
            ds.read(1)


@FUZZ
@given(hurt=damages)
def test_damaged_checkpoint(capsys, tmp_path, rgb_scene, tiny_checkpoint, hurt):
    case = fresh_case(tmp_path)
    ckpt = case / "model.ckpt"
    ckpt.write_bytes(damage(tiny_checkpoint.read_bytes(), *hurt))
    code, err = run_cli(capsys, ["predict", rgb_scene, "-o", case / "out" / "lc.tif", "--model", ckpt,
                                 "--quiet"])
    check_outcome(code, err, case / "out", ["lc.qml", "lc.stac.json", "lc.tif", "lc.tif.aux.xml"])
