"""Model factory over segmentation-models-pytorch, checkpoints, and precision.

A checkpoint is one file holding everything ``predict`` needs: the factory's
arguments, weights, class schema, bands, normalisation, chip size and
resolution, plus the training config and metrics. It is read as data: torch's
``weights_only`` loader (tensors and plain values, no code), then every field
checked by :mod:`geoseg.models.fields` before a model is built from it.
"""

from __future__ import annotations

import contextlib
import io
import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from geoseg import __version__
from geoseg.errors import CheckpointError, ConfigError, WeightsUnavailableError
from geoseg.io.atomic import atomic_output
from geoseg.io.classes import ClassSchema
from geoseg.models.fields import BASELINE, BLEND, TORCH_ONLY, ModelFieldError, checkpoint_fields

if TYPE_CHECKING:  # torch is imported where it is used: prediction with ONNX Runtime runs without it
    import torch

CHECKPOINT_FORMAT = "geoseg-checkpoint"
#: 2: the baseline's trees as arrays instead of a pickle (version 1 files of networks load as before).
CHECKPOINT_VERSION = 2
#: The one advice for a model file that fails a check.
REBUILD = "export or train it again, or ask whoever sent it for an intact copy"


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
                          f"{_first_clause(exc)}") from None
    except (TypeError, ValueError, RuntimeError, AttributeError, IndexError, ZeroDivisionError) as exc:
        raise ConfigError(f"model_config is not accepted by {architecture}: {_first_clause(exc)}") from None
    if not pretrained or weights is None:
        return model
    if is_weights_file(weights):
        return _load_encoder_weights(model, weights, kwargs.get("encoder_name"))
    hub = _hub_address()
    reachable = _reachable(hub)
    try:
        with _quiet(), _hub_offline(not reachable):
            return smp.create_model(architecture, encoder_weights=weights, **kwargs)
    except Exception as exc:  # network, cache or hub failures all mean the same to the user
        why = f"no connection to {hub[0]}" if not reachable else type(exc).__name__
        error = WeightsUnavailableError(
            f"pretrained '{weights}' weights for encoder '{kwargs.get('encoder_name')}' could not be "
            f"downloaded or found in the local cache ({why}); connect to the internet once, copy them into "
            "the Hugging Face cache (HF_HOME), give a local file as model_config.encoder_weights: "
            "/path/to/encoder.pth, or set model_config.encoder_weights: null")
        error.what = f"pretrained '{weights}' weights for encoder '{kwargs.get('encoder_name')}'"
        error.why, error.host = why, hub[0]
        raise error from None


def untrained_network(architecture: str, model_config: dict[str, Any]) -> torch.nn.Module:
    """The network a checkpoint's weights are loaded into: built in plain torch by
    :mod:`geoseg.models.unet_resnet` where that builds it exactly (no segmentation-models-pytorch, timm or
    torchvision to import before the first tile), else by segmentation-models-pytorch."""
    from geoseg.models.unet_resnet import build, supports

    if supports(architecture, model_config):
        return build(model_config)
    return build_model(architecture, model_config, pretrained=False)


#: Seconds the weights' host is given to answer before the local cache alone is asked (offline machines then
#: fail at once instead of after the hub client's retries).
HUB_TIMEOUT = 3.0


def _hub_address() -> tuple[str, int]:
    """Host and port pretrained weights come from: the HTTPS proxy where one is set, else the Hugging Face
    hub (``HF_ENDPOINT``)."""
    from urllib.parse import urlparse

    from huggingface_hub import constants

    proxy = os.environ.get("HTTPS_PROXY") or os.environ.get("https_proxy")
    url = urlparse(proxy if proxy else constants.ENDPOINT)
    return url.hostname or "huggingface.co", url.port or (443 if url.scheme == "https" else 80)


def _reachable(address: tuple[str, int]) -> bool:
    """Whether a TCP connection to ``address`` opens within :data:`HUB_TIMEOUT` (never where the hub is
    set offline: ``HF_HUB_OFFLINE=1``)."""
    import socket

    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE:
        return False
    try:
        socket.create_connection(address, timeout=HUB_TIMEOUT).close()
    except OSError:
        return False
    return True


@contextlib.contextmanager
def _hub_offline(offline: bool):
    """The Hugging Face client set to its local cache only while ``offline``."""
    from huggingface_hub import constants

    saved = constants.HF_HUB_OFFLINE
    constants.HF_HUB_OFFLINE = saved or offline
    try:
        yield
    finally:
        constants.HF_HUB_OFFLINE = saved


def _first_clause(exc: Exception) -> str:
    """The first line of a library's message, without the list of choices smp appends."""
    text = (str(exc).strip("\"' ").splitlines() or [type(exc).__name__])[0]
    return text.split(", supported")[0][:200]


#: File suffixes of weights brought from elsewhere (``encoder_weights: /path/to/weights.pth``).
WEIGHT_SUFFIXES = (".pth", ".pt", ".ckpt", ".bin", ".safetensors")


def is_weights_file(weights: str) -> bool:
    """Whether ``encoder_weights`` names a file rather than a pretrained set such as ``imagenet``."""
    return Path(weights).suffix.lower() in WEIGHT_SUFFIXES or "/" in weights or os.sep in weights


def _load_encoder_weights(model: torch.nn.Module, path: str, encoder: str | None) -> torch.nn.Module:
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


@dataclass(frozen=True)
class ModelFormat:
    """How to read a model file other than a torch checkpoint into a :class:`Checkpoint`, and how to build its
    model. :mod:`geoseg.models.onnx_runtime` registers ``.onnx`` in :data:`MODEL_FORMATS` (the package
    imports it), so this module imports none of the runtimes."""

    read: Callable[[Path], Checkpoint]
    build: Callable[[Checkpoint, int | None], Any]


#: Model file formats by suffix, besides torch checkpoints.
MODEL_FORMATS: dict[str, ModelFormat] = {}


@dataclass(frozen=True)
class TrainingRecord:
    """What prediction uses of the run a checkpoint came from, read from its stored training config in this
    one place (the config itself is rebuilt only by :func:`geoseg.training.config.config_from_checkpoint`):
    how its chips were sampled, and where its training scenes were listed."""

    downsize_res: int | None = None    # each scene resized to this many pixels on its longer side
    resolution: float | None = None    # every scene sampled at this many metres per pixel
    manifest: Path | None = None       # the training manifest, resolved against the run's folder
    split_fractions: tuple[float, ...] = (0.8, 0.1, 0.1)
    seed: int = 0

    @classmethod
    def from_config(cls, config: dict[str, Any], where: str = "the checkpoint") -> "TrainingRecord":
        def number(key, kind):
            value = config.get(key)
            if value is None or value == 0:
                return None
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0 or (
                    kind is int and not float(value).is_integer()):
                raise CheckpointError(f"{where} is not a usable geoseg model: its training config's "
                                      f"{key} must be a positive number, not {value!r}; {REBUILD}")
            return kind(value)

        manifest = config.get("manifest")
        if manifest is not None and not isinstance(manifest, str):
            raise CheckpointError(f"{where} is not a usable geoseg model: its training config's manifest "
                                  f"must be a path; {REBUILD}")
        base = config.get("base_dir")
        if manifest:
            manifest = (Path(base) / manifest) if isinstance(base, str) and base else Path(manifest)
        fractions = config.get("split_fractions", (0.8, 0.1, 0.1))
        seed = config.get("seed", 0)
        return cls(number("downsize_res", int), number("resolution", float), Path(manifest) if manifest
                   else None, tuple(fractions) if isinstance(fractions, (list, tuple)) else (0.8, 0.1, 0.1),
                   seed if isinstance(seed, int) and not isinstance(seed, bool) else 0)

    def describe_sampling(self) -> str:
        """How the model's chips were sampled, for messages."""
        if self.downsize_res:
            return f"each scene resized to {self.downsize_res} px on its longer side"
        if self.resolution:
            return f"{self.resolution:g} m pixels"
        return "the scenes' own pixels"


@dataclass(kw_only=True)
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

    @property
    def training(self) -> TrainingRecord:
        """The run this checkpoint came from, as prediction uses it (typed and checked)."""
        return TrainingRecord.from_config(self.train_config or {}, str(self.path or "the checkpoint"))

    def build(self, threads: int | None = None) -> Any:
        """The model with this checkpoint's weights, in eval mode (for an exported ``.onnx`` model, an
        :class:`~geoseg.models.onnx_runtime.OnnxModel` using ``threads`` threads)."""
        suffix = self.path.suffix.lower() if self.path is not None else ""
        if suffix in MODEL_FORMATS:
            return MODEL_FORMATS[suffix].build(self, threads)
        if self.architecture == BASELINE:
            from geoseg.models.baseline import PixelBaselineModel, TreeEnsemble

            ensemble = TreeEnsemble.from_tensors(self.state_dict, 4 * len(self.bands), len(self.classes))
            return PixelBaselineModel(ensemble, len(self.classes))
        if self.architecture == BLEND:
            return self._build_blend()
        self._check_weights_fit()
        model = untrained_network(self.architecture, self.model_config)
        try:
            model.load_state_dict(self.state_dict)
        except RuntimeError as exc:
            raise CheckpointError(f"checkpoint weights do not fit {self.architecture}: "
                                  f"{str(exc).splitlines()[0]}") from None
        return model.eval()

    def _build_blend(self) -> Any:
        """A blended checkpoint's model, each part built (and checked) as its own checkpoint would be."""
        from geoseg.models.blend import NETWORK, YARDSTICK, BlendModel

        odd = [k for k in self.state_dict if not k.startswith((NETWORK, YARDSTICK))]
        if odd:
            raise CheckpointError(f"{self.path or 'the checkpoint'} holds weights that belong to no part of "
                                  f"its blend (e.g. {odd[0][:80]!r}); {REBUILD}")
        return BlendModel(network_part(self).build(), baseline_part(self).build(),
                          float(self.model_config["network_weight"])).eval()

    def _check_weights_fit(self) -> None:
        """The weights have exactly the names and shapes of the model the config describes: checked on a
        model built on torch's ``meta`` device (no memory, no initialisation), so a file cannot make geoseg
        allocate a model larger than its own weights."""
        import torch

        where = self.path or "the checkpoint"
        with torch.device("meta"):
            try:
                expected = untrained_network(self.architecture, self.model_config).state_dict()
            except ConfigError as exc:
                raise CheckpointError(f"{where} describes a model geoseg cannot build ({exc}); {REBUILD}") \
                    from None
        names = set(expected)
        if names != set(self.state_dict):
            odd = sorted(names ^ set(self.state_dict))[0]
            raise CheckpointError(f"{where} holds weights that do not fit its {self.architecture} (e.g. "
                                  f"{odd[:80]!r} is missing or unexpected); {REBUILD}")
        for name, t in expected.items():
            if tuple(self.state_dict[name].shape) != tuple(t.shape):
                raise CheckpointError(f"{where} holds weights that do not fit its {self.architecture} "
                                      f"({name}: {tuple(self.state_dict[name].shape)} instead of "
                                      f"{tuple(t.shape)}); {REBUILD}")

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


#: Where a blended checkpoint's ``state_dict`` keeps each part (as :mod:`geoseg.models.blend` reads them).
_NETWORK, _YARDSTICK = "network.", "baseline."


def blended_checkpoint(network: Checkpoint, baseline_state: dict[str, Any], weight: float,
                       metrics: dict[str, Any]) -> Checkpoint:
    """The blend of ``network`` (a network's checkpoint) and the baseline whose tree arrays are
    ``baseline_state``, the network's probabilities weighted ``weight`` and the baseline's ``1 - weight``
    (see :mod:`geoseg.models.blend`)."""
    state = {**{_NETWORK + k: v for k, v in network.state_dict.items()},
             **{_YARDSTICK + k: v for k, v in baseline_state.items()}}
    config = {"network_architecture": network.architecture, "network_config": dict(network.model_config),
              "network_weight": float(weight)}
    return replace(network, architecture=BLEND, model_config=config, state_dict=state, metrics=metrics,
                   training_state=None, path=None)


def network_part(ckpt: Checkpoint) -> Checkpoint:
    """The network of a blended checkpoint, as a checkpoint of its own."""
    config = ckpt.model_config
    return replace(ckpt, architecture=config["network_architecture"], model_config=config["network_config"],
                   state_dict=_part(ckpt.state_dict, _NETWORK))


def baseline_part(ckpt: Checkpoint) -> Checkpoint:
    """The per-pixel baseline of a blended checkpoint, as a checkpoint of its own."""
    return replace(ckpt, architecture=BASELINE, model_config={},
                   state_dict=_part(ckpt.state_dict, _YARDSTICK))


def _part(state: dict[str, Any], prefix: str) -> dict[str, Any]:
    return {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}


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
    if p.suffix.lower() in MODEL_FORMATS:
        return MODEL_FORMATS[p.suffix.lower()].read(p)
    import torch

    try:
        d = torch.load(p, map_location="cpu", weights_only=True, mmap=True)  # weights read lazily
    except Exception as exc:
        raise CheckpointError(f"{path} is not a readable geoseg checkpoint (truncated or corrupt: "
                              f"{type(exc).__name__})") from None
    if not isinstance(d, dict) or d.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{path} is not a geoseg checkpoint")
    version = d.get("format_version", 0)
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise CheckpointError(f"{path} is not a usable geoseg model: format_version must be a positive "
                              f"integer; {REBUILD}")
    if version > CHECKPOINT_VERSION:
        raise CheckpointError(f"{path} was written by a newer geoseg ({str(d.get('geoseg_version'))[:20]}); "
                              "upgrade geoseg")
    return checkpoint_from_fields(d, p, weights=True)


def checkpoint_from_fields(raw: Any, path: Path, weights: bool) -> Checkpoint:
    """A :class:`Checkpoint` from a model file's fields, each checked first (:mod:`geoseg.models.fields`);
    any field that is wrong is one sentence naming the file and the field."""
    try:
        fields = checkpoint_fields(raw, weights=weights)
        if weights and fields["architecture"] in TORCH_ONLY:
            _check_baseline(fields, path)
    except (ModelFieldError, RecursionError) as exc:
        what = exc if isinstance(exc, ModelFieldError) else "its fields are nested too deeply"
        raise CheckpointError(f"{path} is not a usable geoseg model: {what}; {REBUILD}") from None
    if not weights:
        fields["state_dict"] = {}
    return Checkpoint(**fields, path=path)


def _check_baseline(fields: dict[str, Any], path: Path) -> None:
    """The baseline's trees (a blend's too) are well formed (see ``TreeEnsemble``)."""
    from geoseg.models.baseline import PickledBaselineError, TreeEnsemble

    state = fields["state_dict"]
    if fields["architecture"] == BLEND:  # its trees under baseline. (its network is checked when built)
        state = _part(state, _YARDSTICK)
        if not state:
            raise ModelFieldError(f"state_dict must hold the baseline's tensors under {_YARDSTICK}")
    try:
        TreeEnsemble.from_tensors(state, 4 * len(fields["bands"]), len(fields["classes"]))
    except PickledBaselineError as exc:
        raise CheckpointError(f"{path} {exc}") from None
    except ValueError as exc:
        raise ModelFieldError(str(exc)) from None


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
