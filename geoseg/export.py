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
from geoseg.atomic import atomic_output, check_output_path
from geoseg.classes import ClassSchema
from geoseg.errors import CheckpointError
from geoseg.models import Checkpoint, load_checkpoint

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


def export_onnx(checkpoint: str | os.PathLike, output: str | os.PathLike, overwrite: bool = False,
                overlap: int | None = None) -> Path:
    """Write ``checkpoint`` as an ONNX model at ``output`` (atomically) with Deepness's and geoseg's
    metadata; ``overlap`` (pixels, default chip/8) becomes Deepness's ``tiles_overlap`` in percent."""
    import onnx

    output = check_output_path(output, overwrite)
    ckpt = load_checkpoint(checkpoint)
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


def checkpoint_from_onnx(path: str | os.PathLike) -> Checkpoint:
    """The checkpoint an exported model was made from (without weights: :meth:`Checkpoint.build` gives an
    ONNX Runtime model). The metadata is read by ONNX Runtime, unoptimised: importing the ``onnx`` package
    alone takes longer (1.7 s on a 2-core CPU against 0.16 s)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    options.log_severity_level = 4
    try:
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # any failure to parse means the same to the user
        raise CheckpointError(f"{path} is not a readable ONNX model ({type(exc).__name__})") from None
    meta = dict(session.get_modelmeta().custom_metadata_map)
    if "geoseg" not in meta:
        raise CheckpointError(f"{path} is an ONNX model without geoseg's metadata; export it with geoseg "
                              "export CKPT -o model.onnx")
    fields = json.loads(meta["geoseg"])
    fields["classes"] = ClassSchema.from_dict(fields["classes"])
    fields["clip"] = tuple(fields["clip"]) if fields.get("clip") else None
    return Checkpoint(state_dict={}, path=Path(path), **fields)


class OnnxModel(torch.nn.Module):
    """An exported model run by ONNX Runtime behind the interface prediction uses (a module returning
    logits)."""

    def __init__(self, path: str | os.PathLike, threads: int | None = None):
        super().__init__()
        self.session = onnx_session(Path(path), threads)
        self.register_buffer("_device", torch.zeros(0))  # where prediction looks for the model's device

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        inputs = {"input": x.float().contiguous().numpy()}
        return torch.from_numpy(self.session.run(["logits"], inputs)[0])


def onnx_session(path: Path, threads: int | None = None):
    """An ONNX Runtime session of ``path``.

    For the exports geoseg caches beside a checkpoint (``.<name>.engines/``), the graph ONNX Runtime
    optimises for the first session is saved beside the export, and later sessions load it with optimisation
    off, which starts them faster (figures in the README). The saved graph is specific to the CPU it was made
    on (ONNX Runtime's blocked layouts follow its vector width), so its name carries ONNX Runtime's version
    and the CPU's capability."""
    import onnxruntime as ort

    def options(optimise: bool):
        o = ort.SessionOptions()
        if threads:
            o.intra_op_num_threads = threads
        if not optimise:
            o.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        return o

    providers = ["CPUExecutionProvider"]
    optimised = optimised_copy(path)
    if optimised is None:
        return ort.InferenceSession(str(path), options(True), providers=providers)
    if optimised.exists():
        try:
            return ort.InferenceSession(str(optimised), options(False), providers=providers)
        except Exception:  # damaged or from another ONNX Runtime build: made again below
            optimised.unlink(missing_ok=True)
    try:
        with atomic_output(optimised, checked=True) as tmp:
            first = options(True)
            first.optimized_model_filepath = str(tmp)
            first.log_severity_level = 3  # its warning that the saved graph is for this CPU: it is, by name
            session = ort.InferenceSession(str(path), first, providers=providers)
            if not tmp.exists() or tmp.stat().st_size == 0:
                raise OSError(f"ONNX Runtime did not write {tmp}")
        return session
    except OSError:  # the cache is an optimisation: a folder that cannot take it costs start-up time only
        return ort.InferenceSession(str(path), options(True), providers=providers)


def optimised_copy(path: Path) -> Path | None:
    """Where :func:`onnx_session` keeps the optimised graph of a cached export; None for other ONNX files
    (a user's own model is never written beside)."""
    if not path.parent.name.endswith(".engines"):
        return None
    import platform

    import onnxruntime as ort

    machine = f"{platform.machine()}-{torch.backends.cpu.get_cpu_capability()}".lower()
    return path.with_name(f"{path.stem}.ort-{ort.__version__}-{machine}{path.suffix}")
