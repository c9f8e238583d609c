"""The geoseg Processing provider and its one setting: the path to the geoseg executable."""

import shutil

from processing.core.ProcessingConfig import ProcessingConfig, Setting
from qgis.core import QgsProcessingProvider

from .algorithms import EvaluateAlgorithm, PredictAlgorithm, TrainAlgorithm
from .runner import EXECUTABLE


class GeosegProvider(QgsProcessingProvider):
    def id(self):
        return "geoseg"

    def name(self):
        return "geoseg"

    def longName(self):  # noqa: N802 (QGIS's name)
        return "geoseg land-cover segmentation"

    def load(self):
        ProcessingConfig.settingIcons[self.name()] = self.icon()
        ProcessingConfig.addSetting(Setting(self.name(), EXECUTABLE, "geoseg executable",
                                            shutil.which("geoseg") or "", valuetype=Setting.FILE))
        ProcessingConfig.readSettings()
        self.refreshAlgorithms()
        return True

    def unload(self):
        ProcessingConfig.removeSetting(EXECUTABLE)

    def loadAlgorithms(self):  # noqa: N802
        for algorithm in (PredictAlgorithm(), EvaluateAlgorithm(), TrainAlgorithm()):
            self.addAlgorithm(algorithm)
