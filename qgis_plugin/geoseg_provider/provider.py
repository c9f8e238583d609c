"""The geoseg Processing provider and its one setting: the path to the geoseg executable."""

import shutil
from pathlib import Path

from processing.core.ProcessingConfig import ProcessingConfig, Setting
from qgis.core import QgsProcessingProvider
from qgis.PyQt.QtGui import QIcon

from .algorithms import RASTER_SUFFIXES, VECTOR_SUFFIXES, EvaluateAlgorithm, PredictAlgorithm, TrainAlgorithm
from .runner import EXECUTABLE, tr

ICON = Path(__file__).with_name("icon.svg")


class GeosegProvider(QgsProcessingProvider):
    def id(self):
        return "geoseg"

    def name(self):
        return "geoseg"

    def longName(self):  # noqa: N802 (QGIS's name)
        return tr("geoseg land-cover segmentation")

    def icon(self):
        return QIcon(str(ICON))

    def svgIconPath(self):  # noqa: N802
        return str(ICON)

    def supportedOutputRasterLayerExtensions(self):  # noqa: N802
        return [s.lstrip(".") for s in RASTER_SUFFIXES[:1]]

    def supportedOutputVectorLayerExtensions(self):  # noqa: N802
        return [s.lstrip(".") for s in VECTOR_SUFFIXES]

    def defaultVectorFileExtension(self, has_geometry=True):  # noqa: N802
        return "gpkg"

    def defaultRasterFileExtension(self):  # noqa: N802
        return "tif"

    def load(self):
        ProcessingConfig.settingIcons[self.name()] = self.icon()
        ProcessingConfig.addSetting(Setting(self.name(), EXECUTABLE, tr("geoseg executable"),
                                            shutil.which("geoseg") or "", valuetype=Setting.FILE))
        ProcessingConfig.readSettings()
        self.refreshAlgorithms()
        return True

    def unload(self):
        ProcessingConfig.removeSetting(EXECUTABLE)

    def loadAlgorithms(self):  # noqa: N802
        for algorithm in (PredictAlgorithm(), EvaluateAlgorithm(), TrainAlgorithm()):
            self.addAlgorithm(algorithm)
