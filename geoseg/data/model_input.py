"""How pixels become model input: the one place training and prediction share.

Both the chip dataset (:mod:`geoseg.data.chips`) and prediction's per-block work
(:mod:`geoseg.inference.blocks`, and the int8 engine's calibration chips) call
:func:`normalise`, so a change to how values are scaled reaches both sides at once.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np


def normalise(data: np.ndarray, valid: np.ndarray, mean: Sequence[float], std: Sequence[float],
              clip: tuple[Sequence[float], Sequence[float]] | None = None) -> np.ndarray:
    """In place, and returned: (data - mean) / std per band of ``data`` [bands, h, w] (clipped to ``clip`` =
    (low, high) per band first), 0 where ``valid`` [h, w] is False."""
    def per_band(values) -> np.ndarray:
        return np.asarray(values, dtype=data.dtype)[:, None, None]

    if clip is not None:
        np.clip(data, per_band(clip[0]), per_band(clip[1]), out=data)
    data -= per_band(mean)
    data /= per_band(std)
    data[:, ~valid] = 0.0
    return data
