"""What a run optimises and how: the loss, the optimizer and the learning-rate schedule, each chosen by name
from one table that config validation and construction share."""

from __future__ import annotations

from typing import Callable, Sequence

import torch

from geoseg.errors import ConfigError
from geoseg.io.classes import IGNORE_INDEX


class SumOfLosses(torch.nn.Module):
    """The sum of several losses of the same logits and target."""

    def __init__(self, *parts: torch.nn.Module):
        super().__init__()
        self.parts = torch.nn.ModuleList(parts)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return sum(p(logits, target) for p in self.parts)


def _cross_entropy(weight: torch.Tensor | None, evaluated: Sequence[int]) -> torch.nn.Module:
    return torch.nn.CrossEntropyLoss(weight=weight, ignore_index=IGNORE_INDEX)


def _dice(weight: torch.Tensor | None, evaluated: Sequence[int]) -> torch.nn.Module:
    from segmentation_models_pytorch import losses
    return losses.DiceLoss("multiclass", classes=list(evaluated), ignore_index=IGNORE_INDEX)


def _focal(weight: torch.Tensor | None, evaluated: Sequence[int]) -> torch.nn.Module:
    from segmentation_models_pytorch import losses
    return losses.FocalLoss("multiclass", ignore_index=IGNORE_INDEX)


def _lovasz(weight: torch.Tensor | None, evaluated: Sequence[int]) -> torch.nn.Module:
    from segmentation_models_pytorch import losses
    return losses.LovaszLoss("multiclass", ignore_index=IGNORE_INDEX)


def _cross_entropy_and_dice(weight: torch.Tensor | None, evaluated: Sequence[int]) -> torch.nn.Module:
    return SumOfLosses(_cross_entropy(weight, evaluated), _dice(weight, evaluated))


#: Losses by config name: (class weights or None, evaluated class indices) → loss module.
LOSSES: dict[str, Callable[[torch.Tensor | None, Sequence[int]], torch.nn.Module]] = {
    "CrossEntropyLoss": _cross_entropy, "DiceLoss": _dice, "FocalLoss": _focal, "LovaszLoss": _lovasz,
    "CE+Dice": _cross_entropy_and_dice,
}

def _fused(optimizer: type[torch.optim.Optimizer], params, **kwargs) -> torch.optim.Optimizer:
    """``optimizer`` with its fused kernel where torch has one for these parameters' device (CPU since torch
    2.4: several times faster a step, the same values), else its default."""
    params = list(params)
    try:
        return optimizer(params, fused=True, **kwargs)
    except (RuntimeError, TypeError, ValueError):
        return optimizer(params, **kwargs)


#: Optimizers by config name: (parameters, learning rate, weight decay) → optimizer.
OPTIMIZERS: dict[str, Callable[..., torch.optim.Optimizer]] = {
    "Adam": lambda params, lr, decay: _fused(torch.optim.Adam, params, lr=lr, weight_decay=decay),
    "AdamW": lambda params, lr, decay: _fused(torch.optim.AdamW, params, lr=lr, weight_decay=decay),
    "SGD": lambda params, lr, decay: torch.optim.SGD(params, lr=lr, momentum=0.9, weight_decay=decay),
}

#: Learning-rate schedules by config name: (optimizer, peak lr, total steps) → scheduler or None.
#: ``cosine`` and ``onecycle`` step per batch, ``plateau`` per epoch on the validation mIoU.
SCHEDULES: dict[str, Callable[..., object]] = {
    "none": lambda optimizer, lr, total: None,
    "cosine": lambda optimizer, lr, total: torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=total),
    "onecycle": lambda optimizer, lr, total: torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=lr, total_steps=total),
    "plateau": lambda optimizer, lr, total: torch.optim.lr_scheduler.ReduceLROnPlateau(
        optimizer, mode="max", factor=0.5, patience=2),
}


def lookup(table: dict[str, Callable], key: str, name: str) -> Callable:
    """``table[name]``, or a :class:`ConfigError` that names config key ``key`` and the valid names."""
    try:
        return table[name]
    except (KeyError, TypeError):
        raise ConfigError(f"config key '{key}' must be one of {', '.join(table)}, got {name!r}") from None


def make_loss(name: str, class_weights: Sequence[float] | None, evaluated: Sequence[int],
              device: torch.device) -> torch.nn.Module:
    """The loss ``name``; classes outside ``evaluated`` (ignored) never count."""
    weight = torch.tensor(class_weights, dtype=torch.float32, device=device) if class_weights else None
    return lookup(LOSSES, "loss_fn", name)(weight, evaluated)


def make_optimizer(name: str, params, lr: float, weight_decay: float) -> torch.optim.Optimizer:
    return lookup(OPTIMIZERS, "optimizer", name)(params, lr, weight_decay)


def make_schedule(name: str, optimizer: torch.optim.Optimizer, lr: float, total_steps: int):
    """The schedule ``name`` over ``total_steps`` batches (None for 'none')."""
    return lookup(SCHEDULES, "lr_schedule", name)(optimizer, lr, max(1, total_steps))


def retarget_schedule(scheduler, total_steps: int) -> None:
    """Make a per-step schedule end after ``total_steps`` instead (a budget re-planned once the real speed
    is known). Cosine continues its decay from the current rate to zero at the new end; one-cycle moves its
    phase ends (a warm-up still under way ends at the same share of the new total)."""
    total = max(1, int(total_steps))
    if isinstance(scheduler, torch.optim.lr_scheduler.CosineAnnealingLR):
        scheduler.T_max = total
    elif isinstance(scheduler, torch.optim.lr_scheduler.OneCycleLR):
        first, last = scheduler._schedule_phases[0], scheduler._schedule_phases[-1]
        if scheduler.last_epoch < first["end_step"]:
            first["end_step"] = float((first["end_step"] + 1) / scheduler.total_steps * total) - 1
        scheduler.total_steps = total
        last["end_step"] = total - 1


def steps_per_batch(scheduler) -> bool:
    """Whether ``scheduler`` steps after every batch (else once per epoch on the validation mIoU)."""
    return scheduler is not None and not isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau)
