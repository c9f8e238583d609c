"""Shipping the QGIS plugin (geoseg.cli.qgis_plugin): inside the wheel, so `geoseg qgis-plugin install` works
from a plain `pip install`; a ZIP QGIS installs and loads (checked with real QGIS where it is installed);
metadata.txt complete as the QGIS plugin repository requires; a profile folder that is not one refused."""

from __future__ import annotations

import configparser
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from geoseg.cli.qgis_plugin import PLUGIN, check_profile, plugin_source, zip_plugin
from geoseg.errors import InputError

ROOT = Path(__file__).resolve().parents[1]
QGIS_PROCESS = shutil.which("qgis_process.bin") or shutil.which("qgis_process")


def test_the_wheel_carries_the_plugin_and_geoseg_finds_it_there(tmp_path):
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w",
                    str(tmp_path / "wheel"), str(ROOT)], check=True, timeout=600)
    (wheel,) = (tmp_path / "wheel").glob("geoseg-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    for name in ("metadata.txt", "icon.svg", "__init__.py", "runner.py", "staging.py", "progress_lines.py"):
        assert f"{PLUGIN}/{name}" in names
    zipfile.ZipFile(wheel).extractall(tmp_path / "site")
    found = subprocess.run([sys.executable, "-c", "import sys; sys.path.insert(0, sys.argv[1]); "
                            "from geoseg.cli.qgis_plugin import plugin_source; print(plugin_source())",
                            str(tmp_path / "site")], capture_output=True, text=True, cwd=tmp_path, check=True)
    assert Path(found.stdout.strip()) == tmp_path / "site" / PLUGIN  # not the checkout: the wheel's copy


def test_metadata_is_complete_for_the_plugin_repository():
    meta = configparser.ConfigParser()
    meta.read(plugin_source() / "metadata.txt", encoding="utf-8")
    general = meta["general"]
    for key in ("name", "qgisMinimumVersion", "description", "about", "version", "author", "email",
                "repository", "tracker", "tags", "icon", "hasProcessingProvider"):
        assert general.get(key, "").strip(), key
    assert (plugin_source() / general["icon"]).is_file()


def test_the_zip_holds_the_plugin_folder(tmp_path):
    path = zip_plugin(tmp_path / "geoseg_provider.zip")
    names = zipfile.ZipFile(path).namelist()
    assert f"{PLUGIN}/metadata.txt" in names and all(n.startswith(f"{PLUGIN}/") for n in names)
    assert not any("__pycache__" in n or n.endswith(".pyc") for n in names)
    with pytest.raises(InputError, match="exists"):
        zip_plugin(path)


def test_a_folder_that_is_not_a_profile_is_refused(tmp_path):
    (tmp_path / "QGIS3" / "profiles" / "default").mkdir(parents=True)
    with pytest.raises(InputError, match="holds QGIS profiles, it is not one; give --profile .*default"):
        check_profile(tmp_path / "QGIS3")
    with pytest.raises(InputError, match="is not a QGIS profile folder"):
        check_profile(tmp_path / "elsewhere")
    assert check_profile(tmp_path / "QGIS3" / "profiles" / "default") == tmp_path / "QGIS3" / "profiles" / \
        "default"


@pytest.mark.skipif(QGIS_PROCESS is None, reason="QGIS (qgis_process) is not installed")
def test_qgis_loads_the_plugin_unpacked_from_the_zip(tmp_path):
    """What Install from ZIP does: the ZIP unpacked into a profile's python/plugins and enabled; qgis_process
    (pointed at the profiles' folder with QGIS_CUSTOM_CONFIG_PATH) lists the three algorithms."""
    path = zip_plugin(tmp_path / "geoseg_provider.zip")
    profile = tmp_path / "config" / "profiles" / "default"
    (profile / "python" / "plugins").mkdir(parents=True)
    zipfile.ZipFile(path).extractall(profile / "python" / "plugins")
    (profile / "QGIS").mkdir()
    (profile / "QGIS" / "QGIS3.ini").write_text(f"[PythonPlugins]\n{PLUGIN}=true\n")
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "QT_QPA_PLATFORM": "offscreen",
           "QGIS_CUSTOM_CONFIG_PATH": str(tmp_path / "config")}
    listed = subprocess.run([QGIS_PROCESS, "list"], capture_output=True, text=True, env=env, timeout=300)
    for algorithm in ("geoseg:predict", "geoseg:evaluate", "geoseg:train"):
        assert algorithm in listed.stdout, listed.stdout[-2000:] + listed.stderr[-2000:]
    assert os.path.isdir(profile / "python" / "plugins" / PLUGIN)
