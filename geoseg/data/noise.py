"""Deterministic, position-based noise for the sample-data generator.

Every value is a pure function of global pixel coordinates and a seed, so a
scene can be rendered block by block (in bounded memory) and come out the same
as if rendered whole.
"""

from __future__ import annotations

import numpy as np

_M1 = np.uint64(0x8DA6B343)
_M2 = np.uint64(0xD8163841)
_M3 = np.uint64(0xCB1AB31F)
_MIX = np.uint64(0x5BD1E995)
_MASK = np.uint64(0xFFFFFFFF)


def hash01(ix: np.ndarray, iy: np.ndarray, seed: int) -> np.ndarray:
    """Uniform [0, 1) values hashed from integer coordinates."""
    x = np.asarray(ix).astype(np.int64).astype(np.uint64)
    y = np.asarray(iy).astype(np.int64).astype(np.uint64)
    with np.errstate(over="ignore"):
        h = (x * _M1 + y * _M2 + np.uint64(seed & 0xFFFFFFFF) * _M3) & _MASK
        h ^= h >> np.uint64(15)
        h = (h * _MIX) & _MASK
        h ^= h >> np.uint64(13)
        h = (h * _M1) & _MASK
        h ^= h >> np.uint64(16)
    return h.astype(np.float64) / 4294967296.0


def value_noise(x: np.ndarray, y: np.ndarray, scale: float, seed: int) -> np.ndarray:
    """Smooth [0, 1] noise with features about ``scale`` pixels across."""
    xs, ys = x / scale, y / scale
    x0, y0 = np.floor(xs), np.floor(ys)
    fx, fy = xs - x0, ys - y0
    fx = fx * fx * (3 - 2 * fx)
    fy = fy * fy * (3 - 2 * fy)
    v00 = hash01(x0, y0, seed)
    v10 = hash01(x0 + 1, y0, seed)
    v01 = hash01(x0, y0 + 1, seed)
    v11 = hash01(x0 + 1, y0 + 1, seed)
    return (v00 * (1 - fx) + v10 * fx) * (1 - fy) + (v01 * (1 - fx) + v11 * fx) * fy


def fbm(x: np.ndarray, y: np.ndarray, scale: float, seed: int, octaves: int = 4) -> np.ndarray:
    """Fractal sum of value noise, normalised to about [0, 1]."""
    total = np.zeros(np.broadcast(x, y).shape)
    amp, norm = 1.0, 0.0
    for o in range(octaves):
        total += amp * value_noise(x, y, scale / 2**o, seed + 7919 * o)
        norm += amp
        amp *= 0.5
    return total / norm


def gaussian(x: np.ndarray, y: np.ndarray, seed: int) -> np.ndarray:
    """Approximately standard-normal per-pixel noise (sum of four uniforms)."""
    s = sum(hash01(x, y, seed + k) for k in range(4))
    return (s - 2.0) * np.sqrt(3.0)


def smoothstep(e0: float, e1: float, v: np.ndarray) -> np.ndarray:
    t = np.clip((v - e0) / (e1 - e0), 0.0, 1.0)
    return t * t * (3 - 2 * t)
