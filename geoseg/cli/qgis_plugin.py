"""``geoseg qgis-plugin install``: the QGIS Processing provider (``qgis_plugin/geoseg_provider`` in the
repository) linked into a QGIS profile, enabled, and pointed at this geoseg executable."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

from geoseg.errors import InputError

PLUGIN = "geoseg_provider"


def plugin_source() -> Path:
    """The plugin folder shipped beside the geoseg package (a source checkout or an editable install)."""
    source = Path(__file__).resolve().parents[2] / "qgis_plugin" / PLUGIN
    if not (source / "metadata.txt").is_file():
        raise InputError(f"the QGIS plugin is not at {source}; install geoseg from its repository "
                         "(pip install -e .) to get it")
    return source


def default_profile() -> Path:
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
    profile = Path(profile) if profile else default_profile()
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
