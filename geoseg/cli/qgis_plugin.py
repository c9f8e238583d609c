"""``geoseg qgis-plugin install`` and ``zip``: the QGIS Processing provider (``qgis_plugin/geoseg_provider``
in the repository, the ``geoseg_provider`` package in the wheel) linked into a QGIS profile, enabled, and
pointed at this geoseg executable; or packed as the ZIP QGIS's *Install from ZIP* takes."""

from __future__ import annotations

import importlib.util
import os
import shutil
import sys
from pathlib import Path

from geoseg.errors import InputError

PLUGIN = "geoseg_provider"


def plugin_source() -> Path:
    """The plugin folder: the repository's (a checkout or an editable install), else the ``geoseg_provider``
    package installed with geoseg's wheel (found without importing it: it needs QGIS)."""
    checkout = Path(__file__).resolve().parents[2] / "qgis_plugin" / PLUGIN
    if (checkout / "metadata.txt").is_file():
        return checkout
    spec = importlib.util.find_spec(PLUGIN)
    if spec is not None and spec.submodule_search_locations:
        installed = Path(list(spec.submodule_search_locations)[0])
        if (installed / "metadata.txt").is_file():
            return installed
    raise InputError(f"the QGIS plugin ({PLUGIN}) is not installed with this geoseg; reinstall geoseg "
                     "(pip install geoseg, or pip install -e . in its repository)")


def zip_plugin(output: str | os.PathLike, overwrite: bool = False) -> Path:
    """The plugin as a ZIP for QGIS's *Plugins → Manage and Install Plugins → Install from ZIP* (the
    ``geoseg_provider/`` folder with its metadata, code and icon), written atomically."""
    import zipfile

    from geoseg.io.atomic import atomic_output, check_output_path

    output = check_output_path(Path(output), overwrite)
    source = plugin_source()
    with atomic_output(output) as tmp, zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as archive:
        for path in sorted(source.rglob("*")):
            if path.is_file() and "__pycache__" not in path.parts and path.suffix != ".pyc":
                archive.write(path, f"{PLUGIN}/{path.relative_to(source).as_posix()}")
    return output


def check_profile(profile: Path) -> Path:
    """A QGIS user profile folder (``…/QGIS3/profiles/<name>``), or one sentence saying what to give."""
    if (profile / "profiles").is_dir():
        names = sorted(p.name for p in (profile / "profiles").iterdir() if p.is_dir()) or ["default"]
        raise InputError(f"{profile} holds QGIS profiles, it is not one; give --profile "
                         f"{profile / 'profiles' / names[0]}")
    if profile.parent.name != "profiles":
        raise InputError(f"{profile} is not a QGIS profile folder (…/QGIS3/profiles/<name>, e.g. "
                         f"{_default_profile()}); QGIS would never load a plugin installed there")
    return profile


def _default_profile() -> Path:
    """QGIS's default user profile folder on this system."""
    if sys.platform == "win32":
        base = Path(os.environ.get("APPDATA", Path.home() / "AppData" / "Roaming"))
    elif sys.platform == "darwin":
        base = Path.home() / "Library" / "Application Support"
    else:
        base = Path(os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share")
    return base / "QGIS" / "QGIS3" / "profiles" / "default"


def install_plugin(profile: str | os.PathLike | None = None, copy: bool = False,
                   executable: str | None = None) -> Path:
    """Link (or ``copy``) the plugin into ``profile``'s ``python/plugins``, enable it in the profile's
    ``QGIS3.ini`` and set the provider's geoseg executable; the installed plugin folder."""
    source = plugin_source()
    profile = check_profile(Path(profile)) if profile else _default_profile()
    plugins = profile / "python" / "plugins"
    plugins.mkdir(parents=True, exist_ok=True)
    target = plugins / PLUGIN
    if target.is_symlink() or target.is_file():
        target.unlink()
    elif target.is_dir():
        shutil.rmtree(target)
    if copy:
        shutil.copytree(source, target, ignore=shutil.ignore_patterns("__pycache__"))
    else:
        target.symlink_to(source, target_is_directory=True)
    executable = executable or shutil.which("geoseg") or str(Path(sys.executable).with_name("geoseg"))
    _set_ini(profile / "QGIS" / "QGIS3.ini", {"PythonPlugins": {PLUGIN: "true"},
                                              "Processing": {"Configuration\\GEOSEG_EXECUTABLE": executable}})
    return target


def _set_ini(path: Path, values: dict[str, dict[str, str]]) -> None:
    """Set keys in a Qt INI file, leaving every other line as it is."""
    lines = path.read_text(encoding="utf-8").splitlines() if path.exists() else []
    for section, keys in values.items():
        header = f"[{section}]"
        if header not in lines:
            lines += ([""] if lines else []) + [header]
        start = lines.index(header) + 1
        end = next((i for i in range(start, len(lines)) if lines[i].startswith("[")), len(lines))
        for key, value in keys.items():
            found = next((i for i in range(start, end) if lines[i].split("=", 1)[0] == key), None)
            if found is None:
                lines.insert(end, f"{key}={value}")
                end += 1
            else:
                lines[found] = f"{key}={value}"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
