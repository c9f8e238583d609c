"""The network's share in its blend with the per-pixel baseline, fitted on the validation chips each epoch:
the baseline's class probabilities on those chips are kept from when it was scored, and every validation
pass scores the blend at each share in :data:`WEIGHTS` beside the network, at the cost of a few argmaxes per
batch. :mod:`geoseg.models.blend` is the blended model a run saves.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from geoseg.training.metrics import confusion_matrix, summarize

#: The network's shares tried, from the baseline alone (0) to the network alone (1).
WEIGHTS = tuple(i / 10 for i in range(11))
#: The most memory the baseline's validation probabilities may take (float16); beyond it no blend is fitted.
MAX_BYTES = 1 << 30


class BlendSearch:
    """Confusion matrices of the blend at each of :data:`WEIGHTS`, over one validation pass whose batches
    come in the order of the baseline's ``probabilities`` [chips, classes, h, w]."""

    def __init__(self, probabilities: np.ndarray, names: Sequence[str], evaluated: Sequence[int]):
        self.probabilities, self.names, self.evaluated = probabilities, list(names), list(evaluated)
        self.start()

    def start(self) -> None:
        """Before a validation pass."""
        k = len(self.names)
        self.confusion = np.zeros((len(WEIGHTS), k, k), np.int64)
        self.offset = 0

    def add(self, logits: torch.Tensor, labels: torch.Tensor) -> None:
        """The network's ``logits`` [n, classes, h, w] and the ``labels`` of the pass's next ``n`` chips."""
        n = len(logits)
        network = torch.softmax(logits.float(), dim=1).cpu()
        baseline = torch.from_numpy(self.probabilities[self.offset:self.offset + n]).float()
        self.offset += n
        labels = labels.cpu()
        for i, weight in enumerate(WEIGHTS):
            predicted = (weight * network + (1 - weight) * baseline).argmax(1)
            self.confusion[i] += confusion_matrix(labels, predicted, len(self.names))

    def best(self) -> tuple[float, float]:
        """(the network's share, the blend's validation mIoU) of the best share; on a tie the larger
        share, so the network alone wins ties with any blend."""
        scores = [summarize(cm, self.names, self.evaluated)["miou"] for cm in self.confusion]
        scores = [-1.0 if np.isnan(s) else s for s in scores]
        best = max(range(len(WEIGHTS)), key=lambda i: (scores[i], i))
        return WEIGHTS[best], scores[best]
