"""A training run's time budget (``--budget 15m``): the chips per epoch that fit, from the measured speed.

The clock starts when training is set up (scenes, labels, the baseline count against it). Before the first
step, a copy of the model trains a few steps on real chips and runs a validation batch, so the run itself
is untouched; from those speeds, the epochs' validation and the time already spent, :func:`plan_budget`
sets ``chips_per_epoch`` so that the configured ``epochs`` and their learning-rate schedule complete inside
the budget. After each epoch but the last, :func:`replan_chips` sets the later epochs' chips from the speed
that epoch really had. While training, :class:`Deadline` ends an epoch's steps early if the machine turns out
slower than measured (another process on the cores), leaving time for that epoch's validation and checkpoints.
"""

from __future__ import annotations

import copy
import math
import re
import time
from dataclasses import dataclass
from typing import Any, Callable

import torch

from geoseg.errors import ConfigError
from geoseg.training.step import training_step

_UNITS = {"h": 3600.0, "m": 60.0, "s": 1.0}
_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)\s*([hms])")

#: Share of the time left that steps are planned into (the rest absorbs noise in the measured speed): before
#: the first step, from a few probe steps, and after each epoch, from the epoch's real speed.
PLANNED_SHARE = 0.95
REPLANNED_SHARE = 0.98
#: The shortest budget accepted: less cannot hold loading the scenes, one probe and one epoch.
MINIMUM_SECONDS = 10.0
#: Below this share of the first plan's steps, the closing line says the run trained less than planned.
SHORTFALL_SHARE = 0.8
#: Seconds kept for the end of a run (the final checkpoint, logger shut-down).
FINAL_SECONDS = 0.5
#: Seconds an epoch's checkpoints and logs are planned to take, before the first epoch has shown it.
CHECKPOINT_SECONDS = 0.5


def parse_budget(value: Any, key: str = "budget") -> float | None:
    """Seconds from ``15m``, ``90s``, ``1h30m`` or ``2.5m``; None stays None. A number without a unit is
    refused rather than guessed (``3`` meant three minutes to the user who typed it, three seconds to a
    parser), and so is a budget too short to set up and train, before any set-up is spent on it."""
    if value is None:
        return None
    text = value.strip().lower().replace(" ", "") if isinstance(value, str) else ""
    parts = _PART.findall(text)
    if text and "".join(n + u for n, u in parts) == text:
        seconds = sum(float(n) * _UNITS[u] for n, u in parts)
    elif (number := _plain_number(value)) is not None:
        raise ConfigError(f"config key '{key}' needs a unit: {number:g}m, {number:g}h or {number:g}s? "
                          f"(got {value!r})")
    else:
        seconds = math.nan
    if not (math.isfinite(seconds) and seconds > 0):
        raise ConfigError(f"config key '{key}' must be a time such as 15m, 90s or 1h30m, got {value!r}")
    if seconds < MINIMUM_SECONDS:
        raise ConfigError(f"a {key} of {text} is too short to set up and train; give at "
                          f"least {format_seconds(MINIMUM_SECONDS)} (e.g. 15m)")
    return seconds


def _plain_number(value: Any) -> float | None:
    """``value`` as a positive finite number when it is one without a unit (``3``, ``"45"``), else None."""
    if isinstance(value, bool):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) and number > 0 else None


def format_seconds(seconds: float) -> str:
    """``15m``, ``1h30m``, ``42s``: how a budget is written back."""
    s = int(round(seconds))
    h, rest = divmod(s, 3600)
    m, sec = divmod(rest, 60)
    text = (f"{h}h" if h else "") + (f"{m}m" if m else "") + (f"{sec}s" if sec or not (h or m) else "")
    return text


@dataclass(frozen=True)
class Speeds:
    """Measured seconds per chip: a training step, a validation forward, and reading a chip."""

    train: float
    validate: float
    read: float


@dataclass(frozen=True)
class BudgetPlan:
    """What fits: ``chips_per_epoch`` training chips in each of ``epochs`` epochs."""

    seconds: float
    chips_per_epoch: int
    epochs: int
    batch_size: int
    speeds: Speeds
    epoch_overhead: float   # validation and checkpoints, seconds per epoch
    spent: float            # seconds gone before the first step (set-up, baseline, the probe)

    @property
    def steps(self) -> int:
        return self.epochs * math.ceil(self.chips_per_epoch / self.batch_size)

    def describe(self) -> str:
        return (f"budget {format_seconds(self.seconds)}: {self.chips_per_epoch} chips per epoch × "
                f"{self.epochs} epochs ({self.steps} steps of {self.batch_size}; measured "
                f"{1 / self.speeds.train:.2f} chips/s training, validation ~{self.epoch_overhead:.0f} s per "
                f"epoch, {self.spent:.0f} s of set-up)")


def closing_line(plan: BudgetPlan, elapsed: float, steps_done: int) -> str:
    """How a budgeted run ended: its time, and the steps it trained against those first planned, with the
    likely cause when far fewer were trained (a shared machine slows the run after its probe)."""
    line = (f"trained {steps_done} of the {plan.steps} steps first planned in {format_seconds(elapsed)} of "
            f"the {format_seconds(plan.seconds)} budget")
    if steps_done < SHORTFALL_SHARE * plan.steps:
        line += ("; the machine ran slower than the probe measured (another process on its cores?), so the "
                 "model saw fewer chips than planned: train again on a quieter machine or for longer")
    return line


def plan_budget(seconds: float, spent: float, speeds: Speeds, epochs: int, batch_size: int, val_chips: int,
                loader_workers: int) -> BudgetPlan:
    """The chips per epoch for which ``epochs`` epochs (training, validation, checkpoints) fit in the
    ``seconds`` left after ``spent``; a budget that set-up alone uses up is one sentence."""
    read = 0.0 if loader_workers > 0 else speeds.read  # loader processes read while the model runs
    overhead = val_chips * (speeds.validate + read) + CHECKPOINT_SECONDS
    left = (seconds - spent - FINAL_SECONDS - epochs * overhead) * PLANNED_SHARE
    per_epoch = left / epochs / (speeds.train + read)
    chips = int(per_epoch // batch_size * batch_size)
    if chips < batch_size:
        epoch_seconds = overhead + batch_size * (speeds.train + read)
        need = spent + FINAL_SECONDS + epochs * epoch_seconds / PLANNED_SHARE
        raise ConfigError(f"a budget of {format_seconds(seconds)} leaves no time to train: set-up took "
                          f"{spent:.0f} s and each of the {epochs} epochs needs at least "
                          f"{epoch_seconds:.0f} s; give at least "
                          f"{format_seconds(math.ceil(need))} or fewer epochs")
    return BudgetPlan(seconds, chips, epochs, batch_size, speeds, overhead, spent)


def replan_chips(seconds_left: float, seconds_per_chip: float, epoch_overhead: float, epochs_left: int,
                 batch_size: int) -> int:
    """The chips per epoch for the ``epochs_left`` epochs from the speed a run really had (its last epoch):
    at least one batch."""
    left = (seconds_left - FINAL_SECONDS - epochs_left * epoch_overhead) * REPLANNED_SHARE
    chips = int(left / epochs_left / seconds_per_chip // batch_size * batch_size)
    return max(batch_size, chips)


def checkpoint_seconds(model: torch.nn.Module) -> float:
    """About how long an epoch's logs and checkpoints take: ``best.ckpt`` and ``last.ckpt`` (weights, and
    Adam's two moments in the last) written at a few hundred MB/s."""
    weights = sum(p.numel() * p.element_size() for p in model.parameters())
    return 0.05 + 5 * weights / 400e6


def measure_speeds(model: torch.nn.Module, optimizer_factory: Callable, loss_fn: torch.nn.Module,
                   read_batch: Callable[[], dict[str, torch.Tensor]], device: torch.device,
                   amp: torch.dtype | None, steps: int = 3) -> Speeds:
    """Seconds per chip of training steps and validation forwards, on a copy of ``model`` (the run's model,
    optimizer and random state are left as they were), and of reading a chip (files already open, as they
    are after the first batch)."""
    rng = torch.get_rng_state()
    probe = copy.deepcopy(model).train()
    optimizer = optimizer_factory(probe.parameters())
    read_batch()
    t = time.perf_counter()
    batch = read_batch()
    n = len(batch["image"])
    read = (time.perf_counter() - t) / n
    x = batch["image"].to(device).contiguous(memory_format=torch.channels_last)
    y = batch["mask"].to(device)

    def step() -> None:
        training_step(probe, x, y, loss_fn, optimizer, amp)

    step()  # first-call set-up (allocations, kernel choice) is not the speed
    step()
    t = time.perf_counter()
    for _ in range(steps):
        step()
    train = (time.perf_counter() - t) / (steps * n)
    probe.eval()
    with torch.no_grad(), torch.autocast(device.type, dtype=amp or torch.float32, enabled=amp is not None):
        probe(x)
        t = time.perf_counter()
        probe(x).float().argmax(1)
        validate = (time.perf_counter() - t) / n
    torch.set_rng_state(rng)
    return Speeds(train, validate, read)


class Deadline:
    """When an epoch's training steps must stop so that it and the epochs after it fit in what is left."""

    def __init__(self, start: float, plan: BudgetPlan):
        self.end = start + plan.seconds - FINAL_SECONDS
        self.plan = plan
        self.overhead = plan.epoch_overhead

    def for_epoch(self, epoch: int, now: float) -> float:
        """The ``time.perf_counter()`` by which epoch ``epoch``'s steps end: an equal share of the time left
        for each epoch still to run, less this epoch's validation and checkpoints."""
        remaining = max(1, self.plan.epochs - epoch + 1)
        return now + (self.end - now) / remaining - self.overhead

    def measured(self, overhead: float) -> None:
        """An epoch's validation and checkpoints took ``overhead`` seconds: plan the next ones with it."""
        self.overhead = overhead
