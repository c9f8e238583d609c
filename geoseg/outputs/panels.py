"""Image | truth | prediction panels in class colours: the training run's sample panels and evaluation's
worst-chip gallery are drawn from the same tiles."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from geoseg.io.atomic import atomic_output
from geoseg.io.classes import IGNORE_INDEX

#: The colour of pixels without a label or class (nodata, ignored classes).
NO_LABEL_GREY = (64, 64, 64)


def class_palette(colors: Sequence[tuple[int, int, int]]) -> np.ndarray:
    """A 256 × 3 table from model index to class colour; every other index grey."""
    palette = np.full((256, 3), NO_LABEL_GREY, np.uint8)
    palette[: len(colors)] = colors
    return palette


def stretch(data: np.ndarray, limits: np.ndarray | None = None) -> np.ndarray:
    """Bands [b, h, w] → 8-bit RGB [h, w, 3] for display: a linear stretch of each band between
    ``limits`` [3, 2] (a scene's, see :func:`scene_limits`), else between the data's own 2 and 98 %."""
    rgb = data[:3] if data.shape[0] >= 3 else np.repeat(data[:1], 3, axis=0)
    if limits is None:
        limits = _display_limits(rgb)
    out = np.zeros(rgb.shape, np.uint8)
    for b in range(3):
        lo, hi = limits[b]
        out[b] = np.clip((rgb[b] - lo) / max(hi - lo, 1e-9) * 255, 0, 255)
    return np.moveaxis(out, 0, -1)


def _display_limits(rgb: np.ndarray) -> np.ndarray:
    """The 2 and 98 % values of each of three bands [3, h, w] (finite values only)."""
    limits = np.zeros((3, 2))
    for b in range(3):
        values = rgb[b][np.isfinite(rgb[b])]
        limits[b] = np.percentile(values, (2, 98)) if values.size else (0, 1)
    return limits


def scene_limits(src, size: int = 512) -> np.ndarray:
    """Display limits of an open scene from a decimated read (valid pixels only), so that every chip of
    the scene is stretched alike: a uniform water chip stays uniform instead of showing its noise."""
    bands = [1, 2, 3] if src.count >= 3 else [1, 1, 1]
    f = max(1.0, max(src.width, src.height) / size)
    shape = (max(1, round(src.height / f)), max(1, round(src.width / f)))
    data = src.read(bands, out_shape=(3, *shape)).astype(np.float32)
    data[:, src.dataset_mask(out_shape=shape) == 0] = np.nan
    return _display_limits(data)


def tiles(rgb: np.ndarray, truth: np.ndarray, pred: np.ndarray, palette: np.ndarray,
          grey_unlabelled: bool = False) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The image, truth and prediction of one chip as RGB tiles; with ``grey_unlabelled`` pixels without a
    label are grey in the prediction too and dimmed in the image."""
    if grey_unlabelled:
        pred = np.where(truth == IGNORE_INDEX, IGNORE_INDEX, pred)
        rgb = rgb.copy()
        rgb[truth == IGNORE_INDEX] //= 3
    return rgb, palette[truth], palette[pred]


def sample_panel(images: Sequence[np.ndarray], truths: Sequence[np.ndarray], preds: Sequence[np.ndarray],
                 colors: Sequence[tuple[int, int, int]], mean: Sequence[float], std: Sequence[float],
                 path: Path, thumb: int = 128) -> Path:
    """Save rows of image | truth | prediction thumbnails of normalised chips as one PNG."""
    from PIL import Image

    palette = class_palette(colors)
    rows = []
    mean3 = np.asarray(mean[:3], np.float32)[:, None, None]
    std3 = np.asarray(std[:3], np.float32)[:, None, None]
    for img, t, p in zip(images, truths, preds):
        k = max(1, img.shape[-1] // thumb)  # subsample first: the work is on thumbnails, not chips
        img, t, p = img[:, ::k, ::k], t[::k, ::k], p[::k, ::k]
        rgb = img[:3] * std3[: len(img[:3])] + mean3[: len(img[:3])]
        rgb = np.clip(np.moveaxis(rgb, 0, -1), 0, 255).astype(np.uint8)
        if rgb.shape[-1] < 3:
            rgb = np.repeat(rgb[..., :1], 3, axis=-1)
        row = Image.new("RGB", (thumb * 3 + 4, thumb))
        for j, tile in enumerate(tiles(rgb, t, p, palette, grey_unlabelled=True)):
            row.paste(Image.fromarray(np.ascontiguousarray(tile)).resize((thumb, thumb), Image.NEAREST),
                      (j * (thumb + 2), 0))
        rows.append(row)
    panel = Image.new("RGB", (thumb * 3 + 4, len(rows) * (thumb + 2)))
    for k, row in enumerate(rows):
        panel.paste(row, (0, k * (thumb + 2)))
    with atomic_output(path) as tmp:
        panel.save(tmp, format="PNG", compress_level=1)  # fast; thumbnails are small anyway
    return path
