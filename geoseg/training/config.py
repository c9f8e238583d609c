"""Run configuration: YAML files with the reference experiment's keys, validated.

The reference experiment's keys (``batch_size, ce_weights, downsize_res, epochs,
loss_fn, lr, model_architecture, model_config, num_workers, optimizer``) are
accepted exactly as written; geoseg adds data, chip and output keys. Every
unknown key or wrong value is a :class:`~geoseg.errors.ConfigError` naming it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from geoseg.errors import ConfigError
from geoseg.io.classes import DEEPGLOBE, ClassSchema
from geoseg.io.formats import VECTOR_SUFFIXES
from geoseg.io.manifest import read_records
from geoseg.models.checkpoint import is_weights_file, load_checkpoint
from geoseg.training.budget import parse_budget
from geoseg.training.optimization import LOSSES, OPTIMIZERS, SCHEDULES, lookup

PRECISIONS = ("auto", "bf16", "fp16", "fp32")
LOGGERS = ("csv", "wandb")
MODEL_CONFIG_REQUIRED = ("classes", "encoder_name", "encoder_weights", "in_channels")


#: What each config key means, for the generated reference (docs/reference/config.md); a test checks that
#: every key :class:`RunConfig` accepts has one.
KEY_DOCS: dict[str, str] = {
    "batch_size": "Chips per training step (per process under torchrun).",
    "ce_weights": "Class weights of the loss: a list (one per class; 0 leaves the class out of loss and "
                  "metrics), `null`, or `auto`: median-frequency balancing computed once from the labels, "
                  "printed and written to `class_weights.json`.",
    "downsize_res": "The reference experiment's whole-image resize: each scene is sampled as if resized so "
                    "its longer side is this many pixels. Prefer `resolution`.",
    "epochs": "Validation rounds; with `budget`, the chips in each are set from the measured speed.",
    "loss_fn": "`CrossEntropyLoss`, `DiceLoss`, `FocalLoss`, `LovaszLoss` or `CE+Dice`; ignored classes "
               "never count.",
    "lr": "Learning rate (the peak of a cosine or one-cycle schedule).",
    "model_architecture": "A segmentation-models-pytorch architecture: `Unet`, `UnetPlusPlus`, `FPN`, "
                          "`DeepLabV3Plus`, …",
    "model_config": "Its arguments: `classes`, `encoder_name`, `encoder_weights` (`imagenet`, `null`, or a "
                    "local weights file for offline machines), `in_channels`, and any other the architecture"
                    " takes (e.g. `decoder_channels`).",
    "num_workers": "Loader processes reading chips while the model trains (0: read in the training process, "
                   "best on 2 cores).",
    "optimizer": "`Adam`, `AdamW` or `SGD`.",
    "manifest": "A CSV with columns `image,label,split` (paths relative to it), or a folder in the DeepGlobe"
                " layout. Labels are class rasters, RGB colour masks or polygons.",
    "label_field": "The polygon labels' class attribute: integer codes, or class names as text (any case).",
    "split_fractions": "Train, validation and test shares when `manifest` is a folder (split by scene).",
    "resolution": "Train at this ground resolution (metres per pixel, geodesic): every scene is read at it, "
                  "and prediction reads scenes the same way. `null`: the scenes' own pixels.",
    "classes": "`deepglobe`, `from_labels`, or a list of `{code, name, color, ignore}`: codes are what "
               "rasters hold, the model trains on their positions.",
    "bands": "Input bands by number or by band description (`[B04, B03, B02, B08]`); GDAL scale and offset "
             "are applied.",
    "normalization": "`mean_std` (the training scenes' statistics; ImageNet's with ImageNet weights on RGB) "
                     "or `percentile LOW HIGH` (each band clipped to its training percentiles, mapped to "
                     "-1…1).",
    "chip_size": "Chip side in pixels (at `resolution`).",
    "chips_per_epoch": "Random training chips per epoch; with `budget`, replaced by what fits.",
    "val_chips": "Cap on the validation grid's chips (`null`: all).",
    "weight_decay": "The optimizer's weight decay.",
    "weight_averaging": "A decay (e.g. `0.99`) to validate and save an exponential moving average of the "
                        "weights; `null`: none.",
    "augment": "Flips, 90° rotations and a mild gain on training chips.",
    "band_jitter": "With `augment`: each chip's bands scaled by gains from 1 ± this (`0.08`), for colour "
                   "shifts between scenes.",
    "scene_jitter": "With `augment`: each chip shown with another scene's look, of this strength (0–0.5; "
                    "`0.2`: brightness ±0.2 and noise up to 0.05 band standard deviations, contrast and "
                    "saturation 0.8–1.2, from a slight blur to a slight sharpening, scale 0.9–1.1); 0: none.",
    "rare_class_sampling": "Share (0–1) of training chips centred on cells rich in classes rarer than the "
                           "median class; 0: uniform.",
    "unlabelled_chips": "Where labels cover part of the scenes: the share of chips drawn anywhere, for "
                        "context (the rest are drawn where labels are).",
    "self_training": "Rounds of self-training (`0`: none): where labels cover part of the training scenes, "
                     "the model's confident predictions on their unlabelled pixels become labels for the "
                     "epochs after each round (rounds spread evenly over the run).",
    "pseudo_label_confidence": "With `self_training`: a prediction with at least this probability (0.5–1) "
                               "becomes a label.",
    "pseudo_label_share": "With `self_training`: also each class's most confident predictions, this share "
                          "(0–1) of them, become labels (class-balanced: a rare class the model is never "
                          "very sure of is not left out); 0: by `pseudo_label_confidence` alone.",
    "baseline": "Also fit the per-pixel gradient-boosting baseline and report its validation scores beside "
                "the network's (skipped, with a line, under a 4-minute budget); with it, each validation "
                "also scores the blend of the two, and a better blend is saved as `blend.ckpt`.",
    "best_model": "`auto`: where the network scores below the baseline on validation, `best.ckpt` becomes "
                  "the better of the baseline and their blend (the network is kept as `network.ckpt`); "
                  "`network`: `best.ckpt` is always the network.",
    "lr_schedule": "`none`, `cosine`, `onecycle` (per step) or `plateau` (on validation mIoU).",
    "early_stopping": "Stop after this many epochs without a better validation mIoU; `null`: never.",
    "budget": "Train for this long, with a unit (`15m`, `90s`, `1h30m`): chips per epoch from the measured "
              "speed, re-planned after each epoch; `null`: `chips_per_epoch` chips per epoch.",
    "precision": "`auto` (bf16 where the CPU or GPU has it), `bf16`, `fp16` (GPU only) or `fp32`.",
    "seed": "Seeds chips, augmentation, splits and weights: a run repeats exactly.",
    "output_dir": "Folder of the run folders (relative to the config file).",
    "run_name": "The run folder's name (default: a timestamp).",
    "logger": "`csv`, or `wandb` (an offline Weights & Biases run unless `WANDB_MODE=online`).",
    "sample_images": "Validation chips drawn as image | truth | prediction panels each time.",
    "sample_every": "Draw those panels every K epochs.",
}


@dataclass
class RunConfig:
    """A validated training run configuration."""

    # The reference experiment's keys.
    batch_size: int = 6
    ce_weights: list[float] | str | None = None   # a list, null, or 'auto' (median-frequency balancing)
    downsize_res: int | None = None
    epochs: int = 40
    loss_fn: str = "CrossEntropyLoss"
    lr: float = 3e-4
    model_architecture: str = "Unet"
    model_config: dict[str, Any] = field(default_factory=lambda: {
        "classes": 7, "encoder_name": "resnet34", "encoder_weights": "imagenet", "in_channels": 3})
    num_workers: int = 2
    optimizer: str = "Adam"
    # geoseg's keys.
    manifest: str | None = None      # a CSV (image,label,split) or a folder in the DeepGlobe layout
    label_field: str = "class_id"    # the polygon labels' attribute: class codes, or class names (text)
    # train/val/test shares of a folder
    split_fractions: list[float] = field(default_factory=lambda: [0.8, 0.1, 0.1])
    resolution: float | None = None  # train at this ground resolution (m/pixel), read with out_shape
    classes: ClassSchema = DEEPGLOBE
    bands: list[int | str] = field(default_factory=lambda: [1, 2, 3])  # numbers or band descriptions
    normalization: str = "mean_std"   # mean_std (training statistics) or 'percentile LOW HIGH' (e.g. 2 98)
    chip_size: int = 512
    chips_per_epoch: int = 500
    val_chips: int | None = None
    weight_decay: float = 0.0
    weight_averaging: float | None = None  # validate and save an EMA of the weights with this decay (0.99)
    augment: bool = True
    band_jitter: float = 0.0           # with augment: each chip's bands scaled by gains from 1 ± this (0.08)
    scene_jitter: float = 0.0          # with augment: another scene's look per chip, of this strength (0.2)
    rare_class_sampling: float = 0.0   # share of chips centred on cells rich in rare classes (0 = uniform)
    unlabelled_chips: float = 0.0      # where labels are sparse: share of chips drawn anywhere (context)
    self_training: int = 0             # rounds of pseudo-labelling the training scenes' unlabelled pixels
    pseudo_label_confidence: float = 0.9  # with self_training: the least probability that becomes a label
    pseudo_label_share: float = 0.0    # with self_training: also each class's most confident share
    baseline: bool = True              # also fit the per-pixel baseline and report its val IoU beside
    best_model: str = "auto"           # auto | network: best.ckpt where the baseline beats the network
    lr_schedule: str = "none"          # none | cosine | onecycle | plateau
    early_stopping: int | None = None  # stop after this many epochs without a better val mIoU
    budget: str | float | None = None  # a time ('15m'): chips_per_epoch set from the measured speed
    precision: str = "auto"
    seed: int = 0
    output_dir: str = "runs"
    run_name: str | None = None
    logger: str = "csv"
    sample_images: int = 4
    sample_every: int = 1              # render the validation sample panel every K epochs
    #: Folder the config file lives in; relative paths in the config are resolved against it.
    base_dir: Path = field(default_factory=Path.cwd, repr=False)

    @property
    def manifest_path(self) -> Path:
        if self.manifest is None:
            raise ConfigError("config key 'manifest' is required: the CSV that lists image, label and split")
        return (self.base_dir / self.manifest).resolve()

    @property
    def output_path(self) -> Path:
        return (self.base_dir / self.output_dir).resolve()

    @property
    def percentiles(self) -> tuple[float, float] | None:
        """The percentiles of ``normalization: percentile LOW HIGH``; None for mean_std."""
        words = self.normalization.split()
        return (float(words[1]), float(words[2])) if words[0] == "percentile" else None

    @property
    def budget_seconds(self) -> float | None:
        """The time budget in seconds (None: train ``chips_per_epoch`` chips per epoch)."""
        return parse_budget(self.budget)

    @property
    def ignored_indices(self) -> list[int]:
        """Classes left out of loss and metrics: marked ``ignore`` or given a zero ``ce_weights`` entry."""
        listed = self.ce_weights if isinstance(self.ce_weights, list) else []
        zero = [i for i, w in enumerate(listed) if w == 0]
        return sorted(set(self.classes.ignored_indices) | set(zero))

    def to_dict(self) -> dict[str, Any]:
        d = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "base_dir"}
        d["classes"] = self.classes.to_dict()
        d["model_config"] = dict(self.model_config)
        return d

    def resolved(self) -> dict[str, Any]:
        """The config as this run uses it: classes listed, paths absolute (saved in every run folder)."""
        d = self.to_dict()
        d["classes"] = [{**c, "color": "#%02x%02x%02x" % tuple(c["color"])} for c in d["classes"]]
        d["manifest"] = str(self.manifest_path) if self.manifest else None
        d["output_dir"] = str(self.output_path)
        return d


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
    return (isinstance(v, (int, float)) and not isinstance(v, bool))


def _check(cond: bool, key: str, value: Any, what: str) -> None:
    if not cond:
        raise ConfigError(f"config key '{key}' must be {what}, got {value!r}")


def _valid_normalization(value: Any) -> bool:
    if not isinstance(value, str):
        return False
    words = value.split()
    if words == ["mean_std"]:
        return True
    try:
        return len(words) == 3 and words[0] == "percentile" and 0 <= float(words[1]) < float(words[2]) <= 100
    except ValueError:
        return False


def _validate_model_config(mc: Any, n_classes: int) -> dict[str, Any]:
    _check(isinstance(mc, dict), "model_config", mc, "a mapping")
    missing = [k for k in MODEL_CONFIG_REQUIRED if k not in mc]
    if missing:
        raise ConfigError(f"config key 'model_config' is missing {', '.join(missing)}")
    _check(_is_int(mc["classes"]) and mc["classes"] >= 2, "model_config.classes", mc["classes"],
           "an integer ≥ 2")
    _check(mc["classes"] == n_classes, "model_config.classes", mc["classes"],
           f"equal to the number of classes in 'classes' ({n_classes})")
    _check(isinstance(mc["encoder_name"], str), "model_config.encoder_name", mc["encoder_name"], "a string")
    _check(mc["encoder_weights"] is None or isinstance(mc["encoder_weights"], str),
           "model_config.encoder_weights", mc["encoder_weights"],
           "a string such as 'imagenet', a weights file, or null")
    _check(_is_int(mc["in_channels"]) and mc["in_channels"] >= 1, "model_config.in_channels",
           mc["in_channels"], "a positive integer")
    return dict(mc)


def parse_config(raw: dict[str, Any], base_dir: Path | None = None, source: str = "config") -> RunConfig:
    """Validate a config mapping and return a :class:`RunConfig`."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{source} must be a YAML mapping of keys to values")
    known = {f.name for f in fields(RunConfig)} - {"base_dir"}
    unknown = sorted(set(raw) - known)
    if unknown:
        raise ConfigError(f"unknown config key '{unknown[0]}' in {source}; valid keys are "
                          f"{', '.join(sorted(known))}")
    kw = _with_classes(dict(raw), base_dir)
    cfg = RunConfig(**kw, base_dir=base_dir or Path.cwd())
    _check_counts(cfg)
    _check_sampling(cfg)
    _check_learning(cfg)
    _check_data(cfg)
    _check_model(cfg)
    return cfg


def _with_classes(kw: dict[str, Any], base_dir: Path | None) -> dict[str, Any]:
    """``kw`` with its ``classes`` made a :class:`ClassSchema` (DeepGlobe's, from the labels, or listed)."""
    if "classes" in kw:
        c = kw["classes"]
        if c == "deepglobe" or c is None:
            kw["classes"] = DEEPGLOBE
        elif c == "from_labels":
            kw["classes"] = _classes_from_labels(kw, base_dir or Path.cwd())
            if isinstance(kw.get("model_config"), dict):
                kw["model_config"] = {"classes": len(kw["classes"]), **kw["model_config"]}
        else:
            _check(isinstance(c, list), "classes", c,
                   "'deepglobe', 'from_labels' or a list of {code, name, color, ignore}")
            kw["classes"] = ClassSchema.from_dict(c)
    return kw


def _check_counts(cfg: RunConfig) -> None:
    for key in ("batch_size", "epochs", "chip_size", "chips_per_epoch"):
        v = getattr(cfg, key)
        _check(_is_int(v) and v >= 1, key, v, "a positive integer")
    _check(_is_int(cfg.num_workers) and cfg.num_workers >= 0, "num_workers", cfg.num_workers,
           "an integer ≥ 0")
    _check(_is_int(cfg.seed), "seed", cfg.seed, "an integer")
    _check(_is_int(cfg.sample_images) and cfg.sample_images >= 0, "sample_images", cfg.sample_images,
           "an integer ≥ 0")
    _check(_is_int(cfg.sample_every) and cfg.sample_every >= 1, "sample_every", cfg.sample_every,
           "a positive integer")
    for key in ("rare_class_sampling", "unlabelled_chips"):
        _check(_is_number(getattr(cfg, key)) and 0 <= getattr(cfg, key) <= 1, key, getattr(cfg, key),
               "a number from 0 to 1")
    lookup(SCHEDULES, "lr_schedule", cfg.lr_schedule)
    parse_budget(cfg.budget)


def _check_sampling(cfg: RunConfig) -> None:
    _check(cfg.early_stopping is None or (_is_int(cfg.early_stopping) and cfg.early_stopping >= 1),
           "early_stopping", cfg.early_stopping, "a positive number of epochs or null")
    _check(cfg.resolution is None or (_is_number(cfg.resolution) and cfg.resolution > 0), "resolution",
           cfg.resolution, "a positive ground resolution in metres per pixel, or null")
    _check(cfg.resolution is None or cfg.downsize_res is None, "resolution", cfg.resolution,
           "null when downsize_res is set (use one of them)")
    _check(isinstance(cfg.split_fractions, list) and len(cfg.split_fractions) == 3
           and all(_is_number(f) and f >= 0 for f in cfg.split_fractions) and sum(cfg.split_fractions) > 0,
           "split_fractions", cfg.split_fractions, "three non-negative numbers for train, val, test")
    _check(cfg.val_chips is None or (_is_int(cfg.val_chips) and cfg.val_chips >= 1), "val_chips",
           cfg.val_chips, "a positive integer or null")
    _check(cfg.downsize_res is None or (_is_int(cfg.downsize_res) and cfg.downsize_res >= 16), "downsize_res",
           cfg.downsize_res, "an integer ≥ 16 or null")


def _check_learning(cfg: RunConfig) -> None:
    _check(_is_number(cfg.lr) and cfg.lr > 0, "lr", cfg.lr, "a positive number")
    _check(_is_number(cfg.weight_decay) and cfg.weight_decay >= 0, "weight_decay", cfg.weight_decay,
           "a number ≥ 0")
    lookup(LOSSES, "loss_fn", cfg.loss_fn)
    lookup(OPTIMIZERS, "optimizer", cfg.optimizer)
    _check(cfg.precision in PRECISIONS, "precision", cfg.precision, f"one of {', '.join(PRECISIONS)}")
    _check(cfg.logger in LOGGERS, "logger", cfg.logger, f"one of {', '.join(LOGGERS)}")
    averaging = cfg.weight_averaging
    _check(averaging is None or (_is_number(averaging) and 0 < averaging < 1), "weight_averaging", averaging,
           "a decay between 0 and 1 (e.g. 0.99) or null")
    _check(isinstance(cfg.augment, bool), "augment", cfg.augment, "true or false")
    _check(_is_number(cfg.band_jitter) and 0 <= cfg.band_jitter < 1, "band_jitter", cfg.band_jitter,
           "a number from 0 to below 1 (e.g. 0.08: gains from 0.92 to 1.08)")
    _check(_is_number(cfg.scene_jitter) and 0 <= cfg.scene_jitter <= 0.5, "scene_jitter", cfg.scene_jitter,
           "a number from 0 to 0.5 (e.g. 0.2: brightness ±0.2, contrast 0.8–1.2, scale 0.9–1.1)")
    _check(_is_int(cfg.self_training) and 0 <= cfg.self_training <= 10, "self_training", cfg.self_training,
           "a number of rounds from 0 to 10")
    _check(_is_number(cfg.pseudo_label_confidence) and 0.5 <= cfg.pseudo_label_confidence <= 1,
           "pseudo_label_confidence", cfg.pseudo_label_confidence, "a probability from 0.5 to 1 (e.g. 0.9)")
    _check(_is_number(cfg.pseudo_label_share) and 0 <= cfg.pseudo_label_share <= 1, "pseudo_label_share",
           cfg.pseudo_label_share, "a share from 0 to 1 (e.g. 0.3)")
    _check(isinstance(cfg.baseline, bool), "baseline", cfg.baseline, "true or false")
    _check(cfg.best_model in ("auto", "network"), "best_model", cfg.best_model, "auto or network")


def _check_data(cfg: RunConfig) -> None:
    _check(isinstance(cfg.model_architecture, str), "model_architecture", cfg.model_architecture, "a string")
    _check(isinstance(cfg.output_dir, str), "output_dir", cfg.output_dir, "a path")
    _check(cfg.manifest is None or isinstance(cfg.manifest, str), "manifest", cfg.manifest, "a path")
    _check(isinstance(cfg.label_field, str) and cfg.label_field != "", "label_field", cfg.label_field,
           "the name of the polygon labels' class attribute")
    _check(cfg.run_name is None or isinstance(cfg.run_name, str), "run_name", cfg.run_name, "a string")
    _check(isinstance(cfg.bands, list) and len(cfg.bands) >= 1
           and all((_is_int(b) and b >= 1) or (isinstance(b, str) and b.strip()) for b in cfg.bands),
           "bands", cfg.bands, "a list of 1-based band numbers or band descriptions (e.g. [B04, B03, B02])")
    _check(_valid_normalization(cfg.normalization), "normalization", cfg.normalization,
           "mean_std or 'percentile LOW HIGH' with 0 <= LOW < HIGH <= 100 (e.g. percentile 2 98)")


def _check_model(cfg: RunConfig) -> None:
    n = len(cfg.classes)
    if cfg.ce_weights is not None and cfg.ce_weights != "auto":
        _check(isinstance(cfg.ce_weights, list) and all(_is_number(w) and w >= 0 for w in cfg.ce_weights),
               "ce_weights", cfg.ce_weights, "a list of non-negative numbers or null")
        _check(len(cfg.ce_weights) == n, "ce_weights", cfg.ce_weights,
               f"a list of {n} weights, one per class")
        _check(any(w > 0 for w in cfg.ce_weights), "ce_weights", cfg.ce_weights, "not all zero")
    cfg.model_config = _validate_model_config(cfg.model_config, n)
    weights = cfg.model_config["encoder_weights"]
    if weights is not None and is_weights_file(weights):  # a local file, relative to the config
        cfg.model_config["encoder_weights"] = str((cfg.base_dir / weights).resolve())
    _check(cfg.model_config["in_channels"] == len(cfg.bands), "model_config.in_channels",
           cfg.model_config["in_channels"], f"equal to the number of bands ({len(cfg.bands)})")


def _classes_from_labels(raw: dict[str, Any], base_dir: Path) -> ClassSchema:
    """``classes: from_labels``: the classes named by the polygon labels' field in the manifest's label
    files (see :func:`geoseg.data.project.classes_from_values`)."""
    from geoseg.data.project import classes_from_values, read_polygon_labels

    if not raw.get("manifest"):
        raise ConfigError("classes: from_labels needs the config key 'manifest' (the scenes and their "
                          "labels)")
    records = read_records((base_dir / raw["manifest"]).resolve(),
                           raw.get("split_fractions", [0.8, 0.1, 0.1]), raw.get("seed", 0))
    files = sorted({str(r.label) for r in records if r.label is not None})
    if not files or any(Path(f).suffix.lower() not in VECTOR_SUFFIXES for f in files):
        raise ConfigError("classes: from_labels reads the classes from polygon labels, but the manifest "
                          "lists label rasters; list the classes in the config")
    polygons = read_polygon_labels(files, raw.get("label_field", "class_id"))
    return classes_from_values(polygons[raw.get("label_field", "class_id")])


def _apply_settings(raw: dict[str, Any], settings: list[str]) -> dict[str, Any]:
    """``raw`` with ``key=value`` settings applied (values in YAML: ``epochs=5``, ``bands=[B04, B03]``;
    ``model_config.encoder_name=resnet18`` sets a key inside a mapping)."""
    raw = dict(raw)
    for setting in settings:
        key, sep, text = setting.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set takes key=value, got {setting!r}")
        try:
            value = yaml.safe_load(text)
        except yaml.YAMLError:
            raise ConfigError(f"--set {setting}: the value is not valid YAML") from None
        *parents, last = key.strip().split(".")
        target = raw
        for part in parents:
            target[part] = dict(target.get(part) or {})
            target = target[part]
        target[last] = value
    return raw


def load_config(path: str | os.PathLike, overrides: dict[str, Any] | None = None,
                settings: list[str] | None = None) -> RunConfig:
    """Read and validate a YAML run config; relative paths resolve against its folder. ``settings`` are
    ``key=value`` overrides (see :func:`_apply_settings`)."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"config file {path} does not exist")
    try:
        raw = yaml.safe_load(p.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise ConfigError(f"{path} is not valid YAML{where}") from None
    raw = dict(raw or {}) if isinstance(raw, dict) or raw is None else raw
    if overrides and isinstance(raw, dict):
        raw.update(overrides)
    if settings and isinstance(raw, dict):
        raw = _apply_settings(raw, settings)
    return parse_config(raw, p.parent.resolve(), source=str(path))


def config_from_checkpoint(path: str | Path, overrides: dict[str, Any] | None = None) -> RunConfig:
    """The run config stored in a checkpoint (relative paths resolve as they did for that run)."""
    raw = dict(load_checkpoint(path).train_config)
    base = raw.pop("base_dir", None)
    raw.update(overrides or {})
    return parse_config(raw, Path(base) if base else None, source=f"the config stored in {path}")

