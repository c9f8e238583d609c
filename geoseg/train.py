"""The training loop: chips → smp model → per-epoch confusion matrices, logs and checkpoints."""

from __future__ import annotations

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

from geoseg.classes import IGNORE_INDEX
from geoseg.config import RunConfig
from geoseg.data import (ChipDataset, GridChipSampler, RandomChipSampler, band_statistics, read_manifest,
                         scene_infos)
from geoseg.errors import ConfigError, GeoSegWarning
from geoseg.metrics import confusion_matrix, summarize
from geoseg.models import Checkpoint, autocast_dtype, build_model, default_device, save_checkpoint
from geoseg.progress import bar, say
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


def make_loss(cfg: RunConfig, device: torch.device) -> torch.nn.Module:
    """The configured loss; classes with a zero ``ce_weights`` entry or marked ignore are left out."""
    from segmentation_models_pytorch import losses

    evaluated = [i for i in range(len(cfg.classes)) if i not in cfg.ignored_indices]
    weight = torch.tensor(cfg.ce_weights, dtype=torch.float32, device=device) if cfg.ce_weights else None
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


def train(cfg: RunConfig, device: torch.device | None = None) -> TrainResult:
    """Train a model as configured; returns the run folder, checkpoints and per-epoch metrics."""
    seed_everything(cfg.seed)
    device = device or default_device()
    records = read_manifest(cfg.manifest_path)
    train_recs = [r for r in records if r.split == "train"]
    val_recs = [r for r in records if r.split == "val"]
    if not train_recs:
        raise ConfigError(f"manifest {cfg.manifest_path} lists no 'train' scenes")
    if not val_recs:
        warnings.warn("the manifest lists no 'val' scenes; validating on the training scenes", GeoSegWarning)
        val_recs = train_recs
    train_scenes = scene_infos(train_recs, cfg.bands, cfg.downsize_res)
    val_scenes = scene_infos(val_recs, cfg.bands, cfg.downsize_res)
    if cfg.model_config.get("encoder_weights") == "imagenet" and len(cfg.bands) == 3:
        mean, std = IMAGENET_MEAN, IMAGENET_STD
    else:
        mean, std = band_statistics(train_scenes, cfg.bands)

    model = build_model(cfg.model_architecture, cfg.model_config).to(device).to(memory_format=torch.channels_last)
    run_dir = _run_dir(cfg)
    ignored = cfg.ignored_indices
    evaluated = [i for i in range(len(cfg.classes)) if i not in ignored]
    train_ds = ChipDataset(train_scenes, cfg.classes, cfg.bands, cfg.chip_size, mean, std, ignored)
    val_ds = ChipDataset(val_scenes, cfg.classes, cfg.bands, cfg.chip_size, mean, std, ignored)
    train_sampler = RandomChipSampler(train_scenes, cfg.chip_size, cfg.chips_per_epoch, cfg.seed, cfg.augment)
    val_sampler = GridChipSampler(val_scenes, cfg.chip_size, cfg.val_chips)
    train_loader, val_loader = _loader(train_ds, train_sampler, cfg), _loader(val_ds, val_sampler, cfg)
    loss_fn = make_loss(cfg, device)
    optimizer = make_optimizer(cfg, model.parameters())
    amp = autocast_dtype(device, cfg.precision)
    resolution = abs(train_scenes[0].grid.transform.a) * train_scenes[0].scale

    local = LocalLog(run_dir)
    wb = WandbLog(run_dir, run_dir.name, cfg.to_dict()) if cfg.logger == "wandb" else None
    say(f"run folder {run_dir}  ({len(train_scenes)} train / {len(val_scenes)} val scenes, "
        f"{cfg.chips_per_epoch} train + {len(val_sampler)} val chips of {cfg.chip_size} px per epoch, "
        f"precision {'bf16' if amp else 'fp32'}, device {device.type})")

    def checkpoint(epoch: int, metrics: dict[str, Any], with_state: bool) -> Checkpoint:
        state = {"optimizer": optimizer.state_dict(), "epoch": epoch} if with_state else None
        return Checkpoint(cfg.model_architecture, dict(cfg.model_config), model.state_dict(), cfg.classes,
                          list(cfg.bands), list(mean), list(std), cfg.chip_size, resolution, cfg.to_dict(),
                          epoch, metrics, state)

    history: list[dict[str, Any]] = []
    best_miou, step = -1.0, 0
    best_path, last_path = run_dir / "best.ckpt", run_dir / "last.ckpt"
    for epoch in range(1, cfg.epochs + 1):
        train_sampler.set_epoch(epoch)
        t0 = time.perf_counter()
        train_loss, train_cm, step = _train_epoch(model, train_loader, loss_fn, optimizer, device, amp, len(cfg.classes),
                                                  epoch, cfg.epochs, wb, step)
        t1 = time.perf_counter()
        val_loss, val_cm, samples = _validate(model, val_loader, loss_fn, device, amp, len(cfg.classes),
                                              cfg.sample_images)
        t2 = time.perf_counter()
        tr = summarize(train_cm, cfg.classes.names, evaluated)
        va = summarize(val_cm, cfg.classes.names, evaluated)
        row = {"epoch": epoch, "step": step, "train_loss": train_loss, "val_loss": val_loss,
               **{f"train_{k}": v for k, v in tr.items()}, **{f"val_{k}": v for k, v in va.items()},
               "lr": optimizer.param_groups[0]["lr"],
               "train_chips_per_s": len(train_sampler) / (t1 - t0), "val_chips_per_s": len(val_sampler) / (t2 - t1)}
        history.append(row)
        local.log_epoch(row)
        if samples:
            (run_dir / "samples").mkdir(exist_ok=True)
            panel = sample_panel(*samples, cfg.classes.colors, mean, std, run_dir / "samples" / f"epoch_{epoch:03d}.png")
            if wb:
                wb.log_image("val/samples", panel, step=step)
        if wb:
            wb.log({f"epoch/{k}": v for k, v in row.items()}, step=step)
        save_checkpoint(checkpoint(epoch, row, with_state=True), last_path)
        if not math.isnan(va["miou"]) and va["miou"] > best_miou:
            best_miou = va["miou"]
            save_checkpoint(checkpoint(epoch, row, with_state=False), best_path)
        say(f"epoch {epoch}/{cfg.epochs}  loss {train_loss:.3f}/{val_loss:.3f}  "
            f"mIoU train {tr['miou']:.3f} val {va['miou']:.3f}  "
            f"({row['train_chips_per_s']:.1f} / {row['val_chips_per_s']:.1f} chips/s)")
    if not best_path.exists():
        save_checkpoint(checkpoint(cfg.epochs, history[-1], with_state=False), best_path)
    if wb:
        wb.finish()
    record_latest(best_path)
    return TrainResult(run_dir, best_path, last_path, history)


def _train_epoch(model, loader, loss_fn, optimizer, device, amp, n_classes, epoch, epochs, wb, step):
    model.train()
    total, batches = 0.0, 0
    cm = np.zeros((n_classes, n_classes), np.int64)
    ema = None
    with bar(len(loader.sampler), f"train {epoch}/{epochs}", unit="chip") as pbar:
        for batch in loader:
            x = batch["image"].to(device, non_blocking=True).contiguous(memory_format=torch.channels_last)
            y = batch["mask"].to(device, non_blocking=True)
            with torch.autocast(device.type, dtype=amp or torch.float32, enabled=amp is not None):
                logits = model(x)
            loss = loss_fn(logits.float(), y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            value = float(loss.detach())
            if math.isfinite(value):
                total += value
                batches += 1
            ema = value if ema is None else 0.9 * ema + 0.1 * value
            cm += confusion_matrix(y, logits.detach().argmax(1), n_classes)
            step += 1
            if wb:
                wb.log({"train/batch_loss": value, "train/loss_ema": ema}, step=step)
            pbar.set_postfix(loss=f"{ema:.3f}")
            pbar.update(len(x))
    return total / max(batches, 1), cm, step


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
    return (total / batches if batches else float("nan")), cm, samples
