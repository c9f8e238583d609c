"""Render the Processing dialog of geoseg:predict headless (Qt's offscreen platform) into a PNG:

    /usr/bin/python3 tests/qgis_screenshot.py docs/images/qgis_predict_dialog.png
"""

import os
import sys
from pathlib import Path

PLUGINS = Path(__file__).resolve().parents[1] / "qgis_plugin"


def main(png: str) -> None:
    os.environ["QT_QPA_PLATFORM"] = "offscreen"
    from qgis.core import QgsApplication
    from qgis.gui import QgsGui

    app = QgsApplication([], True)
    app.initQgis()
    QgsGui.instance()
    sys.path.append("/usr/share/qgis/python/plugins")
    sys.path.insert(0, str(PLUGINS))
    from geoseg_provider.provider import GeosegProvider
    from processing.core.Processing import Processing
    from processing.gui.AlgorithmDialog import AlgorithmDialog

    Processing.initialize()
    provider = GeosegProvider()
    QgsApplication.processingRegistry().addProvider(provider)
    dialog = AlgorithmDialog(QgsApplication.processingRegistry().createAlgorithmById("geoseg:predict"))
    dialog.show()
    dialog.setMinimumSize(900, 860)
    dialog.resize(900, 860)
    for _ in range(20):
        app.processEvents()
    print(dialog.grab().save(png))
    dialog.close()
    del dialog
    QgsApplication.processingRegistry().removeProvider(provider)
    app.exitQgis()


if __name__ == "__main__":
    main(sys.argv[1])
