"""Scene augmentation: what changes between scenes and sensors, drawn per training chip.

A model trained on a few scenes learns their look: their brightness, contrast, colour saturation, sharpness
(atmosphere, sensor optics, processing level), noise and exact ground sampling. A :class:`Look` is one draw of
those changes, of a strength set by the run's ``scene_jitter``; the chip dataset applies it to a chip's
normalised bands (:func:`apply_look`) and reads the chip at the look's scale (the labels at the same scale),
so chips show the model scenes it has not seen. The per-band gains of ``band_jitter`` (the colour shift) are
the sampler's own; the dihedral flips are in :func:`geoseg.data.chips.augment`.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from scipy.ndimage import gaussian_filter

#: Standard deviation (chip pixels) of the Gaussian a look's sharpness blurs towards or sharpens away from.
SHARPNESS_SIGMA = 1.0


class Look(NamedTuple):
    """One scene's look relative to the training scenes (all neutral: no change)."""

    brightness: float = 0.0  # added to every band, in units of the band's standard deviation
    contrast: float = 1.0    # each band's deviations from its chip mean scaled by this
    saturation: float = 1.0  # each pixel's deviations from its mean over the bands scaled by this (≥ 3 bands)
    sharpness: float = 0.0   # > 0 sharpens (unsharp mask), < 0 blurs (-1: the Gaussian blur itself)
    noise: float = 0.0       # standard deviation of added Gaussian noise, in band standard deviations
    noise_seed: int = 0
    scale: float = 1.0       # the chip covers ``scale`` × its ground size (> 1: the scene seen coarser)


NEUTRAL = Look()


def draw_look(rng: np.random.Generator, strength: float) -> Look:
    """A look drawn with ``strength`` s (0 < s < 1): brightness within ±s, contrast and saturation within
    1 ± s, sharpness within ±2.5 s (at 0.2: from half-way to a blur to a like sharpening), noise up to s / 4
    and a scale within 1 ± s / 2 (at 0.2: 0.9–1.1 of the sampling)."""
    if not strength:
        return NEUTRAL
    s = float(strength)
    return Look(brightness=float(rng.uniform(-s, s)), contrast=float(rng.uniform(1 - s, 1 + s)),
                saturation=float(rng.uniform(1 - s, 1 + s)), sharpness=float(rng.uniform(-2.5 * s, 2.5 * s)),
                noise=float(rng.uniform(0, s / 4)), noise_seed=int(rng.integers(0, 2**31)),
                scale=float(rng.uniform(1 - s / 2, 1 + s / 2)))


def apply_look(image: np.ndarray, valid: np.ndarray, look: Look) -> np.ndarray:
    """The normalised chip ``image`` [bands, h, w] as a scene with ``look`` would show it; pixels outside
    ``valid`` [h, w] keep their value (0, the normalised fill) and do not leak into valid ones."""
    if look == NEUTRAL or not valid.any():
        return image
    out = image.astype(np.float32, copy=True)
    if look.sharpness:
        out = _sharpened(out, valid, look.sharpness)
    means = out[:, valid].mean(axis=1)[:, None, None]
    out = means + look.contrast * (out - means) + look.brightness
    if look.saturation != 1.0 and out.shape[0] >= 3:
        grey = out.mean(axis=0, keepdims=True)
        out = grey + look.saturation * (out - grey)
    if look.noise:
        out += look.noise * np.random.default_rng(look.noise_seed).standard_normal(out.shape, np.float32)
    out[:, ~valid] = image[:, ~valid]
    return out


def _sharpened(image: np.ndarray, valid: np.ndarray, amount: float) -> np.ndarray:
    """``image + amount · (image − blurred)``, the blur a normalised convolution over valid pixels only.
    (Filters, not matrix products: BLAS's own threads would compete with torch's for the cores.)"""
    weight = valid.astype(np.float32)
    blurred = np.stack([_blur(band * weight) for band in image]) / np.maximum(_blur(weight), 1e-6)
    return (image + amount * (image - blurred)).astype(np.float32)


def _blur(a: np.ndarray) -> np.ndarray:
    return gaussian_filter(a, SHARPNESS_SIGMA, mode="nearest", truncate=3.0)


def rescaled(image: np.ndarray, valid: np.ndarray, label: np.ndarray, size: int,
             scale: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A ``size`` × ``size`` chip covering ``scale`` × ``size`` pixels of a chip read at the scene's own
    pixels from the same top-left corner (``image`` [bands, h, w] with h, w ≥ ``scale`` × ``size`` + 1):
    the image sampled bilinearly from valid pixels only (nodata never mixes in), validity and labels from
    the nearest pixel."""
    centres = (np.arange(size, dtype=np.float64) + 0.5) * scale  # output pixel centres, in input pixels
    weight = valid.astype(np.float32)
    weighted = np.concatenate([image * weight, weight[None]])
    for axis in (-2, -1):
        weighted = _linear(weighted, centres, axis)
    out = weighted[:-1] / np.maximum(weighted[-1], 1e-6)
    pick = np.ix_(np.minimum(centres.astype(int), valid.shape[0] - 1),
                  np.minimum(centres.astype(int), valid.shape[1] - 1))
    return out.astype(np.float32), valid[pick], label[pick]


def _linear(a: np.ndarray, centres: np.ndarray, axis: int) -> np.ndarray:
    """``a`` interpolated linearly along ``axis`` at ``centres`` (pixel coordinates: pixel i's centre is
    i + ½), the edge pixels' values held beyond them."""
    n = a.shape[axis]
    x = np.clip(centres - 0.5, 0, n - 1)
    low = np.floor(x).astype(int)
    frac = (x - low).astype(np.float32)
    shape = [1] * a.ndim
    shape[axis] = len(centres)
    frac = frac.reshape(shape)
    return (np.take(a, low, axis=axis) * (1 - frac)
            + np.take(a, np.minimum(low + 1, n - 1), axis=axis) * frac)
