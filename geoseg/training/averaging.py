"""An exponential moving average of the model's weights, the model a run validates and saves.

A short CPU run takes a few thousand noisy optimizer steps; the average of the
last few hundred is a steadier model than the last step's weights (as timm's
``ModelEmaV2`` and torch's ``swa_utils`` keep). Batch-norm statistics are
averaged with the weights, so the averaged model is evaluated as it is.
"""

from __future__ import annotations

import copy
from typing import Any

import torch


class WeightAverage:
    """``decay``: each step keeps this share of the average (0.99: about the last 100 steps). The first steps
    use a smaller decay, ``(1 + n) / (10 + n)``, so the random initial weights fade out quickly."""

    def __init__(self, model: torch.nn.Module, decay: float):
        self.decay = decay
        self.updates = 0
        self.module = copy.deepcopy(model).eval()
        for p in self.module.parameters():
            p.requires_grad_(False)

    def current_decay(self) -> float:
        return min(self.decay, (1 + self.updates) / (10 + self.updates))

    @torch.no_grad()
    def update(self, model: torch.nn.Module) -> None:
        """Move the average one step toward ``model``'s weights and buffers."""
        self.updates += 1
        weight = 1.0 - self.current_decay()
        averaged, live = [], []
        for a, b in zip(self.module.state_dict().values(), model.state_dict().values(), strict=True):
            if a.dtype.is_floating_point:
                averaged.append(a)
                live.append(b.detach())
            else:  # counters such as batch norm's num_batches_tracked
                a.copy_(b)
        torch._foreach_lerp_(averaged, live, weight)

    def state_dict(self) -> dict[str, Any]:
        return {"updates": self.updates, "decay": self.decay}

    def load(self, weights: dict[str, torch.Tensor], state: dict[str, Any]) -> None:
        """Restore the average from a checkpoint's weights and :meth:`state_dict`."""
        self.module.load_state_dict(weights)
        self.updates = int(state["updates"])
