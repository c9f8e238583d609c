"""Run geoseg:predict through QGIS Processing (headless) to OUT_DIR/lc.tif and lc.gpkg and cancel it as soon
as it reports progress; run it to the end; then run it again to the same names and cancel that run too.

    QT_QPA_PLATFORM=offscreen /usr/bin/python3 tests/qgis_cancel.py PLUGIN_DIR GEOSEG_EXE SCENE MODEL OUT_DIR

Prints one JSON object: whether the second run was cancelled, its message, the last progress seen, and the
files of OUT_DIR with their bytes' hashes after the first run and after the cancelled one.
"""

import hashlib
import json
import os
import sys

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
from qgis.core import QgsApplication, QgsProcessingException, QgsProcessingFeedback  # noqa: E402


class CancelOnProgress(QgsProcessingFeedback):
    """Cancels once the run has made progress (so geoseg is in the middle of its work)."""

    seen = 0.0

    def setProgress(self, progress):  # noqa: N802 (QGIS's name)
        super().setProgress(progress)
        self.seen = max(self.seen, progress)
        if progress > 0:
            self.cancel()


def hashes(folder):
    """Every file and folder under ``folder`` (hidden ones too), with the SHA-256 of each file's bytes."""
    found = {}
    for root, dirs, files in os.walk(folder):
        for name in dirs:
            found[os.path.relpath(os.path.join(root, name), folder) + "/"] = "folder"
        for name in files:
            path = os.path.join(root, name)
            with open(path, "rb") as fh:
                found[os.path.relpath(path, folder)] = hashlib.sha256(fh.read()).hexdigest()
    return found


def main(plugins, executable, scene, model, out):
    app = QgsApplication([], False)
    app.initQgis()
    sys.path.append("/usr/share/qgis/python/plugins")
    sys.path.insert(0, plugins)
    from processing.core.Processing import Processing
    from processing.core.ProcessingConfig import ProcessingConfig

    Processing.initialize()
    from geoseg_provider.provider import GeosegProvider

    provider = GeosegProvider()
    QgsApplication.processingRegistry().addProvider(provider)
    ProcessingConfig.setSettingValue("GEOSEG_EXECUTABLE", executable)
    import processing

    parameters = {"INPUT": scene, "MODEL": model, "OUTPUT_RASTER": f"{out}/lc.tif",
                  "OUTPUT_VECTOR": f"{out}/lc.gpkg"}
    try:  # a first run, cancelled: it leaves nothing behind
        processing.run("geoseg:predict", parameters, feedback=CancelOnProgress())
    except QgsProcessingException:
        pass
    first_cancelled = hashes(out)
    processing.run("geoseg:predict", parameters, feedback=QgsProcessingFeedback())
    before = hashes(out)
    feedback = CancelOnProgress()
    result = {"cancelled": False}
    try:
        processing.run("geoseg:predict", parameters, feedback=feedback)
    except QgsProcessingException as exc:
        result = {"cancelled": feedback.isCanceled(), "message": str(exc)}
    result["progress"] = feedback.seen
    result["before"], result["after"] = before, hashes(out)
    result["first_cancelled"] = first_cancelled
    QgsApplication.processingRegistry().removeProvider(provider)
    print(json.dumps(result))
    app.exitQgis()


if __name__ == "__main__":
    main(*sys.argv[1:6])
