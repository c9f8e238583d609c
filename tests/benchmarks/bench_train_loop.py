"""The training loop against the raw training step: what reading chips, loader processes and bookkeeping cost.

One process, one model: the raw step (forward, backward, optimizer step on one batch already in memory) and
the real loop (``geoseg.training.trainer``'s epoch over the sampler's chips through the DataLoader)
alternate, for ``num_workers`` 0 and 1; medians of chips/s and the loop's share of the raw speed.

    python -m tests.benchmarks.bench_train_loop --config pipelines/sample.yaml --chips 48 --repeats 3
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from dataclasses import replace

import torch

from geoseg.training.config import load_config
from geoseg.training.trainer import Trainer, _loader
from tests.benchmarks.bench_train_step import cpu_name


def raw_chips_per_second(trainer: Trainer, batch: dict, steps: int) -> float:
    model, device = trainer.model.train(), trainer.device
    x = batch["image"].to(device).contiguous(memory_format=torch.channels_last)
    y = batch["mask"].to(device)
    t = time.perf_counter()
    for _ in range(steps):
        with torch.autocast(device.type, dtype=trainer.amp or torch.float32, enabled=trainer.amp is not None):
            logits = model(x)
        loss = trainer.loss_fn(logits.float(), y)
        trainer.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        trainer.optimizer.step()
    return steps * len(x) / (time.perf_counter() - t)


def loop_chips_per_second(trainer: Trainer, loader) -> float:
    t = time.perf_counter()
    trainer.train_loader, trainer.scheduler = loader, None
    trainer.train_epoch(1)
    return len(loader.sampler) / (time.perf_counter() - t)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="pipelines/sample.yaml")
    parser.add_argument("--chips", type=int, default=48, help="chips per loop pass")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--set", dest="settings", action="append", default=[], metavar="KEY=VALUE")
    args = parser.parse_args(argv)
    cfg = load_config(args.config, {"chips_per_epoch": args.chips, "baseline": False, "logger": "csv",
                                    "budget": None, "output_dir": tempfile.mkdtemp()}, args.settings)
    trainer = Trainer(cfg).setup()
    print(cpu_name(), f"precision {'bf16' if trainer.amp else 'fp32'}, {cfg.model_config['encoder_name']}, "
          f"{cfg.chip_size} px, batch {cfg.batch_size}")
    loaders = {n: _loader(trainer.train_ds, trainer.train_sampler, replace(cfg, num_workers=n))
               for n in (0, 1)}
    batch = next(iter(loaders[0]))
    raw_chips_per_second(trainer, batch, 1)  # first-call set-up
    speeds: dict[str, list[float]] = {"raw step": [], "loop, num_workers 0": [], "loop, num_workers 1": []}
    steps = max(1, args.chips // cfg.batch_size)
    for _ in range(args.repeats):
        speeds["raw step"].append(raw_chips_per_second(trainer, batch, steps))
        for n, loader in loaders.items():
            speeds[f"loop, num_workers {n}"].append(loop_chips_per_second(trainer, loader))
    raw = statistics.median(speeds["raw step"])
    for name, values in speeds.items():
        m = statistics.median(values)
        print(f"{name:22s} {m:6.2f} chips/s ({m / raw:.1%} of the raw step; runs "
              f"{', '.join(f'{v:.2f}' for v in values)})")


if __name__ == "__main__":
    main()
