"""A model file is data: the fields of a checkpoint, or of an exported model's ``geoseg`` metadata, are
checked one by one before anything is built from them.

``torch.load(weights_only=True)`` and ``json.loads`` turn a file into dicts, lists, numbers, strings and
tensors without running any of its code. This module makes sure each of those values has the type, shape and
range geoseg expects (class codes 0–254, one normalisation value per band, chip sizes within bounds, tensors
that are plain dense arrays), so a malformed or hostile file ends in one sentence that names the field, never
in a traceback deep in prediction or in an allocation the file asked for.
"""

from __future__ import annotations

import math
import re
from typing import Any

from geoseg.errors import ConfigError, InputError
from geoseg.io.classes import NODATA, ClassSchema, parse_color

#: Chip sizes a checkpoint may declare (pixels).
CHIP_SIZES = (8, 4096)
#: The tiles a U-Net predicts (an export's, ``predict --tile``): multiples of 32 (it halves a chip 5 times),
#: at most Deepness's largest tile.
TILE_RANGE = (32, 4096)
#: The most bands and classes a model may have.
MAX_BANDS = 1024
MAX_CLASSES = NODATA  # codes 0..254
#: Bounds on the plain values (config, metrics, data) a file may carry.
MAX_TEXT = 4096
MAX_ITEMS = 100_000
MAX_DEPTH = 16
MAX_TENSORS = 100_000
#: What an architecture's, a config key's or a run id's name may look like.
NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_+\-.]{0,127}")
RUN_ID = re.compile(r"[A-Za-z0-9_\-]{1,128}")
#: The per-pixel baseline's architecture name, and a network blended with it (:mod:`geoseg.models.blend`).
BASELINE = "PixelBaseline"
BLEND = "NetworkBaselineBlend"
#: Architectures only torch runs: ONNX cannot hold the baseline's trees.
TORCH_ONLY = (BASELINE, BLEND)


def checked_tile(tile: Any) -> int:
    """``tile`` as the side of the tiles a model predicts, or one sentence (given by the user: ``--tile``)."""
    if not _is_int(tile) or not TILE_RANGE[0] <= tile <= TILE_RANGE[1] or tile % 32:
        raise InputError(f"--tile must be a multiple of 32 between {TILE_RANGE[0]} and {TILE_RANGE[1]} "
                         f"pixels, got {tile}")
    return int(tile)


class ModelFieldError(ValueError):
    """A field of a model file that geoseg cannot use; the message names the field and what it must be."""


def checkpoint_fields(raw: Any, weights: bool = True) -> dict[str, Any]:
    """The keyword arguments of :class:`~geoseg.models.checkpoint.Checkpoint` held by ``raw``, checked.

    ``raw`` is what a checkpoint file loads to (``weights``: its ``state_dict`` is checked too, as tensors
    for a network or as the baseline's tree arrays), or the ``geoseg`` metadata of an exported ONNX model
    (``weights=False``: its mean/std/clip are flat keys). Raises :class:`ModelFieldError` naming the first
    field that is wrong. The state dict's tensors are checked as plain dense arrays here; that they fit the
    architecture is checked when the model is built (:meth:`Checkpoint.build`)."""
    _require(isinstance(raw, dict), "the file", "a mapping of geoseg's fields")
    normalization = raw.get("normalization") if weights else {
        "mean": raw.get("mean"), "std": raw.get("std"),
        **({"low": raw["clip"][0], "high": raw["clip"][1]} if _is_pair(raw.get("clip")) else {})}
    if not weights:
        _require(raw.get("clip") is None or _is_pair(raw.get("clip")), "clip", "null or [low, high]")
    for key in ("architecture", "model_config", "classes", "bands", "chip_size"):
        _require(key in raw, key, "present")
    classes = _classes(raw["classes"])
    bands = _bands(raw["bands"])
    mean, std, clip = _normalization(normalization, len(bands))
    architecture = _name(raw["architecture"], "architecture")
    fields = {
        "architecture": architecture,
        "model_config": _model_config(raw["model_config"], architecture, len(classes), len(bands)),
        "classes": classes, "bands": bands, "mean": mean, "std": std, "clip": clip,
        "chip_size": _int(raw["chip_size"], "chip_size", *CHIP_SIZES),
        "resolution": _resolution(raw.get("resolution"), "resolution"),
        "train_config": _train_config(raw.get("train_config", {})),
        "epoch": _int(raw.get("epoch", 0), "epoch", 0, 10**9),
        "metrics": _plain_mapping(raw.get("metrics", {}), "metrics"),
        "data": _data(raw.get("data") or {}),
    }
    if weights:
        fields["state_dict"] = state_dict(raw.get("state_dict"), "state_dict")
        fields["training_state"] = _optional_mapping(raw.get("training_state"), "training_state")
    return fields


def state_dict(value: Any, where: str) -> dict[str, Any]:
    """A mapping of parameter names to plain dense CPU tensors (no sparse, quantized or meta tensors, which
    take other code paths when loaded)."""
    import torch

    _require(isinstance(value, dict) and len(value) <= MAX_TENSORS, where,
             f"a mapping of at most {MAX_TENSORS} names to tensors")
    for key, t in value.items():
        _require(isinstance(key, str) and 0 < len(key) <= MAX_TEXT, f"{where} key {str(key)[:40]!r}",
                 "a parameter name")
        ok = (isinstance(t, torch.Tensor) and t.layout == torch.strided and not t.is_meta
              and t.device.type == "cpu" and not t.is_quantized and not t.is_complex())
        _require(ok, f"{where}.{key}", "a dense CPU tensor of numbers")
    return dict(value)


def training_state(state: Any) -> dict[str, Any]:
    """What ``--resume`` reads from a ``last.ckpt``, checked before any of it reaches the model, the optimizer
    or the random generators."""
    import torch

    _require(isinstance(state, dict), "training_state", "a mapping")
    for key in ("optimizer", "epoch", "step", "best_miou", "stale", "history", "rng"):
        _require(key in state, f"training_state.{key}", "present")
    _require(isinstance(state["optimizer"], dict), "training_state.optimizer", "a mapping")
    for key in ("scheduler", "scaler", "average"):
        _optional_mapping(state.get(key), f"training_state.{key}")
    for key in ("epoch", "step", "stale"):
        _int(state[key], f"training_state.{key}", 0, 10**12)
    _require(_is_number(state["best_miou"]), "training_state.best_miou", "a number")
    _require(isinstance(state["history"], list) and all(isinstance(r, dict) for r in state["history"]),
             "training_state.history", "a list of metric rows")
    _plain(state["history"], "training_state.history")
    if state.get("live_model") is not None:
        state_dict(state["live_model"], "training_state.live_model")
    if state.get("chips_per_epoch") is not None:
        _int(state["chips_per_epoch"], "training_state.chips_per_epoch", 1, 10**9)
    if state.get("pseudo_rounds") is not None:
        _int(state["pseudo_rounds"], "training_state.pseudo_rounds", 0, 1000)
    wandb_id = state.get("wandb_id")
    _require(wandb_id is None or (isinstance(wandb_id, str) and RUN_ID.fullmatch(wandb_id)),
             "training_state.wandb_id", "null or a run id of letters, digits, - and _")
    if state.get("mean") is not None:
        clip = state.get("clip")
        _normalization({"mean": state["mean"], "std": state.get("std"),
                        **({"low": clip[0], "high": clip[1]} if _is_pair(clip) else {})},
                       len(state["mean"]) if isinstance(state["mean"], list) else 0, "training_state")
    rng = state["rng"]
    _require(isinstance(rng, dict) and isinstance(rng.get("torch"), torch.Tensor)
             and rng["torch"].dtype == torch.uint8 and rng["torch"].layout == torch.strided,
             "training_state.rng.torch", "torch's random state (a uint8 tensor)")
    python = rng.get("python")
    _require(isinstance(python, (list, tuple)) and len(python) == 3 and _is_int(python[0])
             and isinstance(python[1], (list, tuple)) and len(python[1]) == 625
             and all(_is_int(v) and 0 <= v < 2**32 for v in python[1]) and python[2] is None,
             "training_state.rng.python", "Python's random state")
    numpy = rng.get("numpy")
    _require(isinstance(numpy, (list, tuple)) and len(numpy) == 5 and numpy[0] == "MT19937"
             and isinstance(numpy[1], torch.Tensor) and tuple(numpy[1].shape) == (624,)
             and numpy[1].dtype == torch.int64 and _is_int(numpy[2]) and 0 <= numpy[2] <= 624
             and _is_int(numpy[3]) and _is_number(numpy[4]),
             "training_state.rng.numpy", "numpy's random state")
    return state


def _classes(value: Any) -> ClassSchema:
    _require(isinstance(value, list) and 2 <= len(value) <= MAX_CLASSES, "classes",
             f"a list of 2 to {MAX_CLASSES} classes")
    for i, item in enumerate(value):
        _require(isinstance(item, dict), f"classes[{i}]", "a mapping with code, name, color and ignore")
        _int(item.get("code", i), f"classes[{i}].code", 0, NODATA - 1)
        name = item.get("name")
        _require(isinstance(name, str) and 0 < len(name) <= 256 and name.isprintable(), f"classes[{i}].name",
                 "a printable name of 1 to 256 characters")
        _require(isinstance(item.get("ignore", False), bool), f"classes[{i}].ignore", "true or false")
        color = item.get("color")
        ok = (isinstance(color, str) and len(color) <= 16) or (isinstance(color, list) and len(color) == 3)
        _require(ok and parse_color(color) is not None, f"classes[{i}].color",
                 "three integers 0..255 or '#rrggbb'")
    try:
        return ClassSchema.from_dict(value)
    except ConfigError as exc:
        raise ModelFieldError(str(exc)[:300]) from None


def _bands(value: Any) -> list[int | str]:
    _require(isinstance(value, list) and 1 <= len(value) <= MAX_BANDS, "bands",
             f"a list of 1 to {MAX_BANDS} bands")
    for i, band in enumerate(value):
        ok = (_is_int(band) and 1 <= band <= 65535) or (isinstance(band, str) and 0 < len(band) <= 256)
        _require(ok, f"bands[{i}]", "a band number from 1 or a band description")
    return list(value)


def _normalization(value: Any, bands: int, where: str = "normalization"
                   ) -> tuple[list[float], list[float], tuple[list[float], list[float]] | None]:
    _require(isinstance(value, dict), where, "a mapping with mean and std")
    mean = _numbers(value.get("mean"), f"{where}.mean", bands)
    std = _numbers(value.get("std"), f"{where}.std", bands)
    _require(all(s > 0 for s in std), f"{where}.std", "positive numbers")
    if value.get("low") is None and value.get("high") is None:
        return mean, std, None
    low = _numbers(value.get("low"), f"{where}.low", bands)
    high = _numbers(value.get("high"), f"{where}.high", bands)
    _require(all(a <= b for a, b in zip(low, high)), f"{where}.high", "at least low, band by band")
    return mean, std, (low, high)


def _numbers(value: Any, where: str, length: int) -> list[float]:
    ok = isinstance(value, list) and len(value) == length and all(
        _is_number(v) and math.isfinite(v) for v in value)
    _require(ok, where, f"a list of {length} finite numbers (one per band)")
    return [float(v) for v in value]


def _model_config(value: Any, architecture: str, classes: int, bands: int) -> dict[str, Any]:
    _plain_mapping(value, "model_config")
    for key in value:
        _require(NAME.fullmatch(key), f"model_config key {key[:40]!r}", "a keyword name")
    if architecture == BASELINE:
        return dict(value)
    if architecture == BLEND:
        _require(set(value) == {"network_architecture", "network_config", "network_weight"}, "model_config",
                 "network_architecture, network_config and network_weight (a blended model)")
        network = _name(value["network_architecture"], "model_config.network_architecture")
        _require(network not in TORCH_ONLY, "model_config.network_architecture", "a network's architecture")
        weight = value["network_weight"]
        _require(_is_number(weight) and 0 < weight < 1, "model_config.network_weight",
                 "a number between 0 and 1")
        return {**value, "network_config": _model_config(value["network_config"], network, classes, bands)}
    _require(value.get("classes") == classes and _is_int(value.get("classes")), "model_config.classes",
             f"{classes}, the number of classes")
    _require(value.get("in_channels") == bands and _is_int(value.get("in_channels")),
             "model_config.in_channels", f"{bands}, the number of bands")
    _require(isinstance(value.get("encoder_name"), str) and NAME.fullmatch(value["encoder_name"]),
             "model_config.encoder_name", "an encoder's name")
    return dict(value)


def _train_config(value: Any) -> dict[str, Any]:
    """The stored run config; the keys prediction reads are checked by type here, the rest by the config's
    own parser when a run is resumed."""
    _plain_mapping(value, "train_config")
    if value.get("downsize_res") is not None:
        _int(value["downsize_res"], "train_config.downsize_res", 16, 10**6)
    _resolution(value.get("resolution"), "train_config.resolution")
    for key in ("manifest", "base_dir"):
        _require(value.get(key) is None or isinstance(value[key], str), f"train_config.{key}", "a path")
    if "split_fractions" in value:
        fractions = value["split_fractions"]
        ok = isinstance(fractions, list) and len(fractions) == 3 and all(
            _is_number(f) and math.isfinite(f) and f >= 0 for f in fractions) and sum(fractions) > 0
        _require(ok, "train_config.split_fractions", "three non-negative numbers")
    if "seed" in value:
        _int(value["seed"], "train_config.seed", 0, 2**32 - 1)
    return dict(value)


def _data(value: Any) -> dict[str, Any]:
    _plain_mapping(value, "data")
    _require(isinstance(value.get("synthetic", False), bool), "data.synthetic", "true or false")
    if "train_scenes" in value:
        _int(value["train_scenes"], "data.train_scenes", 0, 10**9)
    return dict(value)


def _resolution(value: Any, where: str) -> float | None:
    if value is None:
        return None
    _require(_is_number(value) and math.isfinite(value) and 0 < value < 1e7, where,
             "null or a ground size in metres")
    return float(value)


def _name(value: Any, where: str) -> str:
    _require(isinstance(value, str) and NAME.fullmatch(value), where, "a name of letters and digits")
    return value


def _int(value: Any, where: str, low: int, high: int) -> int:
    _require(_is_int(value) and low <= value <= high, where, f"an integer from {low} to {high}")
    return int(value)


def _optional_mapping(value: Any, where: str) -> dict[str, Any] | None:
    _require(value is None or isinstance(value, dict), where, "null or a mapping")
    return value


def _plain_mapping(value: Any, where: str) -> dict[str, Any]:
    _require(isinstance(value, dict), where, "a mapping")
    _plain(value, where)
    return value


def _plain(value: Any, where: str, depth: int = 0) -> None:
    """``value`` is made of None, booleans, numbers, short strings, lists and string-keyed mappings only."""
    _require(depth <= MAX_DEPTH, where, f"nested at most {MAX_DEPTH} deep")
    if value is None or isinstance(value, (bool, int, float)):
        return
    if isinstance(value, str):
        _require(len(value) <= MAX_TEXT, where, f"text of at most {MAX_TEXT} characters")
    elif isinstance(value, (list, tuple)):
        _require(len(value) <= MAX_ITEMS, where, f"at most {MAX_ITEMS} items")
        for i, item in enumerate(value):
            _plain(item, f"{where}[{i}]", depth + 1)
    elif isinstance(value, dict):
        _require(len(value) <= MAX_ITEMS, where, f"at most {MAX_ITEMS} keys")
        for key, item in value.items():
            _require(isinstance(key, str) and len(key) <= MAX_TEXT, f"{where} key", "text")
            _plain(item, f"{where}.{key}", depth + 1)
    else:
        raise ModelFieldError(f"{where} must hold only plain values (numbers, text, lists, mappings), "
                              f"not {type(value).__name__}")


def _is_pair(value: Any) -> bool:
    return isinstance(value, (list, tuple)) and len(value) == 2


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _require(ok: Any, where: str, expected: str) -> None:
    if not ok:
        raise ModelFieldError(f"{where} must be {expected}")

