"""Scene augmentation: what changes between scenes and sensors, drawn per training chip.

A model trained on a few scenes learns their look: their brightness, contrast, colour saturation, sharpness
(atmosphere, sensor optics, processing level), noise and exact ground sampling. A :class:`Look` is one draw of
those changes, of a strength set by the run's ``scene_jitter``; the chip dataset applies it to a chip's
normalised bands (:func:`apply_look`) and reads the chip at the look's scale (the labels at the same scale),
so chips show the model scenes it has not seen. The per-band gains of ``band_jitter`` (the colour shift) are
the sampler's own; the dihedral flips are in :func:`geoseg.data.chips.augment`.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import numpy as np

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
    """``image + amount · (image − blurred)``, the blur a normalised convolution over valid pixels only
    (separable: two small matrix products per band)."""
    rows, cols = _gaussian_matrix(valid.shape[0]), _gaussian_matrix(valid.shape[1])
    weight = valid.astype(np.float32)
    blurred = np.stack([rows @ (band * weight) @ cols.T for band in image])
    blurred /= np.maximum(rows @ weight @ cols.T, 1e-6)
    return (image + amount * (image - blurred)).astype(np.float32)


@functools.lru_cache(maxsize=8)
def _gaussian_matrix(n: int) -> np.ndarray:
    """[n, n] weights of a Gaussian blur of ``SHARPNESS_SIGMA`` pixels along one axis (out to 3 σ), the
    edge pixels repeated beyond the edge."""
    radius = int(3 * SHARPNESS_SIGMA + 0.5)
    taps = np.exp(-0.5 * (np.arange(-radius, radius + 1) / SHARPNESS_SIGMA) ** 2)
    taps /= taps.sum()
    m = np.zeros((n, n), np.float32)
    for offset, tap in zip(range(-radius, radius + 1), taps):
        np.add.at(m, (np.arange(n), np.clip(np.arange(n) + offset, 0, n - 1)), tap)
    return m


def rescaled(image: np.ndarray, valid: np.ndarray, label: np.ndarray, size: int,
             scale: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A ``size`` × ``size`` chip covering ``scale`` × ``size`` pixels of a chip read at the scene's own
    pixels from the same top-left corner (``image`` [bands, h, w] with h, w ≥ ``scale`` × ``size`` + 1):
    the image sampled bilinearly from valid pixels only (nodata never mixes in), validity and labels from
    the nearest pixel."""
    centres = (np.arange(size, dtype=np.float64) + 0.5) * scale  # output pixel centres, in input pixels
    rows, cols = _bilinear_matrix(centres, valid.shape[0]), _bilinear_matrix(centres, valid.shape[1])
    weight = valid.astype(np.float32)
    total = rows @ weight @ cols.T
    out = np.stack([rows @ (band * weight) @ cols.T for band in image]) / np.maximum(total, 1e-6)
    pick = np.ix_(np.minimum(centres.astype(int), valid.shape[0] - 1),
                  np.minimum(centres.astype(int), valid.shape[1] - 1))
    return out.astype(np.float32), valid[pick], label[pick]


def _bilinear_matrix(centres: np.ndarray, n: int) -> np.ndarray:
    """[len(centres), n] weights of linear interpolation at ``centres`` (pixel coordinates: pixel i's centre
    is i + ½) between the centres of ``n`` pixels, the edge pixels' values held beyond them."""
    x = np.clip(centres - 0.5, 0, n - 1)
    low = np.floor(x).astype(int)
    high = np.minimum(low + 1, n - 1)
    frac = (x - low).astype(np.float32)
    m = np.zeros((len(centres), n), np.float32)
    np.add.at(m, (np.arange(len(centres)), low), 1 - frac)
    np.add.at(m, (np.arange(len(centres)), high), frac)
    return m
