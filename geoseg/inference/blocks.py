"""Per-block inference: a block's chips → the model → blended probabilities → class codes.

Output blocks are aligned to the scene's global :class:`~geoseg.io.grid.ChipGrid`.
:func:`accumulate_block` runs exactly the chips whose origin lies in its block
(every chip once) and accumulates their weighted class probabilities over its
own pixels plus the overlap its last chips reach into the next blocks;
:func:`finish_block` adds the overlap handed over by the neighbours (left, above,
diagonal) and takes the argmax. Every pixel so gets the same chips and weights
whatever the blocking.
"""

from __future__ import annotations

import itertools
import os
import threading
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import rasterio
from rasterio.windows import Window

from geoseg.data.model_input import normalise
from geoseg.errors import CheckpointError
from geoseg.io.aoi import area_mask, touches_window
from geoseg.io.classes import NODATA
from geoseg.io.fingerprint import cache_key, file_identity
from geoseg.io.grid import ChipGrid, GridBlock, span_window
from geoseg.io.raster import open_raster, read_padded
from geoseg.models.checkpoint import Checkpoint, autocast_dtype, default_device, load_checkpoint
from geoseg.models.onnx_runtime import ArrayModel

if TYPE_CHECKING:
    import torch

#: GDAL's block cache (MB) while predicting: bounded, so memory does not grow with the scene.
GDAL_CACHE_MB = 256

#: What the model sees where a chip runs past the scene's edge: the scene reflected ("reflect") or the band
#: means ("zero" after normalisation). Nodata inside the scene is always the band means.
EDGE_PADDING = "reflect"


@dataclass(frozen=True)
class ModelRef:
    """The model file as block tasks carry it to dask workers, which load it themselves: its path and its
    identity (:func:`~geoseg.io.fingerprint.file_identity`) when the run began, so a file replaced while the
    run uses it is refused instead of mixing two models in one map."""

    path: str
    identity: str

    @classmethod
    def of(cls, checkpoint: Checkpoint) -> "ModelRef":
        path = Path(checkpoint.path).resolve()
        return cls(str(path), cache_key(file_identity(path)))


@dataclass(frozen=True)
class BlockTask:
    """Everything a worker needs to predict the chips of one output block."""

    scene: str
    checkpoint: ModelRef
    block: GridBlock
    chip: int
    overlap: int
    spill: tuple[int, int]          # rows, cols of overlap handed to the next blocks (clipped to the scene)
    batch_size: int
    precision: str
    tta: str
    threads: int | None
    bands: tuple[int, ...] = ()     # scene bands fed to the model (default: the checkpoint's)
    area: bytes | None = None       # area of interest (WKB in the scene's CRS): only chips touching it run


@dataclass
class BlockAccumulation:
    """Weighted class probabilities (+ weight sum as the last channel) of one block's own chips."""

    core: np.ndarray      # [K+1, h, w] over the owned pixels
    right: np.ndarray     # [K+1, h, spill_cols] for the block to the right
    bottom: np.ndarray    # [K+1, spill_rows, w] for the block below
    corner: np.ndarray    # [K+1, spill_rows, spill_cols] for the block diagonally below-right
    valid: np.ndarray     # [h, w] scene validity of the owned pixels
    chips: int


def blend_weights(chip: int, overlap: int) -> np.ndarray:
    """A separable 2-D weight: 1 in the chip's core, linear ramps across the overlap, never 0.

    Within an overlap band the two chips' ramps sum to 1, so the blended
    probability cross-fades from one chip to the next without a step.
    """
    if overlap <= 0:
        return np.ones((chip, chip), np.float32)
    x = np.arange(chip, dtype=np.float32) + 0.5
    ramp = np.clip(np.minimum(x, chip - x) / overlap, 0.0, 1.0)
    return np.outer(ramp, ramp).astype(np.float32)


#: A model prediction runs: a torch module or an exported model (no torch needed).
Model = Any

_MODELS: dict[tuple[str, int | None], tuple[Checkpoint, Model]] = {}
_MODELS_LOCK = threading.Lock()
_MODELS_KEPT = 2


def model_for(model: str | os.PathLike | ModelRef, threads: int | None = None,
              checkpoint: Checkpoint | None = None) -> tuple[Checkpoint, Model]:
    """The model of the checkpoint file ``model`` (a path, or a :class:`ModelRef` that also says which
    version of the file the run began with), built at most once per process and version of the file (keyed
    by :func:`~geoseg.io.fingerprint.file_identity`: path, size, modification time and a content sample, so a
    checkpoint replaced by another with the same time is not mistaken for it).

    ``checkpoint``: the checkpoint already loaded from that file, so it is not read again.
    """
    path = model.path if isinstance(model, ModelRef) else model
    identity = cache_key(file_identity(path))
    if isinstance(model, ModelRef) and identity != model.identity:
        raise CheckpointError(f"{path} changed while this prediction was using it; run the prediction again "
                              "(with --resume, the blocks finished before are kept)")
    key = (identity, threads)
    with _MODELS_LOCK:
        if key in _MODELS:
            return _MODELS[key]
        ckpt = checkpoint if checkpoint is not None else load_checkpoint(path)
        model = ckpt.build(threads)
        if not isinstance(model, ArrayModel):
            import torch


            if threads:
                torch.set_num_threads(threads)
            model = model.to(default_device()).to(memory_format=torch.channels_last)
        while len(_MODELS) >= _MODELS_KEPT:
            _MODELS.pop(next(iter(_MODELS)))
        _MODELS[key] = (replace(ckpt, state_dict={}), model)  # the weights live in the model now
        return _MODELS[key]


def accumulate_block(task: BlockTask) -> BlockAccumulation:
    """Run one block's own chips and accumulate their weighted probabilities over owned + spill pixels."""
    ckpt, model = model_for(task.checkpoint, task.threads)
    b = task.block
    r0, c0 = int(b.window.row_off), int(b.window.col_off)
    h, w = int(b.window.height), int(b.window.width)
    sh, sw = task.spill
    k = len(ckpt.classes)
    acc = np.zeros((k + 1, h + sh, w + sw), dtype=np.float32)
    with open_raster(task.scene) as src:
        grid = ChipGrid.for_scene(src.width, src.height, task.chip, task.overlap)
        read = _read_window(grid, b) if len(b.rows) and len(b.cols) else b.window
        if task.area is not None and not touches_window(task.area, src.transform, read):
            a = acc  # outside the area: nothing to read or run
            return BlockAccumulation(a[:, :h, :w], a[:, :h, w:].copy(), a[:, h:, :w].copy(),
                                     a[:, h:, w:].copy(), np.zeros((h, w), bool), 0)
        with rasterio.Env(GDAL_NUM_THREADS="ALL_CPUS", GDAL_CACHEMAX=GDAL_CACHE_MB):  # decode on all cores
            data, valid, content = read_padded(src, read, task.bands or ckpt.bands)
        if task.area is not None:  # the imagery around the area is still seen by the chips that touch it
            valid &= area_mask(task.area, src.transform, read)
    sr, sc = int(read.row_off), int(read.col_off)
    own_valid = valid[r0 - sr:r0 - sr + h, c0 - sc:c0 - sc + w].copy()
    chips = [grid.origin(i, j) for i in b.rows for j in b.cols]
    chips = [(r, c) for r, c in chips if valid[r - sr:r - sr + task.chip, c - sc:c - sc + task.chip].any()]
    if chips:
        normalise(data, content if EDGE_PADDING == "reflect" else valid, ckpt.mean, ckpt.std, ckpt.clip)
        weight = blend_weights(task.chip, task.overlap)
        for start in range(0, len(chips), task.batch_size):
            batch = chips[start:start + task.batch_size]
            x = np.stack([data[:, r - sr:r - sr + task.chip, c - sc:c - sc + task.chip] for r, c in batch])
            if len(batch) < task.batch_size:  # a fixed batch shape keeps results independent of blocking
                x = np.concatenate([x, np.zeros((task.batch_size - len(batch), *x.shape[1:]), x.dtype)])
            probs = predict_probabilities(model, x, task.precision, task.tta)
            for (r, c), p in zip(batch, probs):
                ar0, ar1 = max(r, r0), min(r + task.chip, r0 + h + sh)
                ac0, ac1 = max(c, c0), min(c + task.chip, c0 + w + sw)
                if ar0 < ar1 and ac0 < ac1:
                    target = acc[:, ar0 - r0:ar1 - r0, ac0 - c0:ac1 - c0]
                    wt = weight[ar0 - r:ar1 - r, ac0 - c:ac1 - c]
                    target[:k] += p[:, ar0 - r:ar1 - r, ac0 - c:ac1 - c] * wt
                    target[k] += wt
    a = acc
    # The strips wait for the neighbours' finish tasks: copies, so they do not keep the whole block alive.
    return BlockAccumulation(a[:, :h, :w], a[:, :h, w:].copy(), a[:, h:, :w].copy(), a[:, h:, w:].copy(),
                             own_valid, len(chips))


def _read_window(grid: ChipGrid, block: GridBlock) -> Window:
    """The window a block reads: its own pixels and every pixel its chips cover."""
    chips = span_window(grid, block.rows, block.cols)
    own = block.window
    col0, row0 = min(chips.col_off, own.col_off), min(chips.row_off, own.row_off)
    col1 = max(chips.col_off + chips.width, own.col_off + own.width)
    row1 = max(chips.row_off + chips.height, own.row_off + own.height)
    return Window(col0, row0, col1 - col0, row1 - row0)


def predict_probabilities(model: Model, x: np.ndarray, precision: str = "auto",
                          tta: str = "none") -> np.ndarray:
    """Softmax class probabilities [n, K, h, w] (float32) for a batch of normalised chips ``x``; ``tta``
    "flips" averages them over the four flips."""
    if not isinstance(model, ArrayModel):
        return _torch_probabilities(model, x, precision, tta).numpy()
    flips = [()] if tta == "none" else [(), (3,), (2,), (2, 3)]
    out = None
    for axes in flips:
        p = model.probabilities(np.flip(x, axes) if axes else x)
        p = np.flip(p, axes) if axes else p
        out = p if out is None else out + p
    if len(flips) > 1:
        out = out / len(flips)
    return np.ascontiguousarray(out, dtype=np.float32)


def _torch_probabilities(model: torch.nn.Module, x: np.ndarray, precision: str, tta: str) -> torch.Tensor:
    """:func:`predict_probabilities` of a torch model. The softmax runs in the autocast dtype (bf16 where
    enabled): it costs a fraction of a float32 softmax."""
    import torch


    device = next(itertools.chain(model.parameters(), model.buffers())).device  # models without weights too
    amp = autocast_dtype(device, precision)
    with torch.inference_mode():
        t = torch.from_numpy(x).to(device, non_blocking=True).contiguous(memory_format=torch.channels_last)
        flips = [()] if tta == "none" else [(), (3,), (2,), (2, 3)]
        out = None
        for dims in flips:
            inp = torch.flip(t, dims) if dims else t
            with torch.autocast(device.type, dtype=amp or torch.float32, enabled=amp is not None):
                logits = model(inp)
            p = torch.softmax(logits, dim=1)
            p = torch.flip(p, dims) if dims else p
            out = p if out is None else out + p
        if len(flips) > 1:
            out = out / len(flips)
        return out.to(torch.float32).contiguous().cpu()  # bf16 probabilities: accumulated in float32


@dataclass
class FinishedBlock:
    window: Window
    codes: np.ndarray
    confidence: np.ndarray | None
    probabilities: np.ndarray | None
    chips: int


def finish_block(own: BlockAccumulation, window: Window, lut: np.ndarray, left: np.ndarray | None,
                 above: np.ndarray | None, diagonal: np.ndarray | None, confidence: bool,
                 probabilities: str | None) -> FinishedBlock:
    """Add the neighbours' overlap to a block's own accumulation and turn it into class codes."""
    if probabilities:
        regions = [(slice(None), slice(None), _with_neighbours(own.core, left, above, diagonal))]
    else:  # only the edge bands change: no copy of the whole accumulation
        regions = [(slice(None), slice(None), own.core), *_edge_bands(own.core, left, above, diagonal)]
    top = index = wsum = probs = None
    for rows, cols, acc in regions:
        t, i = top_class(acc[:-1])
        if top is None:
            top, index, wsum, probs = t, i, acc[-1].copy(), acc[:-1]  # never write into own.core
        else:
            top[rows, cols], index[rows, cols], wsum[rows, cols] = t, i, acc[-1]
    nodata = ~own.valid | (wsum <= 0)
    np.maximum(wsum, 1e-12, out=wsum)
    return encode_block(window, index, top / wsum if confidence else None,
                        probs / wsum if probabilities else None, nodata, lut, probabilities, own.chips)


def top_class(scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The highest of ``scores`` [K, h, w] per pixel and its class index (the first of equal ones), a pass
    per class (faster than an argmax across the first axis)."""
    top = scores[0].copy()
    index = np.zeros(top.shape, np.uint8)
    for k in range(1, len(scores)):
        better = scores[k] > top
        np.copyto(top, scores[k], where=better)
        index[better] = k
    return top, index


def encode_block(window: Window, index: np.ndarray, top: np.ndarray | None, probs: np.ndarray | None,
                 nodata: np.ndarray, lut: np.ndarray, probabilities: str | None, chips: int) -> FinishedBlock:
    """A block's outputs from its winning class ``index`` [h, w], the winner's probability ``top`` (for
    confidence) and the class probabilities ``probs`` [K, h, w] (when written as ``probabilities``: uint8
    0–254, float16 or float32), nodata where ``nodata``."""
    codes = lut[index]
    codes[nodata] = NODATA
    conf = prob_out = None
    if top is not None:
        conf = np.round(top * 100).astype(np.uint8)
        conf[nodata] = NODATA
    if probabilities:
        if probabilities == "uint8":
            prob_out = np.rint(probs * 254).astype(np.uint8)
            prob_out[:, nodata] = NODATA
        else:
            prob_out = probs.astype(np.float16 if probabilities == "float16" else np.float32)
            prob_out[:, nodata] = np.nan
    return FinishedBlock(window, codes, conf, prob_out, chips)


def _with_neighbours(core: np.ndarray, left, above, diagonal) -> np.ndarray:
    """A copy of the block's accumulation with the neighbours' overlap strips added."""
    acc = core.copy()
    if left is not None:
        acc[:, :, :left.shape[2]] += left
    if above is not None:
        acc[:, :above.shape[1], :] += above
    if diagonal is not None:
        acc[:, :diagonal.shape[1], :diagonal.shape[2]] += diagonal
    return acc


def _edge_bands(core: np.ndarray, left, above, diagonal) -> list[tuple[slice, slice, np.ndarray]]:
    """The top band (rows the strip from above covers) and the left band below it, with all strips added."""
    ah = max(above.shape[1] if above is not None else 0, diagonal.shape[1] if diagonal is not None else 0)
    lw = max(left.shape[2] if left is not None else 0, diagonal.shape[2] if diagonal is not None else 0)
    bands = []
    if ah:
        band = _with_neighbours(core[:, :ah], None if left is None else left[:, :ah], above, diagonal)
        bands.append((slice(0, ah), slice(None), band))
    if lw and left is not None and core.shape[1] > ah:
        band = _with_neighbours(core[:, ah:, :lw], left[:, ah:], None, None)
        bands.append((slice(ah, None), slice(0, lw), band))
    return bands
