"""The README's install lines, run as printed from a fresh clone of this repository (the only change: the
placeholder ``<this repository>`` becomes this checkout's path), then ``geoseg --help`` in the activated
environment, as a newcomer's first commands; a PATH without this test run's environment, so the ``geoseg``
that answers is the one the lines installed."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from conftest import readme_block

ROOT = Path(__file__).resolve().parents[1]


def test_the_readme_install_lines_work_from_a_fresh_clone(tmp_path):
    lines = readme_block("## Install")
    assert lines[0].startswith("git clone <this repository> geoseg && cd geoseg")
    assert any(line.startswith("make install") for line in lines)
    script = "\n".join(["set -e", *(line.replace("<this repository>", str(ROOT)) for line in lines),
                        "command -v geoseg", "geoseg --help"])
    own_bin = str(Path(sys.executable).parent)
    path = os.pathsep.join(p for p in os.environ["PATH"].split(os.pathsep) if p != own_bin)
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH")}
    result = subprocess.run(["bash", "-c", script], cwd=tmp_path, capture_output=True, text=True,
                            env={**env, "PATH": path}, timeout=1800)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    out = result.stdout.splitlines()
    assert str(tmp_path / "geoseg/.venv/bin/geoseg") in out  # the clone's own environment answers
    assert "Land-cover segmentation for satellite and aerial imagery." in result.stdout
