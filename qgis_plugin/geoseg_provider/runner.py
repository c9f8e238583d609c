"""Running the geoseg command for an algorithm: its output handed to the feedback on the thread that runs the
algorithm (so ``qgis_process`` shows progress as it does for native algorithms), progress from geoseg's
``GEOSEG_PROGRESS=lines`` (read by :mod:`.progress_lines`), results from the JSON file geoseg writes
(``GEOSEG_RESULTS``) instead of its printed prose, outputs staged (:mod:`.staging`) so that only a finished
run replaces earlier files, a cancel that terminates geoseg on Windows and POSIX, and an error shown once.

(QgsBlockingProcess calls its output handlers on another thread, where a feedback call from Python blocks
under ``qgis_process``; hence the reader threads and a queue.)"""

import json
import os
import queue
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from pathlib import Path

from qgis.core import QgsProcessingException
from qgis.PyQt.QtCore import QCoreApplication

from .progress_lines import parse

EXECUTABLE = "GEOSEG_EXECUTABLE"
ERROR = "geoseg: error:"


def tr(text):
    return QCoreApplication.translate("geoseg", text)


def geoseg_executable():
    """The geoseg command: the provider setting, else the one on PATH."""
    try:
        from processing.core.ProcessingConfig import ProcessingConfig

        configured = ProcessingConfig.getSetting(EXECUTABLE)
    except Exception:  # outside QGIS's Processing framework
        configured = None
    return configured or shutil.which("geoseg") or "geoseg"


class _Messages:
    """geoseg's stderr into the feedback: progress as a monotonic percentage, warnings as warnings, errors
    kept for the one exception the run ends with."""

    def __init__(self, feedback):
        self.feedback, self.errors, self.progress, self.other = feedback, [], 0.0, []

    def __call__(self, line):
        parsed = parse(line)
        if parsed is not None:
            stage, percent = parsed
            if percent is not None and percent > self.progress:
                self.progress = percent
                self.feedback.setProgress(percent)
            return
        if line.startswith(ERROR):
            self.errors.append(line[len(ERROR):].strip())
        elif line.startswith("geoseg: warning:"):
            self.feedback.pushWarning(line)
        elif line:
            self.other.append(line)
            self.feedback.pushConsoleInfo(line)


def run_geoseg(args, feedback, staged=None):
    """Run ``geoseg ARGS``; the results it reports (a dict). With ``staged`` (a :class:`StagedOutputs`
    whose paths ARGS name) the outputs move into place only when geoseg succeeds; cancelled or failed, the
    staging is removed and earlier files are untouched.

    Two threads only read geoseg's stdout and stderr into a queue; every feedback call (progress, messages,
    cancel) is made here, on the thread that runs the algorithm, as ``qgis_process`` needs to show them."""
    executable = geoseg_executable()
    feedback.pushCommandInfo(" ".join([executable, *map(str, args)]))
    results_dir = tempfile.mkdtemp(prefix="geoseg-qgis-")
    results = Path(results_dir) / "results.json"
    env = dict(os.environ, GEOSEG_PROGRESS="lines", PYTHONUNBUFFERED="1", GEOSEG_RESULTS=str(results))
    try:
        try:
            process = subprocess.Popen([executable, *map(str, args)], stdout=subprocess.PIPE,
                                       stderr=subprocess.PIPE, text=True, encoding="utf-8", errors="replace",
                                       bufsize=1, env=env, **_own_process_group())
        except OSError as exc:
            raise QgsProcessingException(tr("cannot run geoseg at {0} ({1}); set its path under Settings "
                                            "→ Options → Processing → Providers → geoseg").format(
                                                executable, exc))
        messages = _Messages(feedback)
        code = _follow(process, feedback, messages)
        if feedback.isCanceled():
            raise QgsProcessingException(tr("cancelled; earlier outputs were left as they were"))
        if code != 0:
            message = messages.errors[-1] if messages.errors else " ".join(messages.other[-3:])
            raise QgsProcessingException(message or tr("geoseg exited with code {0}").format(code))
        reported = json.loads(results.read_text(encoding="utf-8")) if results.is_file() else {}
        if staged is not None:
            staged.commit()
        return reported
    finally:
        if staged is not None:
            staged.discard()
        shutil.rmtree(results_dir, ignore_errors=True)


def _own_process_group():
    """Start geoseg in a process group of its own, so a cancel reaches everything it started."""
    if os.name == "nt":
        return {"creationflags": subprocess.CREATE_NEW_PROCESS_GROUP}
    return {"start_new_session": True}


def _follow(process, feedback, messages) -> int:
    """Hand geoseg's lines to the feedback as they come, on this thread, until it exits; terminate it (and
    its process group) when the run is cancelled. Its exit code."""
    lines = queue.Queue()
    readers = [threading.Thread(target=_read, args=(stream, kind, lines), daemon=True)
               for stream, kind in ((process.stdout, "out"), (process.stderr, "err"))]
    for reader in readers:
        reader.start()
    open_streams, stop_sent = 2, None
    while open_streams:
        try:
            kind, line = lines.get(timeout=0.1)
        except queue.Empty:
            kind = None
        if kind is None:
            pass
        elif line is None:
            open_streams -= 1
        elif kind == "out":
            feedback.pushInfo(line)
        else:
            messages(line)
        if feedback.isCanceled() and process.poll() is None:
            if stop_sent is None:
                stop_sent = time.monotonic()
                _stop(process, force=False)
            elif time.monotonic() - stop_sent > GRACE_SECONDS:
                _stop(process, force=True)
    code = process.wait()
    process.stdout.close()
    process.stderr.close()
    return code


def _read(stream, kind, lines):
    for line in stream:
        lines.put((kind, line.rstrip("\r\n")))
    lines.put((kind, None))


#: Seconds geoseg has to clean up after a cancel before it is killed.
GRACE_SECONDS = 30


def _stop(process, force: bool) -> None:
    """Terminate geoseg and what it started: its process group on POSIX (SIGTERM, then SIGKILL), the process
    on Windows (TerminateProcess)."""
    try:
        if os.name == "nt":
            process.kill() if force else process.terminate()
        else:
            os.killpg(process.pid, signal.SIGKILL if force else signal.SIGTERM)
    except (ProcessLookupError, PermissionError, OSError):
        pass


__all__ = ["run_geoseg", "geoseg_executable", "tr"]
