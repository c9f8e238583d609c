"""The network and the per-pixel baseline as one model: their class probabilities blended with the share
that scored best on validation (fitted by :mod:`geoseg.training.blend`).

A blended checkpoint is a checkpoint like any other (made by
:func:`geoseg.models.checkpoint.blended_checkpoint`): its ``model_config`` names the network
(``network_architecture``, ``network_config``) and the network's share (``network_weight``, between 0 and
1); its ``state_dict`` holds the network's weights under ``network.`` and the baseline's tree arrays under
``baseline.``, each part checked as its own model's are. ``predict``, ``evaluate`` and the QGIS provider run
it through torch; ONNX cannot hold the baseline's trees, so ``export`` and the ONNX Runtime engines refuse it
with a sentence.
"""

from __future__ import annotations

import torch

#: Where a blended checkpoint's ``state_dict`` keeps each part.
NETWORK, YARDSTICK = "network.", "baseline."


class BlendModel(torch.nn.Module):
    """Chips → the log of the weighted sum of the network's softmax and the baseline's probabilities."""

    def __init__(self, network: torch.nn.Module, baseline: torch.nn.Module, weight: float):
        super().__init__()
        self.network, self.baseline, self.weight = network, baseline, weight

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        p = self.weight * torch.softmax(self.network(x).float(), dim=1)
        p = p + (1 - self.weight) * self.baseline(x).float().exp()
        return p.clamp_min(1e-9).log()
