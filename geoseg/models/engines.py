"""CPU engines for prediction: torch (bf16 autocast where the CPU has it, else fp32; channels_last), ONNX
Runtime fp32, ONNX Runtime int8 (static quantization) and adaptive precision (int8, with the chips where it
may give another class than fp32 predicted again in fp32: :mod:`geoseg.models.adaptive`).

``--engine auto`` (unless ``GEOSEG_ENGINE`` pins another) takes torch on a GPU; on a CPU it measures, once
per model, CPU and tile, ONNX Runtime fp32, torch bf16 (where the CPU has it) and adaptive precision on the
model's own check chips and, for each scene, takes the fastest whose classes agree with fp32's, start
included (:mod:`geoseg.models.engine_speed`): which one that is depends on the CPU, the tile and the scene's
size (the measurements are in docs/benchmarks.md). int8 alone is never chosen by ``auto``: its class raster
does not agree with fp32's closely enough on every reference model; ask for it with ``--engine int8``.

Exported and quantized models are made once and cached beside the checkpoint in ``.<name>.engines/``, named
by the checkpoint's content; the int8 model's calibration chips (drawn from the checkpoint's training scenes,
or from the scene being predicted when those are not reachable) are kept with it, and so is the adaptive
engine's model file (its rule, calibrated on check chips drawn the same way).

The choice is made in one place, :func:`select_engine`. A prediction whose engine is such a cached model
never imports torch (most of a cold start on a small CPU): the checkpoint's fields come from the export's
metadata, and ``auto`` reads its measured choice, kept with the exports.
"""

from __future__ import annotations

import contextlib
import logging
import os
import subprocess
import sys
import warnings
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from geoseg.data.model_input import normalise
from geoseg.errors import InputError
from geoseg.io.atomic import atomic_output
from geoseg.io.fingerprint import cache_key, file_identity
from geoseg.io.manifest import read_records
from geoseg.io.raster import open_raster, read_padded, resolve_bands
from geoseg.models.adaptive import SUFFIX, calibrate, write_adaptive_model
from geoseg.models.checkpoint import Checkpoint, autocast_dtype, default_device, load_checkpoint
from geoseg.models.engine_speed import Measured, choice_path, measure, read_choice, timed_tiles, write_choice
from geoseg.models.fields import BASELINE, TORCH_ONLY
from geoseg.models.hardware import cuda_available, may_have_gpu
from geoseg.models.onnx_runtime import OnnxModel
from geoseg.models.tiling import is_local, largest_tile
from geoseg.progress import say

ENGINES = ("auto", "torch", "onnx", "int8", "adaptive")

#: Chips the int8 model is calibrated on.
CALIBRATION_CHIPS = 8
#: Pixels (and the fewest and most chips) the adaptive engine's rule is calibrated on.
CHECK_PIXELS = 2 ** 21
CHECK_CHIPS = (16, 128)



@dataclass(frozen=True)
class Engine:
    """What predicts: the checkpoint (or exported model) to load and how it was chosen, for the summary."""

    checkpoint: Checkpoint
    name: str       # torch-bf16, torch-fp32, onnx-fp32, onnx-int8, onnx-int8+fp32
    reason: str


@dataclass(frozen=True)
class EngineChoice:
    """The engine chosen for a model on this machine — decided once, here, before anything is built: the
    checkpoint's fields (read from a cached export's metadata where the chosen engine needs no torch), the
    engine's kind and why it was chosen. :meth:`prepare` builds what the engine runs."""

    checkpoint: Checkpoint
    # torch, onnx, int8, adaptive or exported; for auto on a CPU, measure (measured when prepared) or
    # measured (the engine taken for each scene from ``measured``)
    kind: str
    reason: str
    precision: str = "auto"
    tile: int | None = None   # the side of the tiles asked for (None: the default tile), for ``measure``
    measured: Measured | None = None

    def prepare(self, scene: str | os.PathLike, megapixels: float = 0.0) -> Engine:
        """The engine ready to run for ``scene``, whose tiles hold ``megapixels`` (what ``auto``'s choice
        weighs against each engine's start): for ONNX Runtime the export (and the int8 model, calibrated on
        the training scenes or, where those are gone, on ``scene``, and the adaptive rule), made once,
        cached beside the checkpoint."""
        ckpt = self.checkpoint
        if self.kind == "measure":
            measured, why_not = _measure_engines(ckpt, scene, self.tile)
            if measured is None:
                return replace(self, kind="torch", reason=why_not).prepare(scene)
            return replace(self, kind="measured", measured=measured).prepare(scene, megapixels)
        if self.kind == "measured":
            kind = self.measured.choose(megapixels)
            if kind == "torch" and not ckpt.state_dict:  # the fields came from the export: the weights now
                ckpt = load_checkpoint(ckpt.path)
            return replace(self, checkpoint=ckpt, kind=kind,
                           reason=self.measured.reason(kind, megapixels)).prepare(scene)
        if self.kind == "exported":
            adaptive = ckpt.path is not None and ckpt.path.suffix.lower() == SUFFIX
            return Engine(ckpt, "onnx-int8+fp32" if adaptive else "onnx-fp32", self.reason)
        if self.kind == "torch":
            import torch


            amp = autocast_dtype(default_device(), self.precision)
            name = f"torch-{'bf16' if amp == torch.bfloat16 else 'fp16' if amp else 'fp32'}"
            return Engine(ckpt, name, self.reason)
        exported = _exported_model(ckpt)
        if self.kind == "onnx":
            return Engine(load_checkpoint(exported), "onnx-fp32", self.reason)
        quantized = _quantized_model(ckpt, exported, scene)
        if self.kind == "int8":
            return Engine(load_checkpoint(quantized), "onnx-int8", self.reason)
        adaptive = _adaptive_model(ckpt, exported, quantized, scene)
        return Engine(load_checkpoint(adaptive), "onnx-int8+fp32", self.reason)


def select_engine(model: str | os.PathLike | Checkpoint, engine: str = "auto",
                  precision: str = "auto", tile: int | None = None) -> EngineChoice:
    """The engine for ``model`` (a checkpoint's path, a loaded checkpoint or an exported ``.onnx``) with
    ``engine`` (one of :data:`ENGINES`, or ``GEOSEG_ENGINE``) and ``precision`` on this machine, predicting
    tiles of side ``tile`` (None: the training chip): the one place the choice is made and checked.

    Where the choice is an ONNX Runtime engine whose export is already cached
    beside the checkpoint (asked for, or ``auto``'s measured choice), the
    checkpoint's fields come from the export's metadata: neither torch nor the
    weights are loaded, which saves seconds before the first chip on a CPU.
    """
    asked = _asked_engine(engine)
    loaded = model if isinstance(model, Checkpoint) else None
    path = loaded.path if loaded is not None else Path(model)
    if path is not None and path.suffix.lower() in (".onnx", SUFFIX):
        what = "an exported ONNX model" if path.suffix.lower() == ".onnx" else "an adaptive model file"
        return EngineChoice(loaded or load_checkpoint(path), "exported", what, precision)
    measured = _measured_choice(path, tile) if asked == "auto" and precision == "auto" else None
    known = _engine_without_torch(asked)
    if loaded is None:
        source = known[0] if known else "onnx" if measured else None
        cached = _cached_model(path, source) if source and path.is_file() else None
        loaded = replace(load_checkpoint(cached), path=path) if cached else load_checkpoint(path)
    if loaded.architecture in TORCH_ONLY:
        return EngineChoice(loaded, *_torch_only(loaded, asked), precision)
    if measured:
        return EngineChoice(loaded, "measured", "measured", precision, tile, measured)
    if known:
        kind, reason = known
    elif asked == "auto":
        kind, reason = _auto_with_torch(precision)
    else:
        kind, reason = asked, "asked for"
    return EngineChoice(loaded, kind, reason, precision, tile)


def _torch_only(ckpt: Checkpoint, asked: str) -> tuple[str, str]:
    """(torch, why) for a model ONNX cannot hold (the per-pixel baseline's trees, alone or blended); asking
    for an ONNX Runtime engine for it is one sentence."""
    what = ("the per-pixel baseline" if ckpt.architecture == BASELINE else
            "a network blended with the baseline")
    if asked in ("onnx", "int8", "adaptive"):
        raise InputError(f"{ckpt.path or 'the model'} is {what}, whose trees ONNX Runtime cannot run; "
                         "predict it with --engine auto or torch")
    return "torch", f"{what}: its trees run in torch only"


def _asked_engine(engine: str) -> str:
    if engine == "auto" and os.environ.get("GEOSEG_ENGINE"):  # pinned, e.g. for reproducible runs
        engine = os.environ["GEOSEG_ENGINE"]
    if engine not in ENGINES:
        raise InputError(f"--engine (or GEOSEG_ENGINE) must be one of {', '.join(ENGINES)}, got {engine!r}")
    return engine


def _engine_without_torch(engine: str) -> tuple[str, str] | None:
    """(engine, reason) where an ONNX Runtime engine is asked for; else None."""
    if engine in ("onnx", "int8", "adaptive"):
        return engine, "asked for"
    return None


def _measured_choice(ckpt_path: Path | None, tile: int | None) -> Measured | None:
    """What ``auto`` measured for the checkpoint at ``ckpt_path`` on this CPU and ``tile`` (None: the
    default tile), where it has (and no GPU may be used instead); else None."""
    if ckpt_path is None or not ckpt_path.is_file() or (may_have_gpu() and cuda_available()):
        return None
    return read_choice(choice_path(_engine_folder(ckpt_path), cache_key(file_identity(ckpt_path)), tile))


def _auto_with_torch(precision: str) -> tuple[str, str]:
    """(engine, reason) for ``auto`` not measured yet: torch on a GPU or at a precision asked for, else
    ``measure`` (done when the engine is prepared)."""
    device = default_device()
    if device.type == "cuda":
        return "torch", "a GPU"
    if precision != "auto":
        return "torch", f"precision {precision} asked for"
    return "measure", "to be measured"


def _measure_engines(ckpt: Checkpoint, scene: str | os.PathLike,
                     tile: int | None) -> tuple[Measured | None, str]:
    """``auto``'s measurement for ``ckpt`` on this CPU at ``tile`` (None: the largest default tile), on its
    check chips (the adaptive rule's) and on tiles read from the same scenes, kept beside the exports; the
    engines it compares are made (and cached) on the way. Where no export can be made beside the model (a
    folder that cannot take it): None, and why (prediction goes on in torch); where no int8 model can be
    made, the others are measured."""
    say("measuring the engines for this model on this CPU (once) ...")
    try:
        exported = _exported_model(ckpt)
    except Exception as exc:  # prediction goes on in torch, as it did before auto measured
        return None, f"no ONNX export could be kept beside the model ({type(exc).__name__})"
    check = _check_chips(ckpt, scene)
    shape = dict(bands=len(ckpt.bands), classes=len(ckpt.classes))
    # threads that sleep between runs: the engines take turns in this process and must not spin against
    # each other (the adaptive engine's two sessions run so in prediction too)
    forwards = {"onnx": OnnxModel(exported, spinning=False, **shape).probabilities}
    models = {"onnx": exported}
    if autocast_dtype(default_device(), "auto") is not None:
        forwards["torch"] = _bf16_forward(ckpt)
        models["torch"] = ckpt.path
    try:
        adaptive = _adaptive_model(ckpt, exported, _quantized_model(ckpt, exported, scene), scene, check)
        forwards["adaptive"] = load_checkpoint(adaptive).build().probabilities
        models["adaptive"] = adaptive
    except Exception:  # ONNX Runtime could not quantize this graph: the exact engines are measured
        pass
    side = tile or (largest_tile(ckpt.chip_size) if is_local(ckpt) else ckpt.chip_size)
    timed = check[:timed_tiles(ckpt.chip_size, side)] if side == ckpt.chip_size else _calibration_chips(
        ckpt, scene, timed_tiles(ckpt.chip_size, side), at_random=True, side=side)
    starts = {kind: _start_seconds(kind, model, ckpt) for kind, model in models.items()}
    if starts["onnx"] is None:  # the reference's start unknown: the engines are compared on speed alone
        starts = dict.fromkeys(starts, 0.0)
    forwards = {kind: forward for kind, forward in forwards.items() if starts[kind] is not None}
    measured = measure(forwards, check, timed, starts)
    with contextlib.suppress(OSError):  # not kept: measured again next time
        write_choice(choice_path(engine_folder(ckpt), cache_key(file_identity(ckpt.path)), tile), measured)
    return measured, "measured"


#: A fresh process that makes an engine ready and predicts one tile with it; prints the seconds it took.
_START = """
import sys, time
start = time.perf_counter()
from geoseg.models.engines import _first_tile
_first_tile(*sys.argv[1:])
print(time.perf_counter() - start)
"""


def _start_seconds(kind: str, model: Path, ckpt: Checkpoint) -> float | None:
    """Seconds a fresh process takes from its imports to ``kind``'s first tile (what a prediction pays
    before its first chip); None where that process fails (the engine is then not measured; where ONNX
    Runtime fp32's fails, the starts are left out: 0 for all)."""
    import geoseg

    root = str(Path(geoseg.__file__).resolve().parent.parent)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([root, *filter(None, [os.environ.get("PYTHONPATH")])])}
    try:
        done = subprocess.run([sys.executable, "-c", _START, kind, str(model), str(ckpt.chip_size)],
                              capture_output=True, text=True, env=env, timeout=300, check=True)
        return float(done.stdout.strip().splitlines()[-1])
    except (OSError, subprocess.SubprocessError, ValueError, IndexError):
        return None


def _first_tile(kind: str, model: str, side: str) -> None:
    """Make ``kind``'s engine from ``model`` and predict one tile of ``side`` px with it (for
    :func:`_start_seconds`, in a fresh process)."""
    ckpt = load_checkpoint(model)
    forward = _bf16_forward(ckpt) if kind == "torch" else ckpt.build().probabilities
    forward(np.zeros((1, len(ckpt.bands), int(side), int(side)), np.float32))


def _bf16_forward(ckpt: Checkpoint):
    """Class probabilities of normalised chips by ``ckpt``'s torch model under bf16 autocast, channels last
    (as torch predicts on a CPU with bf16)."""
    import torch

    model = ckpt.build().to(memory_format=torch.channels_last)

    def forward(x: np.ndarray) -> np.ndarray:
        with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
            t = torch.from_numpy(x).contiguous(memory_format=torch.channels_last)
            return torch.softmax(model(t), dim=1).to(torch.float32).numpy()

    return forward


def _cached_model(ckpt_path: Path, engine: str) -> Path | None:
    """The cached export (``onnx``), int8 model (``int8``) or adaptive model file (``adaptive``) of the
    checkpoint at ``ckpt_path``, if made."""
    name = {"onnx": "fp32.onnx", "int8": "int8.onnx", "adaptive": f"int8-fp32{SUFFIX}"}[engine]
    target = _engine_folder(ckpt_path) / f"{cache_key(file_identity(ckpt_path))}-{name}"
    return target if target.exists() else None


def engine_folder(ckpt: Checkpoint) -> Path:
    return _engine_folder(Path(ckpt.path))


def _engine_folder(ckpt_path: Path) -> Path:
    return ckpt_path.with_name(f".{ckpt_path.name}.engines")


def _exported_model(ckpt: Checkpoint) -> Path:
    """The checkpoint exported to ONNX (fp32), made once per checkpoint content."""
    target = engine_folder(ckpt) / f"{cache_key(file_identity(ckpt.path))}-fp32.onnx"
    if not target.exists():
        from geoseg.models.export import export_onnx  # torch: only to make the export

        target.parent.mkdir(exist_ok=True)
        export_onnx(ckpt if ckpt.state_dict else ckpt.path, target, overwrite=True,  # weights loaded once
                    dynamic=True)
    return target


def _quantized_model(ckpt: Checkpoint, exported: Path, scene: str | os.PathLike) -> Path:
    """The int8 model (ONNX Runtime static quantization, QDQ, per-channel weights), made once per checkpoint
    content, with its calibration chips saved beside it."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    key = cache_key(file_identity(ckpt.path))
    folder = engine_folder(ckpt)
    target = folder / f"{key}-int8.onnx"
    if target.exists():
        return target
    chips_path = folder / f"{key}-calibration.npz"
    if chips_path.exists():
        with np.load(chips_path) as z:
            chips = z["chips"]
    else:
        chips = _calibration_chips(ckpt, scene)
        with open(chips_path, "wb") as fh:
            np.savez_compressed(fh, chips=chips)

    class Chips(CalibrationDataReader):
        def __init__(self):
            self.items = iter({"input": chip[None]} for chip in chips)

        def get_next(self):
            return next(self.items, None)

    from onnxruntime.quantization.shape_inference import quant_pre_process


    with atomic_output(target) as tmp, warnings.catch_warnings(), _quiet_root_logger():
        warnings.simplefilter("ignore")
        prepared = tmp.with_name(tmp.stem + "-prepared.onnx")
        try:  # shapes inferred and the graph optimised first, as ONNX Runtime recommends
            quant_pre_process(str(exported), str(prepared))
            quantize_static(str(prepared), str(tmp), Chips(), quant_format=QuantFormat.QDQ, per_channel=True,
                            activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
        finally:
            prepared.unlink(missing_ok=True)
        _copy_metadata(exported, tmp)
    return target


def _adaptive_model(ckpt: Checkpoint, exported: Path, quantized: Path, scene: str | os.PathLike,
                    check: np.ndarray | None = None) -> Path:
    """The adaptive engine's model file: the int8 and fp32 models and their recompute rule, calibrated on
    the ``check`` chips (:func:`_check_chips`, drawn here where not given), made once per checkpoint
    content."""
    target = engine_folder(ckpt) / f"{cache_key(file_identity(ckpt.path))}-int8-fp32{SUFFIX}"
    if target.exists():
        return target
    chips = _check_chips(ckpt, scene) if check is None else check
    shape = dict(bands=len(ckpt.bands), classes=len(ckpt.classes))
    calibration = calibrate(OnnxModel(quantized, **shape), OnnxModel(exported, **shape), chips)
    write_adaptive_model(target, quantized, exported, calibration)
    return target


def _check_chips(ckpt: Checkpoint, scene: str | os.PathLike) -> np.ndarray:
    """The model's check chips: about :data:`CHECK_PIXELS` pixels in :data:`CHECK_CHIPS` chips, drawn at
    random (seeded) from the training scenes, or ``scene``."""
    low, high = CHECK_CHIPS
    return _calibration_chips(ckpt, scene, int(np.clip(CHECK_PIXELS // ckpt.chip_size ** 2, low, high)),
                              at_random=True)


@contextlib.contextmanager
def _quiet_root_logger():
    """ONNX Runtime's quantization tools log advice to the root logger; a user of geoseg cannot act on it."""
    logger = logging.getLogger()
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def _copy_metadata(source: Path, target: Path) -> None:
    import onnx

    meta = {p.key: p.value for p in onnx.load(str(source), load_external_data=False).metadata_props}
    model = onnx.load(str(target))
    del model.metadata_props[:]
    for key, value in meta.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.save(model, str(target))


def _calibration_chips(ckpt: Checkpoint, scene: str | os.PathLike, n: int = CALIBRATION_CHIPS,
                       at_random: bool = False, side: int | None = None) -> np.ndarray:
    """``n`` normalised chips [n, bands, side, side] (``side``: the training chip unless given): spread over
    the checkpoint's training scenes when they are reachable, else over ``scene``; along each scene's
    diagonal, or ``at_random`` (seeded) within it."""
    from rasterio.windows import Window


    sources = _training_scenes(ckpt) or [Path(str(scene))]
    chip, chips = side or ckpt.chip_size, []
    rng = np.random.default_rng(0)
    for k in range(n):
        path = sources[k % len(sources)]
        with open_raster(path) as src:
            bands = resolve_bands(src, path, ckpt.bands)
            f = (k // len(sources) + 0.5) / -(-n // len(sources))  # spread along the diagonal
            fx, fy = rng.random(2) if at_random else (f, f)
            window = Window(int((src.width - chip) * fx), int((src.height - chip) * fy), chip, chip)
            data, _, content = read_padded(src, window, bands)
        normalise(data, content, ckpt.mean, ckpt.std, ckpt.clip)
        chips.append(data)
    return np.stack(chips).astype(np.float32)


def _training_scenes(ckpt: Checkpoint) -> list[Path]:

    training = ckpt.training
    if training.manifest is None:
        return []
    try:
        records = read_records(training.manifest, list(training.split_fractions), training.seed)
    except Exception:  # moved or deleted since training: calibrate on the scene instead
        return []
    return [r.image for r in records if r.split == "train" and Path(r.image).exists()]
