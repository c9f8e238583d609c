"""One training step, as the run takes it and as the budget's speed probe measures it: forward under
autocast, the loss in fp32, backward (through a gradient scaler for fp16) and the optimizer's step."""

from __future__ import annotations

import torch


def training_step(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, loss_fn: torch.nn.Module,
                  optimizer: torch.optim.Optimizer, amp: torch.dtype | None,
                  scaler: torch.amp.GradScaler | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Train ``model`` one step on chips ``x`` [n, bands, h, w] and labels ``y`` [n, h, w]; the loss and the
    logits."""
    with torch.autocast(x.device.type, dtype=amp or torch.float32, enabled=amp is not None):
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
    return loss, logits
