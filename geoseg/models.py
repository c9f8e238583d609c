"""Model factory over segmentation-models-pytorch, checkpoints, and precision.

A checkpoint is one file holding everything ``predict`` needs: the factory's
arguments, weights, class schema, bands, normalisation, chip size and
resolution, plus the training config and metrics.
"""

from __future__ import annotations

import contextlib
import io
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from geoseg import __version__
from geoseg.atomic import atomic_output
from geoseg.classes import ClassSchema
from geoseg.errors import CheckpointError, ConfigError, WeightsUnavailableError

if TYPE_CHECKING:  # torch is imported where it is used: prediction with ONNX Runtime runs without it
    import torch

    from geoseg.onnx_model import OnnxModel

CHECKPOINT_FORMAT = "geoseg-checkpoint"
CHECKPOINT_VERSION = 1


def build_model(architecture: str, model_config: dict[str, Any], pretrained: bool = True) -> torch.nn.Module:
    """Create an smp model from ``model_architecture`` and ``model_config`` (the reference keys).

    With ``pretrained=False`` the encoder is built without downloading weights
    (for loading a checkpoint). Missing pretrained weights raise one clear sentence.
    """
    import segmentation_models_pytorch as smp

    kwargs = dict(model_config)
    weights = kwargs.pop("encoder_weights", None)
    try:
        with _quiet():
            model = smp.create_model(architecture, encoder_weights=None, **kwargs)
    except KeyError as exc:
        raise ConfigError("model_architecture/encoder not available in segmentation-models-pytorch: "
                          f"{exc}") from None
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"model_config is not accepted by {architecture}: {exc}") from None
    if not pretrained or weights is None:
        return model
    if is_weights_file(weights):
        return load_encoder_weights(model, weights, kwargs.get("encoder_name"))
    try:
        with _quiet():
            return smp.create_model(architecture, encoder_weights=weights, **kwargs)
    except Exception as exc:  # network, cache or hub failures all mean the same to the user
        raise WeightsUnavailableError(
            f"pretrained '{weights}' weights for encoder '{kwargs.get('encoder_name')}' could not be "
            "downloaded "
            f"or found in the local cache ({type(exc).__name__}); connect to the internet once, copy them "
            "into "
            f"the torch/Hugging Face cache, or set model_config.encoder_weights: null"
        ) from None


#: File suffixes of weights brought from elsewhere (``encoder_weights: /path/to/weights.pth``).
WEIGHT_SUFFIXES = (".pth", ".pt", ".ckpt", ".bin", ".safetensors")


def is_weights_file(weights: str) -> bool:
    """Whether ``encoder_weights`` names a file rather than a pretrained set such as ``imagenet``."""
    return Path(weights).suffix.lower() in WEIGHT_SUFFIXES or "/" in weights or os.sep in weights


def load_encoder_weights(model: torch.nn.Module, path: str, encoder: str | None) -> torch.nn.Module:
    """Load encoder weights from a local file: a state dict of the encoder, of a whole smp model (its
    ``encoder.`` part is taken) or a geoseg checkpoint; shapes must fit exactly."""
    import torch

    if not Path(path).is_file():
        raise ConfigError(f"model_config.encoder_weights: {path} does not exist; give a state dict saved "
                          "with torch.save, or 'imagenet' or null")
    try:
        if path.lower().endswith(".safetensors"):
            from safetensors.torch import load_file

            state = load_file(path)
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # any unreadable file means the same to the user
        raise ConfigError(f"model_config.encoder_weights: {path} is not a readable state dict "
                          f"({type(exc).__name__})") from None
    if isinstance(state, dict) and state.get("format") == CHECKPOINT_FORMAT:
        state = state["state_dict"]
    elif isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ConfigError(f"model_config.encoder_weights: {path} does not hold a state dict of tensors")
    if any(k.startswith("encoder.") for k in state):
        state = {k[len("encoder."):]: v for k, v in state.items() if k.startswith("encoder.")}
    own = model.encoder.state_dict()
    missing = sorted(set(own) - set(state))
    wrong = [k for k in own if k in state and tuple(state[k].shape) != tuple(own[k].shape)]
    if missing or wrong:
        what = (f"{len(missing)} of its tensors are missing (e.g. {missing[0]})" if missing else
                f"{len(wrong)} tensors have other shapes (e.g. {wrong[0]}: {tuple(state[wrong[0]].shape)} "
                f"instead of {tuple(own[wrong[0]].shape)})")
        raise ConfigError(f"model_config.encoder_weights: {path} does not fit encoder '{encoder}': {what}; "
                          "use weights saved from the same encoder")
    model.encoder.load_state_dict({k: state[k] for k in own})
    return model


@contextlib.contextmanager
def _quiet():
    with contextlib.redirect_stdout(io.StringIO()):
        yield


@dataclass
class Checkpoint:
    """Everything needed to rebuild a trained model and apply it to a scene."""

    architecture: str
    model_config: dict[str, Any]
    state_dict: dict[str, torch.Tensor]
    classes: ClassSchema
    bands: list[int]
    mean: list[float]
    std: list[float]
    chip_size: int
    resolution: float | None = None
    train_config: dict[str, Any] = field(default_factory=dict)
    epoch: int = 0
    metrics: dict[str, Any] = field(default_factory=dict)
    training_state: dict[str, Any] | None = None
    clip: tuple[list[float], list[float]] | None = None  # per-band value range inputs are clipped to first
    data: dict[str, Any] = field(default_factory=dict)  # what it was trained on: scenes, synthetic or not
    path: Path | None = field(default=None, compare=False)  # the file it was loaded from (not saved)

    def build(self, threads: int | None = None) -> torch.nn.Module | OnnxModel:
        """The model with this checkpoint's weights, in eval mode (for an exported ``.onnx`` model, an
        :class:`~geoseg.onnx_model.OnnxModel` using ``threads`` threads)."""
        if self.path is not None and self.path.suffix.lower() == ".onnx":
            from geoseg.onnx_model import OnnxModel

            return OnnxModel(self.path, threads)
        if self.architecture == "PixelBaseline":
            from geoseg.baseline import PixelBaselineModel, classifier_from_tensor

            classifier = classifier_from_tensor(self.state_dict["classifier"])
            return PixelBaselineModel(classifier, len(self.classes))
        model = build_model(self.architecture, self.model_config, pretrained=False)
        try:
            model.load_state_dict(self.state_dict)
        except RuntimeError as exc:
            raise CheckpointError(f"checkpoint weights do not fit {self.architecture}: "
                                  f"{str(exc).splitlines()[0]}") from None
        return model.eval()

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": CHECKPOINT_FORMAT, "format_version": CHECKPOINT_VERSION, "geoseg_version": __version__,
            "architecture": self.architecture, "model_config": self.model_config,
            "state_dict": self.state_dict, "classes": self.classes.to_dict(), "bands": self.bands,
            "normalization": {"mean": self.mean, "std": self.std,
                              **({"low": self.clip[0], "high": self.clip[1]} if self.clip else {})},
            "chip_size": self.chip_size,
            "resolution": self.resolution, "train_config": self.train_config, "epoch": self.epoch,
            "metrics": self.metrics, "training_state": self.training_state, "data": self.data,
        }


def save_checkpoint(ckpt: Checkpoint, path: str | os.PathLike) -> Path:
    """Write a checkpoint atomically."""
    import torch

    with atomic_output(path) as tmp:
        torch.save(ckpt.to_dict(), tmp)
    return Path(path)


def load_checkpoint(path: str | os.PathLike) -> Checkpoint:
    """Read a checkpoint, refusing anything that is not a complete geoseg checkpoint."""
    p = Path(path)
    if not p.exists():
        raise CheckpointError(f"checkpoint {path} does not exist")
    if p.is_dir():
        raise CheckpointError(f"checkpoint {path} is a directory, not a file")
    if p.suffix.lower() == ".onnx":
        from geoseg.onnx_model import checkpoint_from_onnx

        return checkpoint_from_onnx(p)
    import torch

    try:
        d = torch.load(p, map_location="cpu", weights_only=True, mmap=True)  # weights read lazily
    except Exception as exc:
        raise CheckpointError(f"{path} is not a readable geoseg checkpoint (truncated or corrupt: "
                              f"{type(exc).__name__})") from None
    if not isinstance(d, dict) or d.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{path} is not a geoseg checkpoint")
    if d.get("format_version", 0) > CHECKPOINT_VERSION:
        raise CheckpointError(f"{path} was written by a newer geoseg ({d.get('geoseg_version')}); upgrade "
                              "geoseg")
    try:
        return Checkpoint(
            architecture=d["architecture"], model_config=d["model_config"], state_dict=d["state_dict"],
            classes=ClassSchema.from_dict(d["classes"]), bands=list(d["bands"]),
            mean=list(d["normalization"]["mean"]), std=list(d["normalization"]["std"]),
            chip_size=int(d["chip_size"]), resolution=d.get("resolution"),
            train_config=d.get("train_config", {}),
            epoch=int(d.get("epoch", 0)), metrics=d.get("metrics", {}),
            training_state=d.get("training_state"), clip=_clip(d["normalization"]), data=d.get("data") or {},
            path=p,
        )
    except (KeyError, TypeError, ValueError, ConfigError) as exc:
        raise CheckpointError(f"{path} is an incomplete geoseg checkpoint (missing {exc})") from None


def _clip(normalization: dict[str, Any]) -> tuple[list[float], list[float]] | None:
    if normalization.get("low") is None:
        return None
    return list(normalization["low"]), list(normalization["high"])


def autocast_dtype(device: torch.device, precision: str) -> torch.dtype | None:
    """The autocast dtype for ``precision`` on ``device``; None means fp32.

    'auto': bf16 where the device supports it (CPUs with AVX-512 BF16/AMX, Ampere+ GPUs), fp16 on older
    GPUs (training then uses a GradScaler), else fp32. 'fp16' is for GPUs only.
    """
    import torch

    if precision == "fp32":
        return None
    if precision == "fp16":
        if device.type != "cuda":
            raise ConfigError("precision fp16 needs a CUDA GPU; use bf16 or fp32 on the CPU")
        return torch.float16
    if device.type == "cuda":
        supported = torch.cuda.is_bf16_supported()
    else:
        mkldnn = torch.backends.mkldnn.is_available()
        supported = bool(mkldnn and torch.ops.mkldnn._is_mkldnn_bf16_supported())
    if precision == "bf16":
        return torch.bfloat16
    if supported:
        return torch.bfloat16
    return torch.float16 if device.type == "cuda" else None


def default_device() -> torch.device:
    import torch

    return torch.device("cuda" if torch.cuda.is_available() else "cpu")
