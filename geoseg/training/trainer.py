"""The training loop: chips → smp model → per-epoch confusion matrices, logs and checkpoints.

:class:`Trainer` is cut into the steps a run goes through (as TorchGeo's
trainers are): ``configure_data``, ``configure_model``,
``configure_optimization``, ``restore`` (``--resume``), then per epoch
``train_epoch``, ``validate``, ``log_epoch`` and ``save_checkpoints``.
:func:`train` runs them all.
"""

from __future__ import annotations

import json
import math
import random
import shutil
import time
import warnings
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
import yaml
from torch.utils.data import DataLoader, default_collate

from geoseg.data.chips import ChipDataset
from geoseg.data.samplers import GridChipSampler, RandomChipSampler
from geoseg.data.scenes import SceneInfo, scene_infos, tiled_copies
from geoseg.data.statistics import (
    band_percentiles,
    band_statistics,
    chip_cell,
    class_cell_counts,
    median_frequency_weights,
    polygon_counts,
)
from geoseg.errors import CheckpointError, ConfigError, GeoSegWarning, WeightsUnavailableError
from geoseg.io.atomic import atomic_output, atomic_write_text
from geoseg.io.classes import DEEPGLOBE, IGNORE_INDEX
from geoseg.io.manifest import read_records
from geoseg.models import fields as model_fields
from geoseg.models.baseline import ARCHITECTURE as BASELINE
from geoseg.models.checkpoint import (
    Checkpoint,
    autocast_dtype,
    blended_checkpoint,
    build_model,
    default_device,
    load_checkpoint,
    save_checkpoint,
)
from geoseg.models.defaults import record_latest
from geoseg.outputs.panels import sample_panel
from geoseg.progress import bar, say, set_quiet
from geoseg.training import distributed
from geoseg.training.averaging import WeightAverage
from geoseg.training.baseline import describe as describe_baseline
from geoseg.training.baseline import fit_baseline
from geoseg.training.blend import BlendSearch
from geoseg.training.budget import (
    BudgetPlan,
    Deadline,
    checkpoint_seconds,
    closing_line,
    format_seconds,
    measure_speeds,
    plan_budget,
    replan_chips,
)
from geoseg.training.config import RunConfig
from geoseg.training.metrics import confusion_matrix, summarize
from geoseg.training.optimization import (
    make_loss,
    make_optimizer,
    make_schedule,
    retarget_schedule,
    steps_per_batch,
)
from geoseg.training.self_training import (
    cell_counts,
    load_pseudo_labels,
    pseudo_label,
    pseudo_label_file,
    round_epochs,
    save_pseudo_labels,
)
from geoseg.training.step import training_step
from geoseg.training.tracking import LocalLog, WandbLog

IMAGENET_MEAN = [123.675, 116.28, 103.53]
IMAGENET_STD = [58.395, 57.12, 57.375]


@dataclass
class TrainResult:
    run_dir: Path
    best: Path
    last: Path
    history: list[dict[str, Any]]

    @property
    def best_val_miou(self) -> float:
        return max((r["val_miou"] for r in self.history if not math.isnan(r["val_miou"])),
                   default=float("nan"))


@dataclass
class Progress:
    """Where a run stands: what ``last.ckpt`` keeps for ``--resume`` besides the weights and optimizer."""

    history: list[dict[str, Any]] = field(default_factory=list)
    best_miou: float = -1.0
    step: int = 0
    first_epoch: int = 1
    stale: int = 0          # epochs since the best validation mIoU
    wandb_id: str | None = None
    pseudo_rounds: int = 0  # self-training rounds run so far


def train(cfg: RunConfig, device: torch.device | None = None, resume: str | Path | None = None,
          until_epoch: int | None = None) -> TrainResult:
    """Train a model as configured; returns the run folder, checkpoints and per-epoch metrics.

    ``resume`` (a run's ``last.ckpt``) continues that run exactly: model,
    optimizer, schedule, epoch, random state and logger run. ``until_epoch``
    stops after that epoch, to be resumed later (e.g. a time-limited job).
    """
    return Trainer(cfg, device, resume).fit(until_epoch)


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


@dataclass
class EpochTraining:
    """What an epoch's training steps leave: loss sum and count, the confusion matrix of the training chips,
    the step counter after it, one row per step, and when the first step ended (``time.perf_counter()``: the
    epoch's speed without its first-call set-up)."""

    loss_sums: np.ndarray
    confusion: np.ndarray
    step: int
    steps: list[dict[str, Any]]
    first_step_done: float | None


#: Budgets shorter than this skip the baseline (said in one line): its fit would take a large share of them.
BASELINE_BUDGET_SECONDS = 240.0


class Trainer:
    """One training run, set up step by step in the order the steps consume random numbers."""

    def __init__(self, cfg: RunConfig, device: torch.device | None = None, resume: str | Path | None = None):
        """Nothing is read, fitted or measured here: :meth:`setup` (called by :meth:`fit`) does that."""
        self.started = time.perf_counter()  # a budget counts from here
        self.cfg, self._device, self._resume = cfg, device, resume
        self._ready = False

    def setup(self) -> "Trainer":
        """Scenes, normalisation, model, data (and the baseline yardstick), budget, optimization and logs, in
        the order these steps consume random numbers; once."""
        if self._ready:
            return self
        cfg, resume = self.cfg, self._resume
        state = _resume_state(resume, cfg) if resume else None
        _seed_everything(cfg.seed)
        # under torchrun: one process per rank
        self.rank, self.world, self.device = distributed.setup(self._device or default_device())
        self.main = self.rank == 0
        if not self.main:
            set_quiet(True)  # rank 0 reports, logs and writes checkpoints
        self.train_scenes, self.val_scenes = _prepare_scenes(cfg)
        self.mean, self.std, self.clip = normalisation(cfg, self.train_scenes, state)
        self.configure_model(pretrained=state is None)
        self.run_dir = _run_folder(cfg, resume, self.main)
        self.configure_data()
        self.configure_baseline()
        self.deadline = self.configure_budget(state)
        if self.main:  # the config as this run uses it (a budget's chips per epoch too), to train again with
            atomic_write_text(self.run_dir / "config.yaml", yaml.safe_dump(cfg.resolved(), sort_keys=False))
        self.configure_optimization()
        self.resumed = state is not None
        self.progress = self.restore(state) if state else Progress()
        self.net = self.model if self.world == 1 else self._distributed_model()
        self.local = LocalLog(self.run_dir, self.progress.history, self.progress.step) if self.main else None
        self.wandb = (WandbLog(self.run_dir, self.run_dir.name, cfg.to_dict(), run_id=self.progress.wandb_id)
                      if cfg.logger == "wandb" and self.main else None)
        self._ready = True
        return self

    def configure_model(self, pretrained: bool) -> None:
        """The network, from the pretrained encoder weights the config asks for where they can be had (a
        local file, the local cache or a download), else from scratch with one warning that says how to give
        them."""
        cfg = self.cfg
        self.pretrained = cfg.model_config.get("encoder_weights")
        try:
            model = build_model(cfg.model_architecture, cfg.model_config, pretrained=pretrained)
        except WeightsUnavailableError as exc:
            self.pretrained = None
            warnings.warn(f"{exc.what} are neither reachable nor in the local cache ({exc.why}): training "
                          f"from scratch; to start from them, run once where {exc.host} is reachable (they "
                          "stay in the Hugging Face cache, HF_HOME) or give a local file as "
                          "model_config.encoder_weights: /path/to/encoder.pth", GeoSegWarning)
            model = build_model(cfg.model_architecture, cfg.model_config, pretrained=False)
        if pretrained and self.pretrained and self.main:
            say(f"encoder {cfg.model_config.get('encoder_name')} starts from the pretrained "
                f"'{Path(self.pretrained).name}' weights")
        self.model = model.to(self.device).to(memory_format=torch.channels_last)
        self.average = WeightAverage(self.model, cfg.weight_averaging) if cfg.weight_averaging else None
        self.resolution = _model_resolution(cfg, self.train_scenes)

    def configure_data(self) -> None:
        """Label statistics (when asked for), datasets, samplers and loaders."""
        cfg = self.cfg
        ignored = cfg.ignored_indices
        self.evaluated = [i for i in range(len(cfg.classes)) if i not in ignored]
        cell = chip_cell(cfg.chip_size)
        counts, val_counts = _label_census(cfg, self.train_scenes, self.val_scenes, cell,
                                          self.run_dir if self.main else None)
        self.class_weights, rarity = _class_weights_for(cfg, counts, self.run_dir if self.main else None)
        self.train_pixels = _class_pixels(counts)
        self.labelled_cells, self.cell = [c.sum(axis=-1) for c in counts], cell
        self.train_ds = train_ds = ChipDataset(self.train_scenes, cfg.classes, cfg.bands, cfg.chip_size,
                                               self.mean, self.std, ignored, cfg.label_field, self.clip)
        val_ds = ChipDataset(self.val_scenes, cfg.classes, cfg.bands, cfg.chip_size, self.mean, self.std,
                             ignored, cfg.label_field, self.clip)
        self.train_sampler = RandomChipSampler(self.train_scenes, cfg.chip_size, cfg.chips_per_epoch,
                                               cfg.seed, cfg.augment, cfg.rare_class_sampling, counts, rarity,
                                               self.rank, self.world, cell, cfg.unlabelled_chips,
                                               cfg.band_jitter, len(cfg.bands), cfg.scene_jitter)
        self.val_sampler = GridChipSampler(self.val_scenes, cfg.chip_size, cfg.val_chips, self.rank,
                                           self.world, val_counts, cell)
        self.train_loader = _loader(train_ds, self.train_sampler, cfg)
        self.val_loader = _loader(val_ds, self.val_sampler, cfg)

    def configure_baseline(self) -> None:
        """The per-pixel yardstick, fitted on the first epoch's chips (its own random stream)."""
        cfg = self.cfg
        self.baseline = self.blend = None
        budget = cfg.budget_seconds
        if cfg.baseline and self.main and budget is not None and budget < BASELINE_BUDGET_SECONDS:
            say(f"baseline skipped: a {format_seconds(budget)} budget has no time to spare for the per-pixel "
                f"yardstick (it takes up to a minute); it is fitted with budgets from "
                f"{format_seconds(BASELINE_BUDGET_SECONDS)}, or alone with geoseg baseline --config CONFIG")
            return
        if cfg.baseline and self.main:
            self.baseline = fit_baseline(self.train_ds, list(self.train_sampler.epoch_chips()),
                                         self.val_loader.dataset, self.val_sampler.all_specs,
                                         cfg.classes.names, self.evaluated, cfg.seed,
                                         keep_probabilities=self.world == 1)
            say(describe_baseline(self.baseline, cfg.classes.names, self.evaluated))
            if self.baseline.val_probabilities is not None:  # each validation also scores their blend
                self.blend = BlendSearch(self.baseline.val_probabilities, cfg.classes.names, self.evaluated)

    def configure_budget(self, state: dict[str, Any] | None) -> Deadline | None:
        """With ``budget``: the chips per epoch that fit, from speeds measured on a copy of the model (a
        resumed run keeps its plan), and the deadline that guards each epoch (a single process)."""
        cfg = self.cfg
        if cfg.budget_seconds is None:
            return None
        if state and state.get("chips_per_epoch"):
            self._set_chips_per_epoch(state["chips_per_epoch"])
            return None
        plan = self._plan() if self.main else None
        plan = distributed.broadcast(plan)
        self._set_chips_per_epoch(plan.chips_per_epoch)
        say(plan.describe())
        return Deadline(self.started, plan) if self.world == 1 else None

    def _plan(self) -> BudgetPlan:
        cfg = self.cfg
        specs = list(self.train_sampler.epoch_chips())[:cfg.batch_size]
        loss_fn = make_loss(cfg.loss_fn, None, self.evaluated, self.device)
        speeds = measure_speeds(
            self.model, lambda params: make_optimizer(cfg.optimizer, params, cfg.lr, cfg.weight_decay),
            loss_fn, lambda: default_collate([self.train_ds[s] for s in specs]), self.device,
            autocast_dtype(self.device, cfg.precision))
        val_chips = -(-len(self.val_sampler.all_specs) // self.world)
        return plan_budget(cfg.budget_seconds, time.perf_counter() - self.started, speeds, cfg.epochs,
                           cfg.batch_size * self.world, val_chips, cfg.num_workers)

    def replan(self, epoch: int, row: dict[str, Any]) -> None:
        """After each epoch but the last: the later epochs' chips from the speed the epoch really had (the
        probe's first steps, and a shared machine, are slower or faster than a whole epoch), the LR schedule
        retargeted to end with them."""
        cfg, left = self.cfg, self.cfg.epochs - epoch
        warm = self.first_step_done is not None and row["train_chips"] > cfg.batch_size
        per_chip = ((self.train_end - self.first_step_done) / (row["train_chips"] - cfg.batch_size) if warm
                    else (self.train_end - self.train_start) / max(1, row["train_chips"]))
        saving = checkpoint_seconds(self.model)
        overhead = row["val_seconds"] + saving
        # this epoch's own logs and checkpoints are still to come
        seconds_left = self.started + self.deadline.plan.seconds - time.perf_counter() - saving
        chips = replan_chips(seconds_left, per_chip, overhead, left, cfg.batch_size)
        self._set_chips_per_epoch(chips)
        retarget_schedule(self.scheduler, self.progress.step + left * len(self.train_loader))
        if self.main:
            atomic_write_text(self.run_dir / "config.yaml", yaml.safe_dump(cfg.resolved(), sort_keys=False))
        say(f"budget: {chips} chips per epoch for the {left} epochs left ({1 / per_chip:.2f} chips/s in "
            f"epoch {epoch})")

    def _set_chips_per_epoch(self, n: int) -> None:
        self.cfg.chips_per_epoch = self.train_sampler.n = int(n)

    def configure_optimization(self) -> None:
        """Loss, optimizer, LR schedule, autocast dtype and (fp16 on older GPUs) the gradient scaler."""
        cfg = self.cfg
        weights = self.class_weights if self.class_weights is not None else (
            cfg.ce_weights if isinstance(cfg.ce_weights, list) else None)
        self.loss_fn = make_loss(cfg.loss_fn, weights, self.evaluated, self.device)
        self.optimizer = make_optimizer(cfg.optimizer, self.model.parameters(), cfg.lr, cfg.weight_decay)
        self.scheduler = make_schedule(cfg.lr_schedule, self.optimizer, cfg.lr,
                                       cfg.epochs * len(self.train_loader))
        self.amp = autocast_dtype(self.device, cfg.precision)
        self.scaler = torch.amp.GradScaler(self.device.type) if self.amp == torch.float16 else None

    def restore(self, state: dict[str, Any]) -> Progress:
        """Continue from a ``last.ckpt``: weights, optimizer, schedule, scaler, counters and random state
        (checked by :func:`geoseg.models.fields.training_state`; torch checks what it loads, and any value it
        refuses is one sentence)."""
        try:
            return self._restore(state)
        except (RuntimeError, ValueError, TypeError, KeyError, IndexError) as exc:
            detail = (str(exc).splitlines() or [""])[0][:120]
            raise CheckpointError(f"the training state of the checkpoint being resumed does not fit this run "
                                  f"({type(exc).__name__}: {detail}); resume from an intact last.ckpt of the "
                                  "same config") from None

    def _restore(self, state: dict[str, Any]) -> Progress:
        self.model.load_state_dict(state.get("live_model") or state["model"])
        if self.average is not None:
            if not state.get("average"):
                raise CheckpointError("the run being resumed did not average its weights; resume it with "
                                      "weight_averaging: null")
            self.average.load(state["model"], state["average"])
        self.optimizer.load_state_dict(state["optimizer"])
        if self.scheduler is not None and state.get("scheduler"):
            self.scheduler.load_state_dict(state["scheduler"])
        if self.scaler is not None and state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        _restore_rng(state["rng"])
        rounds = state.get("pseudo_rounds") or 0
        if rounds:
            self.use_pseudo_labels(load_pseudo_labels(
                self.run_dir / pseudo_label_file(rounds), [s.sampled_shape for s in self.train_scenes],
                len(self.cfg.classes)))
        return Progress(list(state["history"]), state["best_miou"], state["step"], state["epoch"] + 1,
                        state["stale"], state.get("wandb_id"), rounds)

    def _distributed_model(self) -> torch.nn.Module:
        model, device = self.model, self.device
        unused = _has_unused_parameters(model, len(self.cfg.bands), self.cfg.chip_size, device)
        return torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None,
                                                         find_unused_parameters=unused)

    def fit(self, until_epoch: int | None = None) -> TrainResult:
        """Set up, run the epochs left (up to ``until_epoch``), then the final checkpoint and the logger's
        end."""
        self.setup()
        cfg, progress = self.cfg, self.progress
        self._announce()
        first_step = progress.step
        for epoch in range(progress.first_epoch, min(cfg.epochs, until_epoch or cfg.epochs) + 1):
            row, steps, samples = self.run_epoch(epoch)
            if epoch in round_epochs(cfg.epochs, cfg.self_training):
                self.self_train(epoch, row)
            if self.deadline and epoch < cfg.epochs:
                self.replan(epoch, row)
            self.log_epoch(epoch, row, steps, samples)
            self.save_checkpoints(epoch, row)
            if self.deadline:  # validation and checkpoints as they really took, for the next epochs
                self.deadline.measured(time.perf_counter() - self.train_end)
            say(f"epoch {epoch}/{cfg.epochs}  loss {row['train_loss']:.3f}/{row['val_loss']:.3f}  "
                f"mIoU train {row['train_miou']:.3f} val {row['val_miou']:.3f}  lr {row['lr']:.2g}  "
                f"({row['train_chips_per_s']:.1f} / {row['val_chips_per_s']:.1f} chips/s)")
            if cfg.early_stopping and progress.stale >= cfg.early_stopping:
                say(f"early stopping: val mIoU has not improved for {progress.stale} epochs "
                    f"(best {progress.best_miou:.3f})")
                break
        result = self._finish()
        if self.main:
            _warn_of_unpredicted_classes(cfg, self.evaluated, self.train_pixels, progress.history)
            self._say_validation_by_scene(progress.history)
            if cfg.self_training:
                say(_self_training_outcome(progress.history))
            if until_epoch is None or until_epoch >= cfg.epochs:  # the run is complete
                self.settle_best_model(result)
        if self.deadline:
            elapsed = time.perf_counter() - self.started
            say(closing_line(self.deadline.plan, elapsed, progress.step - first_step))
        return result

    def self_train(self, epoch: int, row: dict[str, Any]) -> None:
        """One round of self-training after ``epoch``: the validated model pseudo-labels the training scenes'
        unlabelled pixels (:func:`~geoseg.training.self_training.pseudo_label`), which the chips of the later
        epochs read (chips are drawn where they are too); ``row`` gets the pixels found."""
        cfg = self.cfg
        number = self.progress.pseudo_rounds + 1
        # ignoring no class: its unlabelled pixels are those without a label
        unignoring = ChipDataset(self.train_scenes, cfg.classes, cfg.bands, cfg.chip_size, self.mean,
                                 self.std, (), cfg.label_field, self.clip)
        labels, found = pseudo_label(self.validated_model, unignoring, self.device, self.amp,
                                     cfg.pseudo_label_confidence, cfg.ignored_indices, cfg.batch_size * 2,
                                     cfg.pseudo_label_share)
        say(found.describe(number, epoch, cfg.pseudo_label_confidence, cfg.classes.names,
                           cfg.pseudo_label_share))
        row["pseudo_pixels"], row["pseudo_seconds"] = found.pixels, found.seconds
        if not found.pixels:
            return
        if self.main:
            save_pseudo_labels(labels, self.run_dir / pseudo_label_file(number))
        self.use_pseudo_labels(labels)
        self.progress.pseudo_rounds = number

    def use_pseudo_labels(self, labels: list[np.ndarray]) -> None:
        """Training chips read ``labels`` into their unlabelled pixels and are drawn where either kind of
        label is; the loader starts afresh (its worker processes hold copies of the dataset)."""
        self.train_ds.set_pseudo_labels(labels)
        pseudo = cell_counts(labels, self.cell)
        self.train_sampler.draw_where([true + extra for true, extra in zip(self.labelled_cells, pseudo)])
        self.train_loader = _loader(self.train_ds, self.train_sampler, self.cfg)

    def settle_best_model(self, result: TrainResult) -> None:
        """With the per-pixel baseline: save the blend of network and baseline (``blend.ckpt``) where it
        scored higher on validation than either; and where the network scored below the baseline, say so in
        one warning, save the baseline (``baseline.ckpt``) and (``best_model: auto``) make ``best.ckpt`` the
        better of the blend and the baseline, the network kept as ``network.ckpt``."""
        if self.baseline is None or math.isnan(self.baseline.scores["miou"]):
            return
        network, yardstick = result.best_val_miou, self.baseline.scores["miou"]
        scored = [row for row in result.history if not math.isnan(row["val_miou"])]
        best_row = max(scored, key=lambda row: row["val_miou"]) if scored else {}
        weight, blended = best_row.get("blend_network_weight"), best_row.get("blend_val_miou", math.nan)
        beaten = -1.0 if math.isnan(network) else network
        blend = None
        if weight is not None and 0 < weight < 1 and blended > max(beaten, yardstick):
            blend = self._save_blend(weight, {"val_miou": blended, "blend_network_weight": weight,
                                              "network_val_miou": network, "baseline_val_miou": yardstick})
            say(f"blend: the network's probabilities × {weight:.1f} + the baseline's × {1 - weight:.1f} (the "
                f"share fitted on validation) score val mIoU {blended:.3f} against the network's "
                f"{network:.3f} and the baseline's {yardstick:.3f}: saved as {blend}")
        if beaten >= yardstick:
            return
        baseline = self._save_baseline()
        told = (f"the network's best validation mIoU {network:.3f} is below the per-pixel baseline's "
                f"{yardstick:.3f}")
        advice = ("train longer, label more, or start from pretrained weights before trusting the network "
                  "alone")
        if self.cfg.best_model == "network":
            kept = f"the baseline is saved as {baseline}" + (f" and the blend as {blend}" if blend else "")
            warnings.warn(f"{told}: best.ckpt stays the network (best_model: network); {kept}; {advice}",
                          GeoSegWarning)
            return
        network_path = self.run_dir / "network.ckpt"
        _copy_file(self.best_path, network_path)
        _copy_file(blend or baseline, self.best_path)
        record_latest(self.best_path)
        what = (f"the blend of network and baseline (val mIoU {blended:.3f})" if blend else
                "the baseline")
        warnings.warn(f"{told}: best.ckpt is now {what}, the network alone {network_path} and the baseline "
                      f"{baseline} (predict with --model any of them); {advice}", GeoSegWarning)

    def _save_baseline(self) -> Path:
        ckpt = _run_checkpoint(self.cfg, self.train_scenes, architecture=BASELINE, model_config={},
                               state_dict=self.baseline.ensemble.to_tensors(),
                               normalisation=(self.mean, self.std, self.clip), resolution=self.resolution,
                               epoch=0, metrics={f"val_{k}": v for k, v in self.baseline.scores.items()})
        return save_checkpoint(ckpt, self.run_dir / "baseline.ckpt")

    def _save_blend(self, weight: float, metrics: dict[str, Any]) -> Path:
        """``blend.ckpt``: the network's best epoch (``best.ckpt``, or ``network.ckpt`` once ``best.ckpt`` is
        another model) blended with the baseline."""
        kept = self.run_dir / "network.ckpt"
        network = load_checkpoint(kept if kept.exists() else self.best_path)
        ckpt = blended_checkpoint(network, self.baseline.ensemble.to_tensors(), weight, metrics)
        return save_checkpoint(ckpt, self.run_dir / "blend.ckpt")

    def _say_validation_by_scene(self, history: Sequence[dict[str, Any]]) -> None:
        """The best epoch's validation mIoU of each validation scene, in one line: a mean over chips can
        hide a scene the model fails on."""
        scored = [row for row in history if not math.isnan(row["val_miou"]) and row.get("val_scenes")]
        if not scored or len(scored[-1]["val_scenes"]) < 2:
            return
        best = max(scored, key=lambda row: row["val_miou"])
        say(f"validation by scene (epoch {best['epoch']}): " + ", ".join(
            f"{s['scene']} {s['miou']:.3f}" for s in best["val_scenes"]))

    def _announce(self) -> None:
        cfg, world = self.cfg, self.world
        say(f"run folder {self.run_dir}  ({len(self.train_scenes)} train / {len(self.val_scenes)} val "
            f"scenes, {cfg.chips_per_epoch} train + {len(self.val_sampler.all_specs)} val chips of "
            f"{cfg.chip_size} px per epoch, precision {'bf16' if self.amp else 'fp32'}, device "
            f"{self.device.type}"
            + (f", {world} processes" if world > 1 else "") + ")"
            + (f"; resuming after epoch {self.progress.first_epoch - 1}" if self.resumed else ""))

    def run_epoch(self, epoch: int) -> tuple[dict[str, Any], list[dict], tuple | None]:
        """Train and validate one epoch; the epoch's metrics row, its per-step rows and sample chips."""
        cfg, n = self.cfg, len(self.cfg.classes)
        self.train_sampler.set_epoch(epoch)
        t0 = self.train_start = time.perf_counter()
        if self.world > 1:
            _log_rank_chips(self.run_dir, self.rank, epoch, self.train_sampler)
        deadline = self.deadline.for_epoch(epoch, t0) if self.deadline else None
        first_step = self.progress.step
        trained_epoch = self.train_epoch(epoch, deadline)
        train_sums, train_cm, steps = trained_epoch.loss_sums, trained_epoch.confusion, trained_epoch.steps
        self.progress.step, self.first_step_done = trained_epoch.step, trained_epoch.first_step_done
        t1 = self.train_end = time.perf_counter()
        trained = min(len(self.train_sampler), (self.progress.step - first_step) * cfg.batch_size)
        if trained < len(self.train_sampler):
            say(f"epoch {epoch}: its share of the budget ran out after {trained} of "
                f"{len(self.train_sampler)} chips")
        sample_now = self.main and (epoch % cfg.sample_every == 0 or epoch == cfg.epochs)
        shown = cfg.sample_images if sample_now else 0
        val_sums, val_cm, samples, scene_cm = _validate(
            self.validated_model, self.val_loader, self.loss_fn, self.device, self.amp, n, shown,
            epoch=(epoch, cfg.epochs), scenes=len(self.val_scenes), blend=self.blend)
        t2 = time.perf_counter()
        # every rank saw its own chips: sum confusion matrices and losses, then score (never average IoUs)
        train_cm, val_cm = distributed.all_sum(train_cm), distributed.all_sum(val_cm)
        scene_cm = distributed.all_sum(scene_cm)
        train_sums, val_sums = distributed.all_sum(train_sums), distributed.all_sum(val_sums)
        tr = summarize(train_cm, cfg.classes.names, self.evaluated)
        va = summarize(val_cm, cfg.classes.names, self.evaluated)
        if self.scheduler is not None and not steps_per_batch(self.scheduler):
            self.scheduler.step(0.0 if math.isnan(va["miou"]) else va["miou"])
        row = {"epoch": epoch, "step": self.progress.step,
               "train_loss": float(train_sums[0] / max(train_sums[1], 1)),
               "val_loss": float(val_sums[0] / val_sums[1]) if val_sums[1] else float("nan"),
               **{f"train_{k}": v for k, v in tr.items()}, **{f"val_{k}": v for k, v in va.items()},
               "lr": self.optimizer.param_groups[0]["lr"],
               "train_chips": trained * self.world, "train_chips_per_s": trained * self.world / (t1 - t0),
               "val_chips_per_s": len(self.val_sampler.all_specs) / (t2 - t1), "val_seconds": t2 - t1,
               "val_confusion": val_cm.tolist(), "val_scenes": self._scores_by_scene(scene_cm)}
        if self.blend is not None:  # the blend with the baseline at its best share on this validation
            row["blend_network_weight"], row["blend_val_miou"] = self.blend.best()
        return row, steps, samples

    def _scores_by_scene(self, confusion: np.ndarray) -> list[dict[str, Any]]:
        """Validation mIoU and labelled pixels of each validation scene (a list: JSON only, not CSV)."""
        names = self.cfg.classes.names
        return [{"scene": Path(scene.record.image).name, "miou": summarize(cm, names, self.evaluated)["miou"],
                 "labelled_pixels": int(cm.sum())} for scene, cm in zip(self.val_scenes, confusion)]

    def train_epoch(self, epoch: int, deadline: float | None = None) -> EpochTraining:
        """One pass over the sampler's chips (ending early at ``deadline``, a ``time.perf_counter()``), each
        batch one :func:`~geoseg.training.step.training_step`; the weight average follows each step."""
        model, loader, optimizer, scheduler = self.net, self.train_loader, self.optimizer, self.scheduler
        n_classes = len(self.cfg.classes)
        model.train()
        total, batches, ema, step, first_done = 0.0, 0, None, self.progress.step, None
        cm = np.zeros((n_classes, n_classes), np.int64)
        steps = []
        per_batch = steps_per_batch(scheduler)
        with bar(len(loader.sampler), "train", unit="chip", epoch=(epoch, self.cfg.epochs)) as pbar:
            for batch in loader:
                if deadline is not None and time.perf_counter() >= deadline:
                    break
                x = batch["image"].to(self.device, non_blocking=True).contiguous(
                    memory_format=torch.channels_last)
                y = batch["mask"].to(self.device, non_blocking=True)
                loss, logits = training_step(model, x, y, self.loss_fn, optimizer, self.amp, self.scaler)
                if self.average is not None:
                    self.average.update(model.module if hasattr(model, "module") else model)
                lr = optimizer.param_groups[0]["lr"]
                if per_batch:
                    scheduler.step()
                value = float(loss.detach())
                if math.isfinite(value):
                    total += value
                    batches += 1
                    ema = value if ema is None else 0.9 * ema + 0.1 * value
                cm += confusion_matrix(y, logits.detach().argmax(1), n_classes)
                step += 1
                steps.append({"step": step, "epoch": epoch, "batch_loss": value, "loss_ema": ema, "lr": lr})
                pbar.set_postfix(loss=f"{ema if ema is not None else float('nan'):.3f}")
                pbar.update(len(x))
                first_done = first_done or time.perf_counter()
        return EpochTraining(np.array([total, batches], np.float64), cm, step, steps, first_done)

    def log_epoch(self, epoch: int, row: dict[str, Any], steps: list[dict], samples: tuple | None) -> None:
        """Sample panel (its cost logged too), CSV/JSON and W&B."""
        t = time.perf_counter()
        if samples:
            (self.run_dir / "samples").mkdir(exist_ok=True)
            panel = sample_panel(*samples, self.cfg.classes.colors, self.mean, self.std,
                                 self.run_dir / "samples" / f"epoch_{epoch:03d}.png")
            if self.wandb:
                self.wandb.log_image("val/samples", panel, step=self.progress.step)
        row["image_logging_seconds"] = time.perf_counter() - t
        if self.baseline is not None:  # beside the network's, in every row: CSV, JSON and W&B
            row.update({f"baseline_val_{k}": v for k, v in self.baseline.scores.items()})
        self.progress.history.append(row)
        if self.local:
            self.local.log_steps(steps)
            self.local.log_epoch(row)
        if self.wandb:
            for s in steps:
                self.wandb.log({"train/batch_loss": s["batch_loss"], "train/loss_ema": s["loss_ema"],
                                "train/lr": s["lr"]}, step=s["step"])
            self.wandb.log({f"epoch/{k}": v for k, v in row.items() if not isinstance(v, list)},
                           step=self.progress.step)

    def save_checkpoints(self, epoch: int, row: dict[str, Any]) -> None:
        """``best.ckpt`` when the validation mIoU improved, ``last.ckpt`` (with training state) always."""
        progress, miou = self.progress, row["val_miou"]
        if not math.isnan(miou) and miou > progress.best_miou:
            progress.best_miou, progress.stale = miou, 0
            if self.main:
                save_checkpoint(self.checkpoint(epoch, row, with_state=False), self.best_path)
        else:
            progress.stale += 1
        if self.main:
            save_checkpoint(self.checkpoint(epoch, row, with_state=True), self.last_path)

    @property
    def validated_model(self) -> torch.nn.Module:
        """The model validated and saved: the weight average where the run keeps one."""
        return self.average.module if self.average is not None else self.model

    @property
    def best_path(self) -> Path:
        return self.run_dir / "best.ckpt"

    @property
    def last_path(self) -> Path:
        return self.run_dir / "last.ckpt"

    def checkpoint(self, epoch: int, metrics: dict[str, Any], with_state: bool) -> Checkpoint:
        """The model as a self-describing checkpoint; ``with_state`` adds what ``--resume`` needs."""
        cfg, p = self.cfg, self.progress
        training_state = None
        if with_state:
            training_state = {
                "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict() if self.scheduler else None,
                "epoch": epoch, "step": p.step, "best_miou": p.best_miou, "stale": p.stale,
                              "history": p.history,
                "rng": _rng_state(), "wandb_id": self.wandb.run.id if self.wandb else None,
                "mean": list(self.mean), "std": list(self.std), "clip": self.clip,
                "scaler": self.scaler.state_dict() if self.scaler else None,
                "chips_per_epoch": cfg.chips_per_epoch, "pseudo_rounds": p.pseudo_rounds,
            }
            if self.average is not None:  # the checkpoint's weights are the average, the one validated
                training_state["live_model"] = self.model.state_dict()
                training_state["average"] = self.average.state_dict()
        return _run_checkpoint(cfg, self.train_scenes, architecture=cfg.model_architecture,
                              model_config=dict(cfg.model_config),
                              state_dict=self.validated_model.state_dict(),
                              normalisation=(self.mean, self.std, self.clip), resolution=self.resolution,
                              epoch=epoch, metrics=metrics, training_state=training_state)

    def _finish(self) -> TrainResult:
        history = self.progress.history
        if self.main and not self.best_path.exists():
            save_checkpoint(self.checkpoint(len(history), history[-1], with_state=False), self.best_path)
        if self.wandb:
            self.wandb.finish()
        if self.main:
            record_latest(self.best_path)
        if self.world > 1:
            distributed.barrier()
            distributed.teardown()
        return TrainResult(self.run_dir, self.best_path, self.last_path, history)


def train_baseline(cfg: RunConfig, output: str | Path | None = None) -> tuple[Path, Any]:
    """``geoseg baseline``: fit the per-pixel baseline on the config's data and save it as a checkpoint that
    ``geoseg predict`` runs (default ``<output_dir>/<run_name or timestamp>/baseline.ckpt``)."""
    train_scenes, val_scenes = _prepare_scenes(cfg)
    mean, std, clip = normalisation(cfg, train_scenes, None)
    evaluated = [i for i in range(len(cfg.classes)) if i not in cfg.ignored_indices]
    cell = chip_cell(cfg.chip_size)
    run_dir = Path(output).parent if output else _run_folder(cfg, None, True)
    counts, val_counts = _label_census(cfg, train_scenes, val_scenes, cell, run_dir)
    _, rarity = _class_weights_for(cfg, counts, None)
    datasets = [ChipDataset(scenes, cfg.classes, cfg.bands, cfg.chip_size, mean, std, cfg.ignored_indices,
                            cfg.label_field, clip) for scenes in (train_scenes, val_scenes)]
    sampler = RandomChipSampler(train_scenes, cfg.chip_size, max(cfg.chips_per_epoch, 64), cfg.seed,
                                cfg.augment, cfg.rare_class_sampling, counts, rarity, cell=cell,
                                unlabelled=cfg.unlabelled_chips)
    val_specs = GridChipSampler(val_scenes, cfg.chip_size, cfg.val_chips, cell_counts=val_counts,
                                cell=cell).all_specs
    result = fit_baseline(datasets[0], list(sampler.epoch_chips()), datasets[1], val_specs, cfg.classes.names,
                          evaluated, cfg.seed)
    say(describe_baseline(result, cfg.classes.names, evaluated))
    resolution = _model_resolution(cfg, train_scenes)
    ckpt = _run_checkpoint(cfg, train_scenes, architecture=BASELINE, model_config={},
                          state_dict=result.ensemble.to_tensors(), normalisation=(mean, std, clip),
                          resolution=resolution, epoch=0,
                          metrics={f"val_{k}": v for k, v in result.scores.items()})
    path = save_checkpoint(ckpt, output or run_dir / "baseline.ckpt")
    return path, result


def _copy_file(source: Path, target: Path) -> None:
    """``source`` copied to ``target`` atomically (a checkpoint another process may be reading)."""
    with atomic_output(target) as tmp:
        shutil.copyfile(source, tmp)


def _model_resolution(cfg: RunConfig, train_scenes: list[SceneInfo]) -> float | None:
    """The model's ground sampling in metres per pixel: the run's ``resolution``, else the ground pixel
    width of the first training scene as it is read (None for scenes not placed on Earth)."""
    if cfg.resolution:
        return float(cfg.resolution)
    return train_scenes[0].grid.ground_resolution


def _run_checkpoint(cfg: RunConfig, train_scenes: list[SceneInfo], *, architecture: str,
                   model_config: dict[str, Any], state_dict: dict[str, Any],
                   normalisation: tuple[list[float], list[float], Any], resolution: float | None, epoch: int,
                   metrics: dict[str, Any], training_state: dict[str, Any] | None = None) -> Checkpoint:
    """The checkpoint of a run on ``cfg``: the one place a training run's checkpoint is put together (the
    network's and the baseline's alike)."""
    mean, std, clip = normalisation
    return Checkpoint(architecture=architecture, model_config=model_config, state_dict=state_dict,
                      classes=cfg.classes, bands=list(cfg.bands), mean=list(mean), std=list(std),
                      clip=clip, chip_size=cfg.chip_size, resolution=resolution,
                      train_config={**cfg.to_dict(), "base_dir": str(cfg.base_dir)}, epoch=epoch,
                      metrics=metrics, training_state=training_state,
                      data={"train_scenes": len(train_scenes),
                            "synthetic": all(s.synthetic for s in train_scenes)})


def _prepare_scenes(cfg: RunConfig) -> tuple[list[SceneInfo], list[SceneInfo]]:
    """The training and validation scenes, checked, with their sampling scale (tiled copies where needed)."""
    records = read_records(cfg.manifest_path, cfg.split_fractions, cfg.seed)
    train_recs = [r for r in records if r.split == "train"]
    val_recs = [r for r in records if r.split == "val"]
    if not train_recs:
        raise ConfigError(f"{cfg.manifest_path} lists no 'train' scenes")
    if not val_recs:
        warnings.warn("the manifest lists no 'val' scenes; validating on the training scenes", GeoSegWarning)
        val_recs = train_recs
    scenes = scene_infos(train_recs + val_recs, cfg.bands, cfg.downsize_res, cfg.resolution)  # one warning
    scenes = tiled_copies(scenes, cfg.output_path / ".cache" / "tiles")  # JPEG/PNG → tiled GeoTIFF, once
    return scenes[:len(train_recs)], scenes[len(train_recs):]


def normalisation(cfg: RunConfig, train_scenes: list[SceneInfo], state: dict[str, Any] | None) -> tuple[
        list[float], list[float], tuple[list[float], list[float]] | None]:
    """Band means, standard deviations and the value range inputs are clipped to (None: no clipping): the
    resumed run's; with ``normalization: percentile LOW HIGH`` the training scenes' percentiles, mapped to
    −1…1; ImageNet's for ImageNet encoders on RGB; else the training scenes' own mean and deviation."""
    if state:
        return state["mean"], state["std"], state.get("clip")
    if cfg.percentiles:
        low, high = band_percentiles(train_scenes, cfg.bands, *cfg.percentiles)
        mean = [(lo + hi) / 2 for lo, hi in zip(low, high)]
        return mean, [(hi - lo) / 2 for lo, hi in zip(low, high)], (low, high)
    if cfg.model_config.get("encoder_weights") == "imagenet" and len(cfg.bands) == 3:
        return IMAGENET_MEAN, IMAGENET_STD, None
    return *band_statistics(train_scenes, cfg.bands), None


def _warn_of_unpredicted_classes(cfg: RunConfig, evaluated: Sequence[int], train_pixels: np.ndarray,
                                 history: Sequence[dict[str, Any]]) -> None:
    """One warning for the classes that have training labels but that the best epoch never predicted on
    validation: the model has not learnt them, and their map share will read 0 % without it."""
    scored = [row for row in history if not math.isnan(row.get("val_miou", math.nan))]
    if not scored or "val_confusion" not in scored[0]:
        return
    best = max(scored, key=lambda row: row["val_miou"])
    predicted = np.asarray(best["val_confusion"]).sum(axis=0)
    unseen = [i for i in evaluated if train_pixels[i] > 0 and predicted[i] == 0]
    if not unseen:
        return
    told = [f"'{cfg.classes.names[i]}' ({int(train_pixels[i]):,} labelled training pixels)" for i in unseen]
    names = told[0] if len(told) == 1 else ", ".join(told[:-1]) + " and " + told[-1]
    advice = ["digitise more of " + ("it" if len(unseen) == 1 else "them")]
    if cfg.ce_weights != "auto":
        advice.append("set ce_weights: auto")
    if not cfg.rare_class_sampling:
        advice.append("set rare_class_sampling: 0.5")
    advice_text = ", ".join(advice[:-1]) + " or " + advice[-1] if len(advice) > 1 else advice[0]
    warnings.warn(f"the model never predicted {names} on validation (best epoch {best['epoch']}): it has not "
                  f"learnt {'it' if len(unseen) == 1 else 'them'} and the map will hold none; {advice_text}",
                  GeoSegWarning)


def _self_training_outcome(history: Sequence[dict[str, Any]]) -> str:
    """One line on what self-training gave: the best validation mIoU before the first round that found
    pseudo-labels and after it, and which side ``best.ckpt`` comes from."""
    rounds = [row["epoch"] for row in history if row.get("pseudo_pixels")]
    if not rounds:
        return "self-training: no round pseudo-labelled any pixel; best.ckpt learnt from the labels alone"
    first = rounds[0]
    scored = [row for row in history if not math.isnan(row["val_miou"])]
    before = max((row["val_miou"] for row in scored if row["epoch"] <= first), default=math.nan)
    after = max((row["val_miou"] for row in scored if row["epoch"] > first), default=math.nan)
    if math.isnan(after):
        return f"self-training: no epoch was validated after the first round (epoch {first})"
    side = ("learnt from the pseudo-labels too" if after > before or math.isnan(before)
            else "is from before the first round (the pseudo-labels did not help on validation)")
    return (f"self-training: best val mIoU {before:.3f} up to the first round (after epoch {first}), "
            f"{after:.3f} after it; best.ckpt {side}")


def _class_pixels(cell_counts: list[np.ndarray]) -> np.ndarray:
    """Labelled pixels per class over scenes, from their per-cell class counts."""
    return sum(c.reshape(-1, c.shape[-1]).sum(axis=0) for c in cell_counts)


def _label_census(cfg: RunConfig, train: list[SceneInfo], val: list[SceneInfo], cell: int,
                 run_dir: Path | None) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Label pixels per class and ``cell``-sized cell of the training and validation scenes (cached), told
    per class with the polygons found (in the log and ``labels.json``); a class without any training label
    stops the run with one sentence."""
    kw = {"cache_dir": cfg.output_path / ".cache", "label_field": cfg.label_field}
    counts = class_cell_counts(train, cfg.classes, cell, cfg.ignored_indices, **kw)
    val_counts = class_cell_counts(val, cfg.classes, cell, cfg.ignored_indices, **kw)
    pixels = {"train": _class_pixels(counts), "val": _class_pixels(val_counts)}
    polygons = {split: polygon_counts(scenes, cfg.classes, cfg.label_field)
                for split, scenes in (("train", train), ("val", val))}
    report = {name: {f"{split}_{what}": int(table[split][i]) for what, table in (("pixels", pixels),
                                                                                 ("polygons", polygons))
                     for split in ("train", "val") if table[split] is not None}
              for i, name in enumerate(cfg.classes.names)}
    if run_dir is not None:
        atomic_write_text(run_dir / "labels.json", json.dumps(report, indent=1))
    say(_label_table(report))
    missing = [i for i in range(len(cfg.classes)) if i not in cfg.ignored_indices and pixels["train"][i] == 0]
    if missing and cfg.classes != DEEPGLOBE:
        c = cfg.classes.classes[missing[0]]
        others = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise ConfigError(f"class '{c.name}' (code {c.code}){others} has no labelled pixels in the training "
                          f"scenes of {cfg.manifest_path}; label some, or give it ce_weights 0, "
                          f"ignore: true or remove it from classes")
    if missing:  # the built-in DeepGlobe list: a subset of DeepGlobe may lack a class
        names = ", ".join(cfg.classes.names[i] for i in missing)
        warnings.warn(f"the training scenes of {cfg.manifest_path} have no labelled pixels of {names}; the "
                      "model cannot learn them", GeoSegWarning)
    return counts, val_counts


def _label_table(report: dict[str, dict[str, int]]) -> str:
    """The labels found per class, as a small table."""
    columns = list(next(iter(report.values())))
    lines = ["labels found " + " ".join(f"{c.replace('_', ' '):>16}" for c in columns)]
    lines += [f"{name:>12} " + " ".join(f"{row[c]:>16,}" for c in columns) for name, row in report.items()]
    return "\n".join(lines)


def _class_weights_for(cfg: RunConfig, counts: list[np.ndarray], run_dir: Path | None) -> tuple[
        list[float] | None, np.ndarray | None]:
    """The loss weights (for ``ce_weights: auto``) and median-frequency weights (for rare-class sampling)
    from the training labels' cell counts."""
    if cfg.ce_weights != "auto" and not cfg.rare_class_sampling:
        return None, None
    mfb = median_frequency_weights(counts, cfg.ignored_indices)
    pixels = sum(c.reshape(-1, c.shape[-1]).sum(axis=0) for c in counts)
    share = pixels / max(1, pixels.sum())
    report = {name: {"share": float(share[i]), "median_frequency_weight": float(mfb[i])}
              for i, name in enumerate(cfg.classes.names)}
    if run_dir is not None:
        atomic_write_text(run_dir / "class_weights.json", json.dumps(report, indent=1))
    say("class shares / median-frequency weights: " + ", ".join(
        f"{n} {v['share']:.1%}/{v['median_frequency_weight']:.2f}" for n, v in report.items()))
    return (mfb.tolist() if cfg.ce_weights == "auto" else None), mfb


def _run_folder(cfg: RunConfig, resume: str | Path | None, main: bool) -> Path:
    """The run's folder: the resumed checkpoint's, else a new one named after the run (rank 0 makes it)."""
    if resume:
        run_dir = Path(resume).resolve().parent
    elif main:
        run_dir = cfg.output_path / (cfg.run_name or datetime.now().strftime("%Y%m%d-%H%M%S"))
        run_dir.mkdir(parents=True, exist_ok=True)
    else:
        run_dir = None
    return Path(distributed.broadcast(str(run_dir)))


def _loader(dataset, sampler, cfg: RunConfig) -> DataLoader:
    return DataLoader(dataset, batch_size=cfg.batch_size, sampler=sampler, num_workers=cfg.num_workers,
                      persistent_workers=cfg.num_workers > 0)


def _has_unused_parameters(model: torch.nn.Module, bands: int, chip: int, device: torch.device) -> bool:
    """Whether some parameters get no gradient (e.g. encoder stages a shallow ``encoder_depth`` skips);
    DDP must then look for them each step. One probe forward in eval mode, so BatchNorm statistics stay as
    they are."""
    model.eval()
    size = max(32, min(chip, 64))
    model(torch.zeros(1, bands, size, size, device=device)).float().sum().backward()
    unused = any(p.requires_grad and p.grad is None for p in model.parameters())
    model.zero_grad(set_to_none=True)
    model.train()
    return unused


def _log_rank_chips(run_dir: Path, rank: int, epoch: int, sampler: RandomChipSampler) -> None:
    """Which chips this rank trains on this epoch (``chips/rank<N>.csv``), for checking the data split."""
    folder = run_dir / "chips"
    folder.mkdir(exist_ok=True)
    path = folder / f"rank{rank}.csv"
    lines = [] if path.exists() and epoch > 1 else ["epoch,scene,row,col,aug\n"]
    lines += [f"{epoch},{c.scene},{c.row},{c.col},{c.aug}\n" for c in sampler]
    with open(path, "a" if epoch > 1 else "w", encoding="utf-8") as fh:
        fh.write("".join(lines))



def _resume_state(path: str | Path, cfg: RunConfig) -> dict[str, Any]:
    """The training state of a run's ``last.ckpt``, checked against the config."""
    ckpt = load_checkpoint(path)
    if not ckpt.training_state:
        raise CheckpointError(f"{path} holds no training state (best.ckpt has none); resume from the run's "
                              "last.ckpt")
    try:
        model_fields.training_state(ckpt.training_state)
    except model_fields.ModelFieldError as exc:
        raise CheckpointError(f"{path} cannot be resumed: {exc}; resume from an intact last.ckpt") from None
    if ckpt.classes != cfg.classes:
        raise ConfigError(f"checkpoint {path} was trained on classes {', '.join(ckpt.classes.names)} but the "
                          f"config lists {', '.join(cfg.classes.names)}")
    if (ckpt.architecture, ckpt.model_config) != (cfg.model_architecture, cfg.model_config):
        raise ConfigError(f"checkpoint {path} is a {ckpt.architecture} {ckpt.model_config} but the config "
                          f"asks for a {cfg.model_architecture} {cfg.model_config}")
    return {**ckpt.training_state, "model": ckpt.state_dict}


def _rng_state() -> dict[str, Any]:
    np_state = np.random.get_state()
    return {"torch": torch.get_rng_state(), "python": random.getstate(),
            "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), *np_state[2:]]}


def _restore_rng(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(_tuples(state["python"]))
    n = state["numpy"]
    np.random.set_state((n[0], n[1].numpy().astype(np.uint32), *n[2:]))


def _tuples(v):
    return tuple(_tuples(x) for x in v) if isinstance(v, (list, tuple)) else v


@torch.no_grad()
def _validate(model, loader, loss_fn, device, amp, n_classes, n_samples, epoch=None, scenes=1, blend=None):
    """Loss sums, confusion matrix, sample chips and confusion matrix per scene [scenes, K, K] of one pass
    over the validation chips; ``blend`` (a :class:`~geoseg.training.blend.BlendSearch`) scores the blend
    with the baseline on the same pass."""
    model.eval()
    total, batches = 0.0, 0
    cm = np.zeros((n_classes, n_classes), np.int64)
    scene_cm = np.zeros((scenes, n_classes, n_classes), np.int64)
    if blend is not None:
        blend.start()
    images, truths, preds = [], [], []
    with bar(len(loader.sampler), "validate", unit="chip", epoch=epoch) as pbar:
        for batch in loader:
            x = batch["image"].to(device).contiguous(memory_format=torch.channels_last)
            y = batch["mask"].to(device)
            with torch.autocast(device.type, dtype=amp or torch.float32, enabled=amp is not None):
                logits = model(x)
            logits = logits.float()
            if (y != IGNORE_INDEX).any():
                value = float(loss_fn(logits, y))
                if math.isfinite(value):
                    total += value
                    batches += 1
            pred = logits.argmax(1)
            cm += confusion_matrix(y, pred, n_classes)
            for scene in batch["scene"].unique().tolist():
                at = (batch["scene"] == scene).to(y.device)
                scene_cm[scene] += confusion_matrix(y[at], pred[at], n_classes)
            if blend is not None:
                blend.add(logits, y)
            for k in range(min(len(x), n_samples - len(images))):
                images.append(batch["image"][k].numpy())
                truths.append(y[k].cpu().numpy().astype(np.uint8))
                preds.append(pred[k].cpu().numpy().astype(np.uint8))
            pbar.update(len(x))
    samples = (images, truths, preds) if images else None
    return np.array([total, batches], np.float64), cm, samples, scene_cm
