"""``geoseg export``: a checkpoint as an ONNX model that QGIS plugins (Deepness) and other runtimes load, and
that ``geoseg predict --model model.onnx`` runs through ONNX Runtime.

The graph takes normalised chips ``input`` [batch, bands, height, width] (batch
and spatial size dynamic; sides a multiple of the encoder's output stride, 32
for U-Nets) and gives ``probabilities`` (softmax over classes: what Deepness's
Segmentor reads, its first output) and ``logits``. ``metadata_props`` carry
Deepness's keys (values as strings, JSON for dicts and lists) and geoseg's own
``geoseg`` key: everything a checkpoint holds but the weights and the training
state, so the ONNX file is a model geoseg can predict with on its own.

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
from pathlib import Path

import numpy as np
import torch

from geoseg import __version__
from geoseg.io.atomic import atomic_output, check_output_path
from geoseg.models.checkpoint import Checkpoint, load_checkpoint

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
                overwrite: bool = False, overlap: int | None = None) -> Path:
    """Write ``checkpoint`` (a loaded checkpoint, or its path) as an ONNX model at ``output`` (atomically)
    with Deepness's and geoseg's metadata; ``overlap`` (pixels, default chip/8) becomes Deepness's
    ``tiles_overlap`` in percent."""
    import onnx

    output = check_output_path(output, overwrite)
    ckpt = checkpoint if isinstance(checkpoint, Checkpoint) else load_checkpoint(checkpoint)
    model = _WithProbabilities(ckpt.build()).eval()
    x = torch.zeros(1, len(ckpt.bands), ckpt.chip_size, ckpt.chip_size)
    axes = {0: "batch", 2: "height", 3: "width"}
    with atomic_output(output) as tmp:
        with torch.no_grad():
            torch.onnx.export(model, (x,), str(tmp), opset_version=OPSET, input_names=["input"],
                              output_names=["probabilities", "logits"], dynamo=False,
                              dynamic_axes={"input": axes, "probabilities": axes, "logits": axes})
        graph = onnx.load(str(tmp))
        for key, value in onnx_metadata(ckpt, overlap).items():
            entry = graph.metadata_props.add()
            entry.key, entry.value = key, value
        onnx.save(graph, str(tmp))
    return output


def onnx_metadata(ckpt: Checkpoint, overlap: int | None = None) -> dict[str, str]:
    """The ``metadata_props`` of an exported model: Deepness's keys and geoseg's ``geoseg`` key."""
    overlap = ckpt.chip_size // 8 if overlap is None else overlap
    meta = {
        "model_type": "Segmentor",
        "class_names": json.dumps({str(i): name for i, name in enumerate(ckpt.classes.names)}),
        "tiles_size": str(ckpt.chip_size),
        "tiles_overlap": str(round(100 * overlap / ckpt.chip_size)),
        "standardization_mean": json.dumps([m / 255 for m in ckpt.mean]),
        "standardization_std": json.dumps([s / 255 for s in ckpt.std]),
        "geoseg": json.dumps(_checkpoint_fields(ckpt)),
        "geoseg_version": __version__,
    }
    if ckpt.resolution:
        meta["resolution"] = str(round(ckpt.resolution * 100, 4))  # Deepness: centimetres per pixel
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
