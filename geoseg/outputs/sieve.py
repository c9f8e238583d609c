"""The minimum mapping unit: regions smaller than a number of pixels are absorbed by a neighbour, block by
block in bounded memory, with exactly the result of sieving the whole raster at once.

A sieve run block by block with a halo (as GDAL's would be) is not the
whole-raster sieve: which neighbour absorbs a small region depends on the
neighbours' sizes, and a halo cuts them. Here every decision is taken on the
whole raster's regions, so the block size cannot change the result:

1. Each block is labelled into 4-connected regions of one class; regions that
   touch across a block edge are joined (a graph's connected components), which
   gives every region of the raster its true size and its neighbours.
2. Small regions (under ``min_pixels``), smallest first, are absorbed by their
   largest neighbour (the lowest id on a tie); a region that grows past the
   minimum stops absorbing, one still under it is absorbed in turn. Ties go to
   the region whose first pixel comes first in row-major order. Regions with
   no neighbour of any class (enclosed by nodata or the raster's edge) stay.
3. Each block is labelled again and written with the classes the regions ended
   up with. Nodata is never filled.

Only the labels of a block and one row of labels above it are held at once,
plus a few numbers per region.
"""

from __future__ import annotations

import heapq
import os
from pathlib import Path

import numpy as np
import rasterio
from scipy import ndimage, sparse
from scipy.sparse.csgraph import connected_components

from geoseg.io.atomic import atomic_output
from geoseg.io.classes import NODATA
from geoseg.io.grid import blocks
from geoseg.io.raster import open_raster
from geoseg.outputs.class_raster import copy_pam_sidecar

DEFAULT_BLOCK = 2048
FOUR_CONNECTED = np.array([[0, 1, 0], [1, 1, 1], [0, 1, 0]])


def sieve_raster(path: str | os.PathLike, output: str | os.PathLike, min_pixels: int,
                 block: int = DEFAULT_BLOCK) -> None:
    """Write ``path`` to ``output`` (which may be ``path`` itself) with every 4-connected region under
    ``min_pixels`` absorbed by its largest neighbouring region; the same result for any ``block``."""
    with open_raster(path) as src:
        nodata = int(src.nodata) if src.nodata is not None else NODATA
        windows = list(blocks(src.width, src.height, block))
        regions = _label_regions(src, windows, nodata)
        final_class = _absorb_small_regions(regions, int(min_pixels))
        profile = src.profile
        if src.driver != "GTiff":  # a mosaic VRT is sieved into a GeoTIFF
            profile.update(driver="GTiff", tiled=True, blockxsize=256, blockysize=256, compress="deflate")
        cmap = src.colormap(1) if src.colorinterp[0].name == "palette" else None
        tags, description = src.tags(), src.descriptions[0]
        in_place = Path(output).resolve() == Path(path).resolve()  # the file itself: nothing to check
        with atomic_output(output, overwrite=True, checked=in_place) as tmp, \
                rasterio.open(tmp, "w", **profile) as dst:
            if cmap:
                dst.write_colormap(1, cmap)
            dst.update_tags(**tags, sieve_min_pixels=str(min_pixels))
            if description:
                dst.set_band_description(1, description)
            for window, base in zip(windows, regions.bases):
                data = src.read(1, window=window)
                labels, _, _ = _label_block(data, nodata)
                out = data.copy()
                inside = labels > 0
                out[inside] = final_class[base + labels[inside] - 1]
                dst.write(out, 1, window=window)
        copy_pam_sidecar(path, tmp)  # keep the class names


class _Regions:
    """The raster's regions after joining them across block edges."""

    def __init__(self, component: np.ndarray, sizes: np.ndarray, classes: np.ndarray, first: np.ndarray,
                 pairs: np.ndarray, bases: list[int]):
        self.component = component  # block label (global id) → region
        self.sizes = sizes          # region → pixels
        self.classes = classes      # region → class value
        self.first = first          # region → its first pixel in row-major order: an id no blocking changes
        self.pairs = pairs          # [n, 2] neighbouring regions of different classes
        self.bases = bases          # per block: the global id of its label 1, minus 1


def _label_block(data: np.ndarray, nodata: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """4-connected regions of one class in a block: labels 1..n (0 for nodata), and each label's size and
    class. Deterministic, so a second pass gives the same labels."""
    labels = np.zeros(data.shape, np.int64)
    classes = []
    count = 0
    for value in np.unique(data):
        if value == nodata:
            continue
        lab, n = ndimage.label(data == value, structure=FOUR_CONNECTED)
        labels[lab > 0] = lab[lab > 0] + count
        classes += [int(value)] * n
        count += n
    sizes = np.bincount(labels.ravel(), minlength=count + 1)[1:]
    return labels, sizes, np.asarray(classes, np.int64)


def _touching(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pairs of labels that face each other in ``a`` and ``b`` (same shape), both labelled, distinct."""
    keep = (a > 0) & (b > 0) & (a != b)
    if not keep.any():
        return np.zeros((0, 2), np.int64)
    return np.unique(np.stack([a[keep], b[keep]], axis=1), axis=0)


def _label_regions(src, windows: list, nodata: int) -> _Regions:
    """Label every block, join same-class labels across block edges, collect sizes and neighbours."""
    sizes, classes, firsts, pairs, bases = [], [], [], [], []
    above = np.zeros(src.width, np.int64)   # global labels of the last row of the blocks above
    left = None                              # global labels of the last column of the block to the left
    count = 0
    for window in windows:
        r0, c0 = int(window.row_off), int(window.col_off)
        labels, block_sizes, block_classes = _label_block(src.read(1, window=window), nodata)
        firsts.append(_first_pixels(labels, len(block_sizes), r0, c0, src.width))
        labels = np.where(labels > 0, labels + count, 0)
        bases.append(count)
        count += len(block_sizes)
        sizes.append(block_sizes)
        classes.append(block_classes)
        pairs += [_touching(labels[:, :-1], labels[:, 1:]), _touching(labels[:-1], labels[1:])]
        if r0 > 0:
            pairs.append(_touching(above[c0:c0 + labels.shape[1]], labels[0]))
        if c0 > 0 and left is not None:
            pairs.append(_touching(left, labels[:, 0]))
        above[c0:c0 + labels.shape[1]] = labels[-1]
        left = labels[:, -1] if c0 + labels.shape[1] < src.width else None
    sizes, classes, firsts = np.concatenate(sizes), np.concatenate(classes), np.concatenate(firsts)
    pairs = np.concatenate(pairs) - 1 if pairs else np.zeros((0, 2), np.int64)
    same = classes[pairs[:, 0]] == classes[pairs[:, 1]]  # one region cut by a block edge
    joins = pairs[same]
    graph = sparse.coo_matrix((np.ones(len(joins)), (joins[:, 0], joins[:, 1])), shape=(count, count))
    _, component = connected_components(graph, directed=False)
    region_sizes = np.bincount(component, weights=sizes).astype(np.int64)
    region_classes = np.zeros(len(region_sizes), np.int64)
    region_classes[component] = classes
    region_first = np.full(len(region_sizes), np.iinfo(np.int64).max)
    np.minimum.at(region_first, component, firsts)
    neighbours = component[pairs[~same]]
    neighbours = np.unique(np.sort(neighbours, axis=1), axis=0) if len(neighbours) else neighbours
    return _Regions(component, region_sizes, region_classes, region_first, neighbours, bases)


def _first_pixels(labels: np.ndarray, count: int, r0: int, c0: int, width: int) -> np.ndarray:
    """Each block label's first pixel in the raster's row-major order, as a flat index."""
    values, index = np.unique(labels.ravel(), return_index=True)
    rows, cols = np.divmod(index[values > 0], labels.shape[1])
    out = np.empty(count, np.int64)
    out[values[values > 0] - 1] = (r0 + rows) * width + c0 + cols
    return out


def _absorb_small_regions(regions: _Regions, min_pixels: int) -> np.ndarray:
    """The class each block label ends up with once small regions are absorbed, smallest first (ties: the
    region whose first pixel comes first)."""
    n = len(regions.sizes)
    size, first = regions.sizes.copy(), regions.first
    owner = np.arange(n)  # the region a region was absorbed into (followed to the end)
    neighbours: dict[int, set[int]] = {}
    for a, b in regions.pairs.tolist():
        neighbours.setdefault(a, set()).add(b)
        neighbours.setdefault(b, set()).add(a)
    heap = [(int(size[r]), int(first[r]), r) for r in range(n) if size[r] < min_pixels and r in neighbours]
    heapq.heapify(heap)
    while heap:
        s, _, r = heapq.heappop(heap)
        if owner[r] != r or s != size[r] or size[r] >= min_pixels or not neighbours.get(r):
            continue
        target = max(neighbours[r], key=lambda m: (size[m], -first[m]))
        owner[r] = target
        size[target] += size[r]
        for m in neighbours.pop(r):
            neighbours[m].discard(r)
            if m != target:
                neighbours[m].add(target)
                neighbours[target].add(m)
        if size[target] < min_pixels:
            heapq.heappush(heap, (int(size[target]), int(first[target]), target))
    final = _follow(owner)
    return regions.classes[final][regions.component]


def _follow(owner: np.ndarray) -> np.ndarray:
    """Each region's final owner, following chains of absorptions."""
    final = owner.copy()
    while True:
        nxt = final[final]
        if (nxt == final).all():
            return final
        final = nxt
