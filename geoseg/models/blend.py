"""The network and the per-pixel baseline as one model: their class probabilities blended with the weight
that scored best on validation (fitted by :mod:`geoseg.training.blend`).

A blended checkpoint is a checkpoint like any other: its ``model_config`` names the network
(``network_architecture``, ``network_config``) and the network's share (``network_weight``, between 0 and
1); its ``state_dict`` holds the network's weights under ``network.`` and the baseline's tree arrays under
``baseline.``, each part checked as its own model's are. ``predict``, ``evaluate`` and the QGIS provider run
it through torch; ONNX cannot hold the baseline's trees, so ``export`` refuses it with a sentence.
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING, Any

import torch

from geoseg.models.fields import BASELINE, BLEND

if TYPE_CHECKING:
    from geoseg.models.checkpoint import Checkpoint

ARCHITECTURE = BLEND
NETWORK, YARDSTICK = "network.", "baseline."


def blended_checkpoint(network: Checkpoint, baseline_state: dict[str, Any], weight: float,
                       metrics: dict[str, Any]) -> Checkpoint:
    """The blend of ``network`` (a network's checkpoint) and the baseline whose tree arrays are
    ``baseline_state``, the network's probabilities weighted ``weight`` and the baseline's ``1 - weight``."""
    state = {**{NETWORK + k: v for k, v in network.state_dict.items()},
             **{YARDSTICK + k: v for k, v in baseline_state.items()}}
    config = {"network_architecture": network.architecture, "network_config": dict(network.model_config),
              "network_weight": float(weight)}
    return replace(network, architecture=ARCHITECTURE, model_config=config, state_dict=state,
                   metrics=metrics, training_state=None, path=None)


def network_part(ckpt: Checkpoint) -> Checkpoint:
    """The network of a blended checkpoint, as a checkpoint of its own."""
    config = ckpt.model_config
    return replace(ckpt, architecture=config["network_architecture"], model_config=config["network_config"],
                   state_dict=_part(ckpt.state_dict, NETWORK))


def baseline_part(ckpt: Checkpoint) -> Checkpoint:
    """The per-pixel baseline of a blended checkpoint, as a checkpoint of its own."""
    return replace(ckpt, architecture=BASELINE, model_config={},
                   state_dict=_part(ckpt.state_dict, YARDSTICK))


def _part(state: dict[str, Any], prefix: str) -> dict[str, Any]:
    return {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}


def build_blend(ckpt: Checkpoint) -> torch.nn.Module:
    """The blended model of ``ckpt``, each part built (and checked) as its own checkpoint would be."""
    from geoseg.errors import CheckpointError
    from geoseg.models.checkpoint import REBUILD

    odd = [k for k in ckpt.state_dict if not k.startswith((NETWORK, YARDSTICK))]
    if odd:
        raise CheckpointError(f"{ckpt.path or 'the checkpoint'} holds weights that belong to no part of its "
                              f"blend (e.g. {odd[0][:80]!r}); {REBUILD}")
    return BlendModel(network_part(ckpt).build(), baseline_part(ckpt).build(),
                      float(ckpt.model_config["network_weight"]))


class BlendModel(torch.nn.Module):
    """Chips → the log of the weighted sum of the network's softmax and the baseline's probabilities."""

    def __init__(self, network: torch.nn.Module, baseline: torch.nn.Module, weight: float):
        super().__init__()
        self.network, self.baseline, self.weight = network, baseline, weight

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        p = self.weight * torch.softmax(self.network(x).float(), dim=1)
        p = p + (1 - self.weight) * self.baseline(x).float().exp()
        return p.clamp_min(1e-9).log()
