"""An exported model as prediction runs it: the checkpoint it was made from (read from its metadata) and an
ONNX Runtime session behind the interface prediction uses. Nothing here imports torch, so a prediction with
an ONNX engine starts without it (see :mod:`geoseg.models.engines`)."""

from __future__ import annotations

import copy
import functools
import json
import os
import platform
from dataclasses import replace
from pathlib import Path

import numpy as np

from geoseg.errors import CheckpointError
from geoseg.io.atomic import atomic_output
from geoseg.io.fingerprint import cache_key, file_identity
from geoseg.models.checkpoint import MODEL_FORMATS, REBUILD, Checkpoint, ModelFormat, checkpoint_from_fields
from geoseg.models.hardware import vector_isa


def onnx_checkpoint(path: str | os.PathLike) -> Checkpoint:
    """The checkpoint an exported model was made from (without weights: :meth:`Checkpoint.build` gives an
    :class:`OnnxModel`). The metadata is read by ONNX Runtime, unoptimised: importing the ``onnx`` package
    alone takes ten times longer. Read once per version of the file (a prediction asks for it more than
    once)."""
    cached = _checkpoint_from_onnx(str(path), cache_key(file_identity(path)))
    return replace(copy.deepcopy(cached), path=Path(path))  # the caller's own copy


@functools.lru_cache(maxsize=8)
def _checkpoint_from_onnx(path: str, identity: str) -> Checkpoint:
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
    try:
        fields = json.loads(meta["geoseg"])
    except (ValueError, RecursionError):
        raise CheckpointError(f"{path} is not a usable geoseg model: its geoseg metadata is not JSON; "
                              f"{REBUILD}") from None
    return checkpoint_from_fields(fields, Path(path), weights=False)


class ArrayModel:
    """A model prediction runs without torch: normalised chips [n, bands, h, w] (float32 numpy) in, class
    probabilities [n, K, h, w] out (:meth:`probabilities`)."""

    def probabilities(self, x: np.ndarray) -> np.ndarray:
        raise NotImplementedError


class OnnxModel(ArrayModel):
    """An exported model run by ONNX Runtime: normalised chips [n, bands, h, w] (float32) in, class
    probabilities out."""

    def __init__(self, path: str | os.PathLike, threads: int | None = None, bands: int | None = None,
                 classes: int | None = None, chip: int | None = None, spinning: bool = True):
        self.session = onnx_session(Path(path), threads, spinning)
        self.outputs = [o.name for o in self.session.get_outputs()]
        _check_signature(self.session, Path(path), bands, classes, chip)

    def logits(self, x: np.ndarray) -> np.ndarray:
        return self.session.run(["logits"], {"input": np.ascontiguousarray(x, np.float32)})[0]

    def probabilities(self, x: np.ndarray) -> np.ndarray:
        """Softmax over classes [n, K, h, w]: the graph's own output (geoseg's exports have it), else from
        the logits."""
        if "probabilities" in self.outputs:
            return self.session.run(["probabilities"], {"input": np.ascontiguousarray(x, np.float32)})[0]
        logits = self.logits(x)
        e = np.exp(logits - logits.max(axis=1, keepdims=True))
        return e / e.sum(axis=1, keepdims=True)


def _check_signature(session, path: Path, bands: int | None, classes: int | None,
                     chip: int | None = None) -> None:
    """The graph takes ``input`` [batch, bands, height, width] and gives ``logits`` (or ``probabilities``)
    [batch, classes, height, width], as its metadata says (a fixed height and width, as in exports for
    Deepness, equal to its chip size): a graph that does not is one sentence."""
    inputs = {i.name: i.shape for i in session.get_inputs()}
    outputs = {o.name: o.shape for o in session.get_outputs()}
    shape_in = inputs.get("input")
    shape_out = outputs.get("logits", outputs.get("probabilities"))

    def fits(shape, size):
        return shape is not None and len(shape) == 4 and (size is None or not isinstance(shape[1], int)
                                                          or shape[1] == size) and all(
            chip is None or not isinstance(side, int) or side == chip for side in shape[2:])

    if len(inputs) != 1 or not fits(shape_in, bands) or not fits(shape_out, classes):
        side = "height, width" if chip is None else f"{chip}, {chip}"
        raise CheckpointError(f"{path} is not a usable geoseg model: its graph must take 'input' [batch, "
                              f"{bands}, {side}] and give 'logits' [batch, {classes}, {side}] as its "
                              f"metadata says; {REBUILD}")


def onnx_session(path: Path, threads: int | None = None, spinning: bool = True):
    """An ONNX Runtime session of ``path``; without ``spinning``, its threads sleep as soon as a run ends
    (two sessions taking turns would otherwise spin against each other).

    For the exports geoseg caches beside a checkpoint (``.<name>.engines/``), the graph ONNX Runtime
    optimises for the first session is saved beside the export, and later sessions load it with optimisation
    off, which starts them faster (figures in docs/benchmarks.md). The saved graph is specific to the CPU it
    was made on (ONNX Runtime's blocked layouts follow its vector width), so its name carries ONNX Runtime's
    version and the CPU's vector instruction set."""
    import onnxruntime as ort

    def options(optimise: bool):
        o = ort.SessionOptions()
        if threads:
            o.intra_op_num_threads = threads
        if not spinning:
            o.add_session_config_entry("session.intra_op.allow_spinning", "0")
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
    import onnxruntime as ort

    machine = f"{platform.machine()}-{vector_isa()}".lower()
    return path.with_name(f"{path.stem}.ort-{ort.__version__}-{machine}{path.suffix}")


def _build(ckpt: Checkpoint, threads: int | None) -> OnnxModel:
    return OnnxModel(ckpt.path, threads, bands=len(ckpt.bands), classes=len(ckpt.classes),
                     chip=ckpt.chip_size)


MODEL_FORMATS[".onnx"] = ModelFormat(read=onnx_checkpoint, build=_build)
