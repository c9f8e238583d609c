"""Raw training-step speed of candidate models on this CPU (forward, backward, optimizer step).

What the CPU recipe and the sample pipeline's model were chosen from: each candidate trains a few steps on
random chips in one process, candidates alternating, and the median chips/s per candidate is printed with
the CPU it ran on.

    python -m tests.benchmarks.bench_train_step --chip 256 --batch 8 --repeats 3
    python -m tests.benchmarks.bench_train_step --models resnet18:Unet resnet34:Unet --chip 256
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from geoseg.models.checkpoint import autocast_dtype, build_model
from geoseg.training.optimization import make_loss, make_optimizer

DEFAULT = ["resnet34:Unet", "resnet18:Unet", "resnet18:Unet:small", "efficientnet-b0:Unet",
           "mobilenet_v2:Unet", "timm-mobilenetv3_large_100:Unet", "resnet18:FPN"]

#: Lighter U-Net decoders (decoder_channels), by the suffix a candidate names.
DECODERS = {"small": [128, 64, 32, 16, 16], "tiny": [64, 32, 16, 16, 16]}
LAYOUTS = {"channels_last": torch.channels_last, "nchw": torch.contiguous_format}


def cpu_name() -> str:
    """The CPU model and torch's capability (AVX2, AVX512 …), for every figure printed."""
    name = "unknown CPU"
    try:
        for line in open("/proc/cpuinfo", encoding="utf-8"):
            if line.startswith("model name"):
                name = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    bf16 = autocast_dtype(torch.device("cpu"), "auto") is not None
    return (f"{name}, torch capability {torch.backends.cpu.get_cpu_capability()}, "
            f"{'bf16' if bf16 else 'no bf16'}, {torch.get_num_threads()} threads")


def make(spec: str, bands: int, classes: int, layout: torch.memory_format) -> torch.nn.Module:
    encoder, architecture, *rest = spec.split(":")
    config = {"classes": classes, "encoder_name": encoder, "encoder_weights": None, "in_channels": bands}
    if rest:
        config["decoder_channels"] = DECODERS[rest[0]]
    return build_model(architecture, config, pretrained=False).to(memory_format=layout)


def steps_per_second(model, optimizer, loss_fn, x, y, amp, steps: int) -> float:
    model.train()
    t0 = time.perf_counter()
    for _ in range(steps):
        with torch.autocast("cpu", dtype=amp or torch.float32, enabled=amp is not None):
            logits = model(x)
        loss = loss_fn(logits.float(), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return steps * len(x) / (time.perf_counter() - t0)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="*", default=DEFAULT, help="encoder:architecture[:decoder]")
    parser.add_argument("--chip", type=int, default=256)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--bands", type=int, default=3)
    parser.add_argument("--precision", default="auto")
    parser.add_argument("--batches", nargs="*", type=int, default=None, help="batch sizes to compare")
    parser.add_argument("--layouts", nargs="*", default=["channels_last"], choices=list(LAYOUTS))
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    amp = autocast_dtype(torch.device("cpu"), args.precision)
    print(cpu_name(), f"precision {'bf16' if amp else 'fp32'}")
    loss_fn = make_loss("CrossEntropyLoss", None, list(range(6)), torch.device("cpu"))
    runs = {}
    for spec in args.models:
        for layout in args.layouts:
            for batch in args.batches or [args.batch]:
                model = make(spec, args.bands, 7, LAYOUTS[layout])
                x = torch.randn(batch, args.bands, args.chip, args.chip)
                x = x.contiguous(memory_format=LAYOUTS[layout])
                y = torch.randint(0, 6, (batch, args.chip, args.chip))
                optimizer = make_optimizer("AdamW", model.parameters(), 1e-3, 0.0)
                steps_per_second(model, optimizer, loss_fn, x, y, amp, 1)  # first-call set-up
                runs[f"{spec} {layout} batch {batch}"] = (model, optimizer, x, y, [])
    for _ in range(args.repeats):
        for model, optimizer, x, y, speeds in runs.values():
            speeds.append(steps_per_second(model, optimizer, loss_fn, x, y, amp, args.steps))
    for name, (model, _, _, _, speeds) in runs.items():
        params = sum(p.numel() for p in model.parameters()) / 1e6
        print(f"{name:52s} {params:6.1f} M params  {statistics.median(speeds):6.2f} chips/s "
              f"(train step, {args.chip} px; runs {', '.join(f'{s:.2f}' for s in speeds)})")


if __name__ == "__main__":
    main()
