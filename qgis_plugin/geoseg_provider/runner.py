"""Running the geoseg command for an algorithm: progress and messages into the Processing feedback, cancel
kills it (and everything it started) and removes what it left behind."""

import os
import re
import shutil
import signal
import subprocess
import threading
from pathlib import Path

from qgis.core import QgsProcessingException

EXECUTABLE = "GEOSEG_EXECUTABLE"
PROGRESS = re.compile(r"^PROGRESS (\w+) (\d+)/(\d+|\?)$")

#: Each stage's share of the whole run, for the progress bar.
STAGES = {"predict": (0, 85), "resample": (85, 90), "vectorize": (90, 100), "scenes": (0, 90),
          "train": (0, 100), "epoch": (0, 100)}


def geoseg_executable():
    """The geoseg command: the provider setting, else the one on PATH."""
    try:
        from processing.core.ProcessingConfig import ProcessingConfig

        configured = ProcessingConfig.getSetting(EXECUTABLE)
    except Exception:  # outside QGIS's Processing framework
        configured = None
    return configured or shutil.which("geoseg") or "geoseg"


def run_geoseg(args, feedback, leftovers=()):
    """Run ``geoseg ARGS``; its output lines go to ``feedback``. Returns the lines it printed on stdout.

    On cancel the process group is terminated (geoseg removes its temporary files on SIGTERM) and then the
    paths in ``leftovers`` (globs) are removed: a cancelled run leaves nothing behind.
    """
    executable = geoseg_executable()
    env = dict(os.environ, GEOSEG_PROGRESS="lines", PYTHONUNBUFFERED="1")
    feedback.pushCommandInfo(" ".join([executable, *map(str, args)]))
    try:
        process = subprocess.Popen([executable, *map(str, args)], stdout=subprocess.PIPE,
                                   stderr=subprocess.PIPE, text=True, bufsize=1, env=env,
                                   start_new_session=True)
    except OSError as exc:
        raise QgsProcessingException(f"cannot run geoseg at {executable} ({exc}); set its path under "
                                     "Settings → Options → Processing → Providers → geoseg")
    errors, stdout = [], []
    reader = threading.Thread(target=_read_stderr, args=(process.stderr, feedback, errors), daemon=True)
    reader.start()
    watcher = threading.Thread(target=_cancel_when_asked, args=(process, feedback), daemon=True)
    watcher.start()
    for line in process.stdout:
        line = line.rstrip()
        stdout.append(line)
        feedback.pushInfo(line)
    code = process.wait()
    reader.join()
    if feedback.isCanceled():
        _remove(leftovers)
        raise QgsProcessingException("cancelled; nothing was written")
    if code != 0:
        message = next((e for e in reversed(errors) if e.startswith("geoseg: error:")), None)
        raise QgsProcessingException(message or f"geoseg exited with code {code}: {' '.join(errors[-3:])}")
    return stdout


def _read_stderr(stream, feedback, errors):
    for line in stream:
        line = line.rstrip()
        match = PROGRESS.match(line)
        if match:
            stage, done, total = match.groups()
            low, high = STAGES.get(stage, (0, 100))
            if total != "?" and int(total) > 0:
                feedback.setProgress(low + (high - low) * int(done) / int(total))
            continue
        errors.append(line)
        if line.startswith("geoseg: warning:"):
            feedback.pushWarning(line)
        elif line:
            feedback.pushConsoleInfo(line)


def _cancel_when_asked(process, feedback):
    while process.poll() is None:
        if feedback.isCanceled():
            try:
                os.killpg(process.pid, signal.SIGTERM)
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            return
        threading.Event().wait(0.2)


def _remove(patterns):
    for pattern in patterns:
        path = Path(pattern)
        for found in path.parent.glob(path.name):
            if found.is_dir():
                shutil.rmtree(found, ignore_errors=True)
            else:
                found.unlink(missing_ok=True)


def leftovers_of(raster, vector=None):
    """What an interrupted prediction of ``raster`` (and ``vector``) may leave: the outputs, their sidecars,
    and the partial rasters and state kept for ``--resume``."""
    raster = Path(raster)
    found = [str(raster), str(raster) + ".aux.xml", str(raster.with_suffix(".qml")),
             str(raster.with_suffix(".stac.json")), str(raster.parent / f".{raster.stem}.geoseg-*")]
    if vector:
        vector = Path(vector)
        found += [str(vector), str(vector.parent / f".{vector.stem}*"),
                  str(vector.with_name(f"{vector.stem}_summary.csv"))]
    return found
