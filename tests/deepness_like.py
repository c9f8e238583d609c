"""A faithful reimplementation of how Deepness 0.6.5 (PUTvision/qgis-plugin-deepness, ``src/deepness``) reads
and runs a segmentation model, written from its source so that CI catches an export Deepness would reject
without QGIS: ``ModelBase.__init__`` and its ``get_metadata_*`` readers (every value through ``json.loads``),
``get_outputs_channel_names`` (one class-name map per output), ``Segmentor.__init__`` and
``check_loaded_model_outputs``, the dock widget's ``_load_model_and_display_info`` and
``_load_default_model_parameters`` (integer spin boxes for the tile and batch size), and
``MapProcessorSegmentation._process_tile`` with ``preprocessing_utils`` (channels limited, /255, standardised,
NHWC → NCHW; probabilities under ``seg_thresh`` zeroed, argmax + 1, a median blur of ``seg_small_segment``).
The real plugin, run under QGIS, is checked by ``tests/deepness_check.py`` where its source is at hand."""

from __future__ import annotations

import ast
import json

import numpy as np
import onnxruntime as ort


class SpinBox:
    """QSpinBox.setValue as the dock widget calls it: an int, or Qt's TypeError."""

    def __init__(self):
        self.value = None

    def setValue(self, value):  # noqa: N802 (Qt's name)
        if not isinstance(value, int) or isinstance(value, bool):
            raise TypeError(f"setValue(self, int): argument 1 has unexpected type '{type(value).__name__}'")
        self.value = value


class DoubleSpinBox(SpinBox):
    def setValue(self, value):  # noqa: N802
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            raise TypeError(f"setValue(self, float): argument 1 has unexpected type '{type(value).__name__}'")
        self.value = float(value)


class ModelBase:
    """Deepness's ModelBase, as far as loading a model and processing a tile go."""

    def __init__(self, path: str):
        self.sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        inputs = self.sess.get_inputs()
        if len(inputs) > 1:
            raise Exception("ONNX model: unsupported number of inputs")
        self.input_shape = inputs[0].shape
        self.input_name = inputs[0].name
        self.outputs_layers = self.sess.get_outputs()
        channels = self.input_shape[-3]
        self.mean = np.array([0.0] * channels, np.float32)
        self.std = np.array([1.0] * channels, np.float32)
        meta = self.meta
        if "standardization_mean" in meta and "standardization_std" in meta:
            self.mean = np.array([float(x) for x in json.loads(meta["standardization_mean"])], np.float32)
            self.std = np.array([float(x) for x in json.loads(meta["standardization_std"])], np.float32)
        self.outputs_names = self.get_outputs_channel_names()


    @property
    def meta(self) -> dict:
        return self.sess.get_modelmeta().custom_metadata_map

    def get_outputs_channel_names(self):
        for name in ("class_names", "names"):
            if name not in self.meta:
                continue
            txt = self.meta[name]
            try:
                class_names = json.loads(txt)
            except json.decoder.JSONDecodeError:
                class_names = ast.literal_eval(txt)
            if isinstance(class_names, dict):
                class_names = [class_names]
            all_names = []
            for names in (sorted(cn.items(), key=lambda kv: int(kv[0])) for cn in class_names):
                output_names = []
                for counter, (key, value) in enumerate(names):
                    if int(key) != counter:
                        raise Exception("Class names in the model metadata are not consecutive")
                    output_names.append(value)
                all_names.append(output_names)
            return all_names
        return None

    def _value(self, name: str, kind):
        return kind(json.loads(self.meta[name])) if name in self.meta else None

    def get_metadata_model_type(self):
        return str(json.loads(self.meta["model_type"])).capitalize() if "model_type" in self.meta else None

    def get_metadata_resolution(self):
        return self._value("resolution", float)

    def get_metadata_tile_size(self):
        return self._value("tile_size", int)

    def get_metadata_tiles_overlap(self):
        return self._value("tiles_overlap", int)

    def get_metadata_segmentation_threshold(self):
        return self._value("seg_thresh", float)

    def get_metadata_segmentation_small_segment(self):
        return self._value("seg_small_segment", int)

    def get_model_batch_size(self):
        bs = self.input_shape[0]
        return None if isinstance(bs, str) else bs

    def process(self, tiles: np.ndarray) -> list[np.ndarray]:
        """``preprocessing`` then every output of the model, as ModelBase.process does."""
        x = tiles[:, :, :, :self.input_shape[-3]]
        x = np.float32(x * 1.0 / 255.0)
        x = (x - self.mean) / self.std
        x = np.transpose(x, (0, 3, 1, 2))
        return self.sess.run(output_names=None, input_feed={self.input_name: x})


class Segmentor(ModelBase):
    """Deepness's Segmentor: one class-name list per output, sigmoid outputs get a background name."""

    def __init__(self, path: str):
        super().__init__(path)
        self.outputs_are_sigmoid = self.check_loaded_model_outputs()
        for idx in range(len(self.outputs_layers)):
            if self.outputs_names is None:
                continue
            if len(self.outputs_names[idx]) == 1 and self.outputs_are_sigmoid[idx]:
                self.outputs_names[idx] = ["background", self.outputs_names[idx][0]]

    def check_loaded_model_outputs(self) -> list[bool]:
        for o in self.outputs_layers:  # Deepness 0.5's check, kept so earlier versions load the model too
            if len(o.shape) == 4 and o.shape[2] != o.shape[3]:
                raise Exception(f"Segmentation model can handle only square outputs masks. Has: {o.shape}")
        return [True if len(o.shape) == 3 else o.shape[-3] == 1 for o in self.outputs_layers]


def load_in_dock_widget(path: str) -> dict:
    """What the dock widget does on loading a model and on *Load default parameters*: the model type from the
    metadata (``ModelType("Segmentor")``), the input's size into the tile spin box, then the defaults; the
    values it shows."""
    model_type = ModelBase(path).get_metadata_model_type()  # ModelBase.get_model_type_from_metadata
    if model_type != "Segmentor":  # ModelType(value) raises for anything else
        raise ValueError(f"'{model_type}' is not a valid ModelType")
    model = Segmentor(path)
    model.check_loaded_model_outputs()
    tile, batch, resolution, overlap = SpinBox(), SpinBox(), DoubleSpinBox(), SpinBox()
    tile.setValue(model.input_shape[-1])
    if model.get_model_batch_size() is not None:
        batch.setValue(model.get_model_batch_size())
    for box, value in ((resolution, model.get_metadata_resolution()), (tile, model.get_metadata_tile_size()),
                       (overlap, model.get_metadata_tiles_overlap())):
        if value is not None:
            box.setValue(value)
    threshold = model.get_metadata_segmentation_threshold()
    small = model.get_metadata_segmentation_small_segment()
    return {"model": model, "tile": tile.value, "resolution_cm": resolution.value, "overlap_percent":
            overlap.value, "threshold": 0 if not threshold else threshold, "median": small or 0}


def process_tile(model: Segmentor, tile_rgb: np.ndarray, threshold: float, median: int) -> list[np.ndarray]:
    """MapProcessorSegmentation._process_tile on one tile [h, w, channels] (uint8): per output, classes
    1..K (argmax + 1) after zeroing probabilities under ``threshold``; a median blur of ``median`` px
    would follow over the whole map (1 px: none)."""
    assert int(median // 2) * 2 + 1 == 1, "a median filter would blur the classes"
    out = []
    for result in model.process(tile_rgb[None]):
        result = result.copy()
        result[result < threshold] = 0.0
        if result.ndim == 3:
            result = result[:, None]
        if result.shape[1] == 1:
            result = (result != 0).astype(int) + 1
        else:
            result = np.argmax(result, axis=1)[:, None] + 1
        out.append(result[0, 0])
    return out
