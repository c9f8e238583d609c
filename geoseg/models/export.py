"""``geoseg export``: a checkpoint as an ONNX model that QGIS plugins (Deepness) and other runtimes load, and
that ``geoseg predict --model model.onnx`` runs through ONNX Runtime.

By default the export is what Deepness (PUTvision/qgis-plugin-deepness, 0.6.x)
loads as it is: the graph takes normalised tiles ``input`` [batch, bands, tile,
tile] (the batch dynamic, the tile fixed: Deepness puts the input's height and
width into integer fields) and gives one output, ``probabilities`` (softmax over
classes; Deepness runs every output and wants a class-name map per output).
``metadata_props`` hold Deepness's keys with every value JSON-encoded (Deepness
runs ``json.loads`` on each): ``model_type`` ``"Segmentor"``, ``class_names``,
``resolution`` (cm per pixel), ``tile_size`` (what its code reads) and
``tiles_size`` (what its documentation writes), ``tiles_overlap`` (percent),
``standardization_mean``/``std``, and ``seg_thresh`` 0 and
``seg_small_segment`` 0, so Deepness shows the model's plain argmax rather than
thresholding probabilities at 0.5 and median-filtering the classes. The
``geoseg`` key holds everything a checkpoint holds but the weights and the
training state, so the ONNX file is a model geoseg can predict with on its own.

``dynamic=True`` exports any batch and tile size (sides a multiple of the
encoder's output stride, 32 for U-Nets) with ``logits`` as a second output: the
form geoseg's own ONNX Runtime engines cache beside a checkpoint, and the one
for runtimes other than Deepness.

Deepness's ``standardization_mean``/``standardization_std`` are applied after it
divides pixel values by 255: they are geoseg's mean and std divided by 255, which
is exact for 8-bit imagery. For 16-bit or float imagery (or percentile
normalisation, which clips first) Deepness's scaling cannot express geoseg's;
those models are for ``geoseg predict`` and other runtimes that apply the
``geoseg`` normalisation themselves.
"""

from __future__ import annotations

import json
import os
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from geoseg import __version__
from geoseg.errors import InputError
from geoseg.io.atomic import atomic_output, check_output_path
from geoseg.models.checkpoint import Checkpoint, load_checkpoint
from geoseg.models.fields import BASELINE, TORCH_ONLY, checked_tile

OPSET = 17
CHECKPOINT_KEYS = ("architecture", "model_config", "classes", "bands", "mean", "std", "clip", "chip_size",
                   "resolution", "train_config", "epoch", "metrics", "data")


class _WithProbabilities(torch.nn.Module):
    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x):
        logits = self.model(x)
        return torch.softmax(logits, dim=1), logits


def export_onnx(checkpoint: Checkpoint | str | os.PathLike, output: str | os.PathLike,
                overwrite: bool = False, overlap: int | None = None, *, tile: int | None = None,
                dynamic: bool = False) -> Path:
    """Write ``checkpoint`` (a loaded checkpoint, or its path) as an ONNX model at ``output`` (atomically)
    with Deepness's and geoseg's metadata: for Deepness, tiles of ``tile`` pixels (default: the chip size)
    and one output; with ``dynamic``, any tile size and ``logits`` too. ``overlap`` (pixels, default
    tile/8) becomes Deepness's ``tiles_overlap`` in percent."""
    import onnx

    output = check_output_path(output, overwrite)
    ckpt = checkpoint if isinstance(checkpoint, Checkpoint) else load_checkpoint(checkpoint)
    if ckpt.architecture in TORCH_ONLY:
        raise InputError(f"{ckpt.path or 'the model'} {_holds_trees(ckpt)}, which ONNX cannot hold: it runs "
                         "in geoseg predict, evaluate and the QGIS provider only; export the network alone "
                         "(the run's network.ckpt, or best.ckpt where it is the network)")
    tile = _tile_size(ckpt, tile)
    model = (_WithProbabilities(ckpt.build()) if dynamic else _Probabilities(ckpt.build())).eval()
    x = torch.zeros(1, len(ckpt.bands), tile, tile)
    outputs = ["probabilities", "logits"] if dynamic else ["probabilities"]
    axes = {0: "batch", 2: "height", 3: "width"} if dynamic else {0: "batch"}
    with atomic_output(output) as tmp:
        with torch.no_grad():
            torch.onnx.export(model, (x,), str(tmp), opset_version=OPSET, input_names=["input"],
                              output_names=outputs, dynamo=False,
                              dynamic_axes={name: axes for name in ["input", *outputs]})
        graph = onnx.load(str(tmp))
        if not dynamic:
            _fixed_output_shape(graph, len(ckpt.classes), tile)
        for key, value in _onnx_metadata(ckpt, overlap, tile).items():
            entry = graph.metadata_props.add()
            entry.key, entry.value = key, value
        onnx.save(graph, str(tmp))
    return output


def _holds_trees(ckpt: Checkpoint) -> str:
    return ("is the per-pixel baseline, a forest of trees" if ckpt.architecture == BASELINE else
            "blends a network with the per-pixel baseline's trees")


class _Probabilities(torch.nn.Module):
    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x):
        return torch.softmax(self.model(x), dim=1)


def _fixed_output_shape(graph, classes: int, tile: int) -> None:
    """Declare the output [batch, classes, tile, tile]: torch's exporter leaves the spatial sides symbolic
    (with odd names), and Deepness reads the output's shape to check it is square."""
    dims = graph.graph.output[0].type.tensor_type.shape.dim
    for dim, value in zip(dims[1:], (classes, tile, tile)):
        dim.ClearField("dim_param")
        dim.dim_value = value


def _tile_size(ckpt: Checkpoint, tile: int | None) -> int:
    """The exported model's tile side: ``tile``, or the chip size; a multiple of 32 (a U-Net's stride)."""
    return checked_tile(ckpt.chip_size if tile is None else int(tile))


def _onnx_metadata(ckpt: Checkpoint, overlap: int | None = None, tile: int | None = None) -> dict[str, str]:
    """The ``metadata_props`` of an exported model: Deepness's keys, every value JSON as Deepness parses
    them, and geoseg's ``geoseg`` key."""
    tile = ckpt.chip_size if tile is None else tile
    overlap = tile // 8 if overlap is None else overlap
    deepness = {
        "model_type": "Segmentor",
        "class_names": {str(i): name for i, name in enumerate(ckpt.classes.names)},
        "tile_size": tile,    # what Deepness's code reads
        "tiles_size": tile,   # what Deepness's documentation writes
        "tiles_overlap": round(100 * overlap / tile),
        "standardization_mean": [m / 255 for m in ckpt.mean],
        "standardization_std": [s / 255 for s in ckpt.std],
        "seg_thresh": 0.0,        # the model's argmax, not probabilities thresholded at 0.5
        "seg_small_segment": 0,   # no median filter over the classes
    }
    if ckpt.resolution:
        deepness["resolution"] = round(ckpt.resolution * 100, 4)  # Deepness: centimetres per pixel
    meta = {key: json.dumps(value) for key, value in deepness.items()}
    meta["geoseg"] = json.dumps(_checkpoint_fields(replace(ckpt, chip_size=tile)))  # the export's tile
    meta["geoseg_version"] = __version__
    return meta


def _checkpoint_fields(ckpt: Checkpoint) -> dict:
    fields = {key: getattr(ckpt, key) for key in CHECKPOINT_KEYS}
    fields["classes"] = ckpt.classes.to_dict()
    fields["metrics"] = {k: v for k, v in (ckpt.metrics or {}).items() if not isinstance(v, list)}
    return json.loads(json.dumps(fields, default=_plain))


def _plain(value):
    if isinstance(value, (np.generic,)):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    return str(value)
