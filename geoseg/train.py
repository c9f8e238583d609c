"""The training loop: chips → smp model → per-epoch confusion matrices, logs and checkpoints."""

from __future__ import annotations

import json
import math
import random
import time
import warnings
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader

from geoseg import distributed
from geoseg.atomic import atomic_write_text
from geoseg.classes import IGNORE_INDEX
from geoseg.config import RunConfig, parse_config
from geoseg.data import (ChipDataset, GridChipSampler, RandomChipSampler, band_statistics, class_cell_counts,
                         median_frequency_weights, read_records, scene_infos, tiled_copies)
from geoseg.errors import CheckpointError, ConfigError, GeoSegWarning
from geoseg.metrics import confusion_matrix, summarize
from geoseg.models import (Checkpoint, autocast_dtype, build_model, default_device, load_checkpoint,
                           save_checkpoint)
from geoseg.progress import bar, say, set_quiet
from geoseg.registry import record_latest
from geoseg.tracking import LocalLog, WandbLog, sample_panel

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
        return max((r["val_miou"] for r in self.history if not math.isnan(r["val_miou"])), default=float("nan"))


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def make_loss(cfg: RunConfig, device: torch.device, class_weights: list[float] | None = None) -> torch.nn.Module:
    """The configured loss; classes with a zero weight or marked ignore are left out."""
    from segmentation_models_pytorch import losses

    evaluated = [i for i in range(len(cfg.classes)) if i not in cfg.ignored_indices]
    weights = class_weights if class_weights is not None else (cfg.ce_weights if isinstance(cfg.ce_weights, list)
                                                              else None)
    weight = torch.tensor(weights, dtype=torch.float32, device=device) if weights else None
    ce = torch.nn.CrossEntropyLoss(weight=weight, ignore_index=IGNORE_INDEX)
    if cfg.loss_fn == "CrossEntropyLoss":
        return ce
    if cfg.loss_fn == "DiceLoss":
        return losses.DiceLoss("multiclass", classes=evaluated, ignore_index=IGNORE_INDEX)
    if cfg.loss_fn == "FocalLoss":
        return losses.FocalLoss("multiclass", ignore_index=IGNORE_INDEX)
    if cfg.loss_fn == "LovaszLoss":
        return losses.LovaszLoss("multiclass", ignore_index=IGNORE_INDEX)
    dice = losses.DiceLoss("multiclass", classes=evaluated, ignore_index=IGNORE_INDEX)
    return _Sum(ce, dice)


class _Sum(torch.nn.Module):
    def __init__(self, *parts: torch.nn.Module):
        super().__init__()
        self.parts = torch.nn.ModuleList(parts)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return sum(p(logits, target) for p in self.parts)


def make_optimizer(cfg: RunConfig, params) -> torch.optim.Optimizer:
    if cfg.optimizer == "Adam":
        return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "AdamW":
        return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    return torch.optim.SGD(params, lr=cfg.lr, momentum=0.9, weight_decay=cfg.weight_decay)


def _loader(dataset, sampler, cfg: RunConfig) -> DataLoader:
    return DataLoader(dataset, batch_size=cfg.batch_size, sampler=sampler, num_workers=cfg.num_workers,
                      persistent_workers=cfg.num_workers > 0)


def _run_dir(cfg: RunConfig) -> Path:
    name = cfg.run_name or datetime.now().strftime("%Y%m%d-%H%M%S")
    run_dir = cfg.output_path / name
    run_dir.mkdir(parents=True, exist_ok=True)
    return run_dir


def make_scheduler(cfg: RunConfig, optimizer: torch.optim.Optimizer, steps_per_epoch: int):
    """The configured LR schedule: cosine and one-cycle step per batch, plateau per epoch on val mIoU."""
    total = max(1, cfg.epochs * steps_per_epoch)
    if cfg.lr_schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=total)
    if cfg.lr_schedule == "onecycle":
        return torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=cfg.lr, total_steps=total)
    if cfg.lr_schedule == "plateau":
        return torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, mode="max", factor=0.5, patience=2)
    return None


def class_weights_for(cfg: RunConfig, scenes, run_dir: Path | None) -> tuple[list[float] | None, list | None,
                                                                            np.ndarray | None]:
    """Label statistics when ``ce_weights: auto`` or rare-class sampling needs them: the loss weights (for
    ``auto``), the per-cell class counts and the median-frequency weights."""
    if cfg.ce_weights != "auto" and not cfg.rare_class_sampling:
        return None, None, None
    counts = class_cell_counts(scenes, cfg.classes, cfg.chip_size, cfg.ignored_indices,
                               cache_dir=cfg.output_path / ".cache")
    mfb = median_frequency_weights(counts, cfg.ignored_indices)
    pixels = sum(c.reshape(-1, c.shape[-1]).sum(axis=0) for c in counts)
    share = pixels / max(1, pixels.sum())
    report = {name: {"share": float(share[i]), "median_frequency_weight": float(mfb[i])}
              for i, name in enumerate(cfg.classes.names)}
    if run_dir is not None:
        atomic_write_text(run_dir / "class_weights.json", json.dumps(report, indent=1))
    say("class shares / median-frequency weights: " + ", ".join(
        f"{n} {v['share']:.1%}/{v['median_frequency_weight']:.2f}" for n, v in report.items()))
    return (mfb.tolist() if cfg.ce_weights == "auto" else None), counts, mfb


def train(cfg: RunConfig, device: torch.device | None = None, resume: str | Path | None = None,
          until_epoch: int | None = None) -> TrainResult:
    """Train a model as configured; returns the run folder, checkpoints and per-epoch metrics.

    ``resume`` (a run's ``last.ckpt``) continues that run exactly: model,
    optimizer, schedule, epoch, random state and logger run. ``until_epoch``
    stops after that epoch, to be resumed later (e.g. a time-limited job).
    """
    state = _resume_state(resume, cfg) if resume else None
    seed_everything(cfg.seed)
    rank, world, device = distributed.setup(device or default_device())  # torchrun: one process per rank
    main = rank == 0
    if not main:
        set_quiet(True)  # rank 0 reports, logs and writes checkpoints
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
    train_scenes, val_scenes = scenes[:len(train_recs)], scenes[len(train_recs):]
    if state:
        mean, std = state["mean"], state["std"]
    elif cfg.model_config.get("encoder_weights") == "imagenet" and len(cfg.bands) == 3:
        mean, std = IMAGENET_MEAN, IMAGENET_STD
    else:
        mean, std = band_statistics(train_scenes, cfg.bands)

    model = build_model(cfg.model_architecture, cfg.model_config, pretrained=state is None)
    model = model.to(device).to(memory_format=torch.channels_last)
    run_dir = Path(resume).resolve().parent if resume else (_run_dir(cfg) if main else None)
    run_dir = Path(distributed.broadcast(str(run_dir)))
    ignored = cfg.ignored_indices
    evaluated = [i for i in range(len(cfg.classes)) if i not in ignored]
    weights, counts, rarity = class_weights_for(cfg, train_scenes, run_dir if main else None)
    train_ds = ChipDataset(train_scenes, cfg.classes, cfg.bands, cfg.chip_size, mean, std, ignored)
    val_ds = ChipDataset(val_scenes, cfg.classes, cfg.bands, cfg.chip_size, mean, std, ignored)
    train_sampler = RandomChipSampler(train_scenes, cfg.chip_size, cfg.chips_per_epoch, cfg.seed, cfg.augment,
                                      cfg.rare_class_sampling, counts, rarity, rank, world)
    val_sampler = GridChipSampler(val_scenes, cfg.chip_size, cfg.val_chips, rank, world)
    train_loader, val_loader = _loader(train_ds, train_sampler, cfg), _loader(val_ds, val_sampler, cfg)
    loss_fn = make_loss(cfg, device, weights)
    optimizer = make_optimizer(cfg, model.parameters())
    scheduler = make_scheduler(cfg, optimizer, len(train_loader))
    amp = autocast_dtype(device, cfg.precision)
    scaler = torch.amp.GradScaler(device.type) if amp == torch.float16 else None  # fp16 on older GPUs
    georeferenced = train_scenes[0].grid.crs is not None
    resolution = (abs(train_scenes[0].grid.transform.a) * train_scenes[0].scale) if georeferenced else None

    history: list[dict[str, Any]] = []
    best_miou, step, first_epoch, stale = -1.0, 0, 1, 0
    wandb_id = None
    if state:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        if scheduler is not None and state.get("scheduler"):
            scheduler.load_state_dict(state["scheduler"])
        if scaler is not None and state.get("scaler"):
            scaler.load_state_dict(state["scaler"])
        history = list(state["history"])
        best_miou, step, stale = state["best_miou"], state["step"], state["stale"]
        first_epoch = state["epoch"] + 1
        wandb_id = state.get("wandb_id")
        _restore_rng(state["rng"])
    net = model
    if world > 1:
        net = torch.nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda"
                                                        else None, find_unused_parameters=_has_unused_parameters(
                                                            model, len(cfg.bands), cfg.chip_size, device))
    local = LocalLog(run_dir, history, step) if main else None
    wb = WandbLog(run_dir, run_dir.name, cfg.to_dict(), run_id=wandb_id) if cfg.logger == "wandb" and main else None
    say(f"run folder {run_dir}  ({len(train_scenes)} train / {len(val_scenes)} val scenes, "
        f"{cfg.chips_per_epoch} train + {len(val_sampler.all_specs)} val chips of {cfg.chip_size} px per epoch, "
        f"precision {'bf16' if amp else 'fp32'}, device {device.type}"
        + (f", {world} processes" if world > 1 else "") + ")"
        + (f"; resuming after epoch {first_epoch - 1}" if state else ""))

    def checkpoint(epoch: int, metrics: dict[str, Any], with_state: bool) -> Checkpoint:
        training_state = None
        if with_state:
            training_state = {
                "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict() if scheduler else None,
                "epoch": epoch, "step": step, "best_miou": best_miou, "stale": stale, "history": history,
                "rng": _rng_state(), "wandb_id": wb.run.id if wb else None, "mean": list(mean), "std": list(std),
                "scaler": scaler.state_dict() if scaler else None,
            }
        return Checkpoint(cfg.model_architecture, dict(cfg.model_config), model.state_dict(), cfg.classes,
                          list(cfg.bands), list(mean), list(std), cfg.chip_size, resolution,
                          {**cfg.to_dict(), "base_dir": str(cfg.base_dir)}, epoch, metrics, training_state)

    best_path, last_path = run_dir / "best.ckpt", run_dir / "last.ckpt"
    for epoch in range(first_epoch, min(cfg.epochs, until_epoch or cfg.epochs) + 1):
        train_sampler.set_epoch(epoch)
        t0 = time.perf_counter()
        if world > 1:
            _log_rank_chips(run_dir, rank, epoch, train_sampler)
        train_sums, train_cm, step, steps = _train_epoch(net, train_loader, loss_fn, optimizer, scheduler, device,
                                                         amp, len(cfg.classes), epoch, cfg.epochs, step, scaler)
        t1 = time.perf_counter()
        keep_samples = cfg.sample_images if main and (epoch % cfg.sample_every == 0 or epoch == cfg.epochs) else 0
        val_sums, val_cm, samples = _validate(model, val_loader, loss_fn, device, amp, len(cfg.classes), keep_samples)
        t2 = time.perf_counter()
        # every rank saw its own chips: sum confusion matrices and losses, then score (never average IoUs)
        train_cm, val_cm = distributed.all_sum(train_cm), distributed.all_sum(val_cm)
        train_sums, val_sums = distributed.all_sum(train_sums), distributed.all_sum(val_sums)
        train_loss = float(train_sums[0] / max(train_sums[1], 1))
        val_loss = float(val_sums[0] / val_sums[1]) if val_sums[1] else float("nan")
        tr = summarize(train_cm, cfg.classes.names, evaluated)
        va = summarize(val_cm, cfg.classes.names, evaluated)
        if isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
            scheduler.step(0.0 if math.isnan(va["miou"]) else va["miou"])
        row = {"epoch": epoch, "step": step, "train_loss": train_loss, "val_loss": val_loss,
               **{f"train_{k}": v for k, v in tr.items()}, **{f"val_{k}": v for k, v in va.items()},
               "lr": optimizer.param_groups[0]["lr"],
               "train_chips_per_s": len(train_sampler) * world / (t1 - t0),
               "val_chips_per_s": len(val_sampler.all_specs) / (t2 - t1), "val_seconds": t2 - t1,
               "val_confusion": val_cm.tolist()}
        t3 = time.perf_counter()
        if samples:
            (run_dir / "samples").mkdir(exist_ok=True)
            panel = sample_panel(*samples, cfg.classes.colors, mean, std, run_dir / "samples" / f"epoch_{epoch:03d}.png")
            if wb:
                wb.log_image("val/samples", panel, step=step)
        row["image_logging_seconds"] = time.perf_counter() - t3
        history.append(row)
        if local:
            local.log_steps(steps)
            local.log_epoch(row)
        if wb:
            for s_row in steps:
                wb.log({"train/batch_loss": s_row["batch_loss"], "train/loss_ema": s_row["loss_ema"],
                        "train/lr": s_row["lr"]}, step=s_row["step"])
            wb.log({f"epoch/{k}": v for k, v in row.items() if k != "val_confusion"}, step=step)
        improved = not math.isnan(va["miou"]) and va["miou"] > best_miou
        if improved:
            best_miou, stale = va["miou"], 0
            if main:
                save_checkpoint(checkpoint(epoch, row, with_state=False), best_path)
        else:
            stale += 1
        if main:
            save_checkpoint(checkpoint(epoch, row, with_state=True), last_path)
        say(f"epoch {epoch}/{cfg.epochs}  loss {train_loss:.3f}/{val_loss:.3f}  "
            f"mIoU train {tr['miou']:.3f} val {va['miou']:.3f}  lr {row['lr']:.2g}  "
            f"({row['train_chips_per_s']:.1f} / {row['val_chips_per_s']:.1f} chips/s)")
        if cfg.early_stopping and stale >= cfg.early_stopping:
            say(f"early stopping: val mIoU has not improved for {stale} epochs (best {best_miou:.3f})")
            break
    if main and not best_path.exists():
        save_checkpoint(checkpoint(len(history), history[-1], with_state=False), best_path)
    if wb:
        wb.finish()
    if main:
        record_latest(best_path)
    if world > 1:
        distributed.barrier()
        distributed.teardown()
    return TrainResult(run_dir, best_path, last_path, history)


def _has_unused_parameters(model: torch.nn.Module, bands: int, chip: int, device: torch.device) -> bool:
    """Whether some parameters get no gradient (e.g. encoder stages a shallow ``encoder_depth`` skips);
    DDP must then look for them each step. One probe forward in eval mode, so BatchNorm statistics stay as they are."""
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


def config_from_checkpoint(path: str | Path, overrides: dict[str, Any] | None = None) -> RunConfig:
    """The run config stored in a checkpoint (relative paths resolve as they did for that run)."""
    raw = dict(load_checkpoint(path).train_config)
    base = raw.pop("base_dir", None)
    raw.update(overrides or {})
    return parse_config(raw, Path(base) if base else None, source=f"the config stored in {path}")


def _resume_state(path: str | Path, cfg: RunConfig) -> dict[str, Any]:
    """The training state of a run's ``last.ckpt``, checked against the config."""
    ckpt = load_checkpoint(path)
    if not ckpt.training_state:
        raise CheckpointError(f"{path} holds no training state (best.ckpt has none); resume from the run's last.ckpt")
    if ckpt.classes != cfg.classes:
        raise ConfigError(f"checkpoint {path} was trained on classes {', '.join(ckpt.classes.names)} but the config "
                          f"lists {', '.join(cfg.classes.names)}")
    if (ckpt.architecture, ckpt.model_config) != (cfg.model_architecture, cfg.model_config):
        raise ConfigError(f"checkpoint {path} is a {ckpt.architecture} {ckpt.model_config} but the config asks for "
                          f"a {cfg.model_architecture} {cfg.model_config}")
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


def _train_epoch(model, loader, loss_fn, optimizer, scheduler, device, amp, n_classes, epoch, epochs, step,
                 scaler=None):
    """One pass over the sampler's chips; returns mean loss, confusion matrix, step and per-step rows."""
    model.train()
    total, batches = 0.0, 0
    cm = np.zeros((n_classes, n_classes), np.int64)
    ema = None
    steps = []
    per_batch = scheduler is not None and not isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau)
    with bar(len(loader.sampler), f"train {epoch}/{epochs}", unit="chip") as pbar:
        for batch in loader:
            x = batch["image"].to(device, non_blocking=True).contiguous(memory_format=torch.channels_last)
            y = batch["mask"].to(device, non_blocking=True)
            with torch.autocast(device.type, dtype=amp or torch.float32, enabled=amp is not None):
                logits = model(x)
            loss = loss_fn(logits.float(), y)
            optimizer.zero_grad(set_to_none=True)
            if scaler is not None:  # fp16: scale the loss so small gradients survive
                scaler.scale(loss).backward()
                scaler.step(optimizer)
                scaler.update()
            else:
                loss.backward()
                optimizer.step()
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
    return np.array([total, batches], np.float64), cm, step, steps


@torch.no_grad()
def _validate(model, loader, loss_fn, device, amp, n_classes, n_samples):
    model.eval()
    total, batches = 0.0, 0
    cm = np.zeros((n_classes, n_classes), np.int64)
    images, truths, preds = [], [], []
    with bar(len(loader.sampler), "validate", unit="chip") as pbar:
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
            for k in range(min(len(x), n_samples - len(images))):
                images.append(batch["image"][k].numpy())
                truths.append(y[k].cpu().numpy().astype(np.uint8))
                preds.append(pred[k].cpu().numpy().astype(np.uint8))
            pbar.update(len(x))
    samples = (images, truths, preds) if images else None
    return np.array([total, batches], np.float64), cm, samples
