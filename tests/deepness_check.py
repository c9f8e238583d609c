"""Deepness's own code, unmodified, loads and runs a model that ``geoseg export`` wrote: its dock widget loads
the model without an error and fills resolution, tile size and overlap from the metadata; its segmentation
runs on a scene, and its class raster is compared with ``geoseg predict``'s.

Run by hand (it needs QGIS and a checkout of PUTvision/qgis-plugin-deepness; CI checks the same readers
through ``tests/deepness_like.py``)::

    QT_QPA_PLATFORM=offscreen PYTHONPATH=DEEPNESS/src python3 tests/deepness_check.py \\
        model.onnx scene.tif geoseg_classes.tif

with a Python that has QGIS (``/usr/bin/python3`` on Debian) and Deepness's requirements (onnxruntime,
opencv-python-headless). Prints one JSON line: what the dock widget showed and the agreement; exits 1 when the
dock widget reported an error or the agreement is under 95 %.
"""

from __future__ import annotations

import json
import sys
from unittest.mock import MagicMock

import numpy as np


def main(model: str, scene: str, geoseg_classes: str) -> int:
    from qgis.core import QgsApplication, QgsProject, QgsRasterLayer

    app = QgsApplication([], False)
    app.initQgis()
    from qgis.PyQt.QtWidgets import QMessageBox

    errors: list[str] = []
    QMessageBox.critical = lambda *args, **kw: errors.append(str(args[2] if len(args) > 2 else args))

    from deepness.common.processing_parameters.map_processing_parameters import ProcessedAreaType
    from deepness.deepness_dockwidget import DeepnessDockWidget
    from deepness.processing.map_processor.map_processor_segmentation import MapProcessorSegmentation

    layer = QgsRasterLayer(scene, "scene")
    assert layer.isValid(), scene
    QgsProject.instance().addMapLayer(layer)
    dock = DeepnessDockWidget(iface=MagicMock())
    dock.mMapLayerComboBox_inputLayer.setLayer(layer)
    dock.lineEdit_modelPath.setText(model)
    dock._load_model_and_display_info()
    dock._load_default_model_parameters()
    shown = {"errors": errors, "model_type": dock.comboBox_modelType.currentText(),
             "resolution_cm": dock.doubleSpinBox_resolution_cm_px.value(),
             "tile": dock.spinBox_tileSize_px.value(),
             "overlap_percent": dock.spinBox_processingTileOverlapPercentage.value(),
             "threshold_on": dock.checkBox_pixelClassEnableThreshold.isChecked(),
             "remove_small_on": dock.checkBox_removeSmallAreas.isChecked(),
             "info": dock.label_modelInfo.text()}
    if errors:
        print(json.dumps(shown))
        return 1
    dock._get_input_layer_id = MagicMock(return_value=layer.id())
    dock.comboBox_processedAreaSelection.setCurrentText(ProcessedAreaType.ENTIRE_LAYER.value)
    params = dock.get_inference_parameters()
    processor = MapProcessorSegmentation(rlayer=layer, vlayer_mask=None, map_canvas=MagicMock(),
                                         params=params)
    processor.run()
    result = processor.get_result_img()[0]  # classes 1..K at the model's resolution, 0 outside
    shown["agreement"] = agreement(result, geoseg_classes)
    print(json.dumps(shown))
    return 0 if shown["agreement"]["share"] >= 0.95 else 1


def agreement(deepness: np.ndarray, geoseg_classes: str) -> dict:
    """Share of the valid pixels where Deepness's class (index + 1) is geoseg's, on Deepness's grid (geoseg's
    raster taken at the pixel centres of Deepness's coarser or equal grid over the same extent)."""
    from osgeo import gdal  # QGIS's Python has GDAL's bindings (not rasterio, not geoseg)

    dataset = gdal.Open(geoseg_classes)
    codes = dataset.GetRasterBand(1).ReadAsArray()
    order = [int(item.split(":", 1)[0]) for item in dataset.GetMetadataItem("classes").split(",")]
    h, w = deepness.shape
    rows = ((np.arange(h) + 0.5) * codes.shape[0] / h).astype(int)
    cols = ((np.arange(w) + 0.5) * codes.shape[1] / w).astype(int)
    ours = codes[rows[:, None], cols[None, :]]
    lut = np.full(256, -1)
    for i, code in enumerate(order):  # the model's output index i is class code ``code``
        lut[code] = i + 1
    ours = lut[ours]
    valid = (ours > 0) & (deepness > 0)
    return {"share": float((ours == deepness)[valid].mean()), "pixels": int(valid.sum()),
            "deepness_shape": [h, w], "geoseg_shape": list(codes.shape)}


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:4]))
