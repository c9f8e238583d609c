"""Learning-rate range test (Smith, 2017) of a pipeline's model on its own training chips.

The learning rate grows exponentially from ``--low`` to ``--high`` over ``--steps`` optimizer steps of the
config's model, optimizer, loss, batch and chips (no schedule); prints the smoothed loss every half decade
and the rate where it fell fastest and where it was lowest. A good constant or peak rate lies a little below
the lowest-loss rate; far beyond it the loss diverges.

    python -m tests.benchmarks.bench_lr_range --config pipelines/korea_s2/cpu.yaml --steps 150
"""

from __future__ import annotations

import argparse
import math
import tempfile
from dataclasses import replace

import torch

from geoseg.training.config import load_config
from geoseg.training.trainer import Trainer
from tests.benchmarks.bench_train_step import cpu_name


def lr_range(trainer: Trainer, low: float, high: float, steps: int) -> list[tuple[float, float]]:
    """(learning rate, smoothed loss) for each step, stopping once the loss is 4× its lowest."""
    model, device = trainer.model.train(), trainer.device
    optimizer = trainer.optimizer
    growth = (high / low) ** (1 / max(steps - 1, 1))
    smoothed, best, rows = 0.0, math.inf, []
    batches = iter(trainer.train_loader)
    for i in range(steps):
        lr = low * growth ** i
        for group in optimizer.param_groups:
            group["lr"] = lr
        batch = next(batches)
        x = batch["image"].to(device).contiguous(memory_format=torch.channels_last)
        with torch.autocast(device.type, dtype=trainer.amp or torch.float32, enabled=trainer.amp is not None):
            logits = model(x)  # as training runs it: bf16 autocast where the run would use it
        loss = trainer.loss_fn(logits.float(), batch["mask"].to(device))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        smoothed = 0.9 * smoothed + 0.1 * loss.item()
        value = smoothed / (1 - 0.9 ** (i + 1))  # bias-corrected moving average
        rows.append((lr, value))
        best = min(best, value)
        if value > 4 * best:
            break
    return rows


def steepest(rows: list[tuple[float, float]], span: int = 10) -> float:
    """The rate where the smoothed loss fell most per log-decade of rate, over ``span`` steps."""
    slopes = [((rows[i + span][1] - rows[i][1]) / math.log10(rows[i + span][0] / rows[i][0]), rows[i][0])
              for i in range(len(rows) - span)]
    return min(slopes)[1] if slopes else rows[0][0]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="pipelines/sample.yaml")
    parser.add_argument("--low", type=float, default=1e-5)
    parser.add_argument("--high", type=float, default=1e-1)
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--set", dest="settings", action="append", default=[], metavar="KEY=VALUE")
    args = parser.parse_args(argv)
    cfg = load_config(args.config, {"baseline": False, "logger": "csv", "budget": None,
                                    "output_dir": tempfile.mkdtemp()}, args.settings)
    cfg = replace(cfg, chips_per_epoch=args.steps * cfg.batch_size)
    trainer = Trainer(cfg).setup()
    print(cpu_name(), f"{cfg.model_config['encoder_name']}, {cfg.optimizer}, {cfg.loss_fn}, "
          f"{cfg.chip_size} px, batch {cfg.batch_size}, rates {args.low:g}–{args.high:g} over "
          f"{args.steps} steps")
    rows = lr_range(trainer, args.low, args.high, args.steps)
    decade = math.floor(math.log10(rows[0][0]))
    for lr, loss in rows:
        if math.log10(lr) >= decade:
            print(f"lr {lr:9.2e}  smoothed loss {loss:.3f}")
            decade += 0.5
    lowest = min(rows, key=lambda r: r[1])
    print(f"steepest descent at lr {steepest(rows):.2e}; lowest loss {lowest[1]:.3f} at lr {lowest[0]:.2e}; "
          f"{'diverged' if len(rows) < args.steps else 'did not diverge'} by lr {rows[-1][0]:.2e}")


if __name__ == "__main__":
    main()
