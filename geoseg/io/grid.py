"""Pure geometry of scenes, chips and blocks.

A :class:`GeoGrid` is a scene's pixel grid (shape, affine transform, CRS) as one
immutable value. A :class:`ChipGrid` is the *one global* stride grid of chips
over a scene: every chip position is a function of the scene alone, so a pixel's
prediction never depends on how the scene is cut into processing blocks.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterator

import numpy as np
from affine import Affine
from rasterio.crs import CRS
from rasterio.windows import Window

from geoseg.io.geodesy import ground_steps


@dataclass(frozen=True)
class GeoGrid:
    """A raster's pixel grid: ``width`` × ``height`` pixels placed by ``transform`` in ``crs``."""

    width: int
    height: int
    transform: Affine
    crs: CRS | None
    gcps: tuple = ()                  # ground control points, for scenes georeferenced by them alone
    gcp_crs: CRS | None = None
    rpcs: object | None = None        # rational polynomial coefficients (rasterio.rpc.RPC)

    @classmethod
    def from_dataset(cls, dataset) -> "GeoGrid":
        gcps, gcp_crs = dataset.gcps
        return cls(dataset.width, dataset.height, dataset.transform, dataset.crs, tuple(gcps), gcp_crs,
                   dataset.rpcs)

    @property
    def has_geotransform(self) -> bool:
        """Whether pixels are placed by an affine transform in a CRS (not only by GCPs or RPCs)."""
        return self.crs is not None or not (self.gcps or self.rpcs)

    @property
    def shape(self) -> tuple[int, int]:
        return (self.height, self.width)

    @property
    def pixel_area(self) -> float:
        """Area of one pixel in squared CRS units."""
        return abs(self.transform.a * self.transform.e - self.transform.b * self.transform.d)

    @property
    def pixel_size(self) -> tuple[float, float]:
        """Pixel width and height in CRS units: the lengths of the transform's column vectors.

        Right for rotated grids too, where ``|a|`` alone can be 0.
        """
        t = self.transform
        return math.hypot(t.a, t.d), math.hypot(t.b, t.e)

    @property
    def is_projected(self) -> bool:
        """Whether the grid has a CRS in linear units (metres, feet)."""
        return self.crs is not None and not self.crs.is_geographic

    @property
    def placement(self) -> tuple[Affine, CRS] | None:
        """The transform and CRS that place the pixels on Earth: the geotransform, or for a scene placed by
        ground control points alone the affine fit of its GCPs; None for a plain pixel grid."""
        if self.crs is not None:
            return self.transform, self.crs
        if len(self.gcps) >= 3 and self.gcp_crs is not None:
            from rasterio.transform import from_gcps

            return from_gcps(list(self.gcps)), self.gcp_crs
        return None

    def ground_steps(self, cols, rows) -> tuple[np.ndarray, np.ndarray] | None:
        """Ground length in metres of one pixel along x and along y at pixel positions (``cols``, ``rows``),
        measured on the CRS's ellipsoid (any CRS: projected in any unit, Web Mercator, geographic); None
        without a placement on Earth."""
        placement = self.placement
        if placement is None:
            return None
        return ground_steps(*placement, cols, rows)

    @property
    def ground_pixel_size(self) -> tuple[float, float] | None:
        """Pixel width and height in metres on the ground at the scene's centre; None without a placement
        on Earth."""
        steps = self.ground_steps([self.width / 2], [self.height / 2])
        return None if steps is None else (float(steps[0][0]), float(steps[1][0]))

    @property
    def ground_resolution(self) -> float | None:
        """Pixel width in metres on the ground at the scene's centre; None without a placement on Earth."""
        size = self.ground_pixel_size
        return None if size is None else size[0]

    def zoom(self, scale: float | tuple[float, float]) -> "GeoGrid":
        """The same extent sampled with pixels ``scale`` times larger (one factor, or (x, y) factors), rounded
        to whole pixels."""
        sx, sy = scale if isinstance(scale, tuple) else (scale, scale)
        width, height = max(1, round(self.width / sx)), max(1, round(self.height / sy))
        transform = self.transform @ Affine.scale(self.width / width, self.height / height)
        return GeoGrid(width, height, transform, self.crs)

    def clip(self, window: Window) -> Window:
        """The part of ``window`` inside the grid (may be empty)."""
        c0 = max(0, int(window.col_off))
        r0 = max(0, int(window.row_off))
        c1 = min(self.width, int(window.col_off + window.width))
        r1 = min(self.height, int(window.row_off + window.height))
        return Window(c0, r0, max(0, c1 - c0), max(0, r1 - r0))


def metres_per_unit(crs) -> float:
    """Metres per linear unit of a projected CRS (1 for metres, 0.3048 for feet); 1 when unknown."""
    if crs is None:
        return 1.0
    from pyproj import CRS as ProjCRS

    info = ProjCRS.from_user_input(crs).axis_info
    return float(info[0].unit_conversion_factor) if info else 1.0


def _chip_count(length: int, chip: int, stride: int, offset: int) -> int:
    """Chips needed so that chip k = [k*stride - offset, k*stride - offset + chip) covers [0, length)."""
    return max(1, math.ceil((length + offset - chip) / stride) + 1)


@dataclass(frozen=True)
class ChipGrid:
    """The global chip grid: chip (i, j) starts at row ``i*stride - offset``, column ``j*stride - offset``.

    ``offset`` (half the overlap) places scene edges inside the first chip rather
    than on its border; chips may extend past the scene, where the reader pads.
    """

    width: int
    height: int
    chip: int
    stride: int
    offset: int

    @classmethod
    def for_scene(cls, width: int, height: int, chip: int, overlap: int) -> "ChipGrid":
        if chip <= 0:
            raise ValueError(f"chip size must be positive, got {chip}")
        if not 0 <= overlap < chip:
            raise ValueError(f"overlap must be in [0, chip size), got {overlap} for chip {chip}")
        return cls(width, height, chip, chip - overlap, overlap // 2)

    @property
    def overlap(self) -> int:
        return self.chip - self.stride

    @property
    def rows(self) -> int:
        return _chip_count(self.height, self.chip, self.stride, self.offset)

    @property
    def cols(self) -> int:
        return _chip_count(self.width, self.chip, self.stride, self.offset)

    def __len__(self) -> int:
        return self.rows * self.cols

    def origin(self, i: int, j: int) -> tuple[int, int]:
        """(row, col) of chip (i, j)'s top-left pixel in scene coordinates."""
        return i * self.stride - self.offset, j * self.stride - self.offset


def blocks(width: int, height: int, block: int) -> Iterator[Window]:
    """Non-overlapping windows of at most ``block`` × ``block`` pixels tiling the grid, row by row."""
    if block <= 0:
        raise ValueError(f"block size must be positive, got {block}")
    for r in range(0, height, block):
        for c in range(0, width, block):
            yield Window(c, r, min(block, width - c), min(block, height - r))


def span_window(grid: ChipGrid, rows: range, cols: range) -> Window:
    """The pixel window spanned by chips ``rows`` × ``cols`` (may extend past the scene)."""
    r0, c0 = grid.origin(rows.start, cols.start)
    r1, c1 = grid.origin(rows.stop - 1, cols.stop - 1)
    return Window(c0, r0, c1 + grid.chip - c0, r1 + grid.chip - r0)


@dataclass(frozen=True)
class GridBlock:
    """An output block of ``cells`` × ``cells`` grid strides: the pixels it owns and the chips it computes.

    Block (i, j) computes exactly the chips whose origin lies in its cells, so
    every chip of the global grid is computed once; a chip's overlap reaching
    into the next block is handed over (see :mod:`geoseg.inference.predict`).
    """

    i: int
    j: int
    window: Window    # owned pixels
    rows: range       # chip rows computed here
    cols: range       # chip columns computed here


def _axis_blocks(length: int, stride: int, offset: int, cells: int,
                 n_chips: int) -> list[tuple[int, int, range]]:
    out = []
    m = 0
    while True:
        start = max(0, m * cells * stride - offset)
        if start >= length:
            return out
        stop = min(length, (m + 1) * cells * stride - offset)
        out.append((start, stop, range(m * cells, min((m + 1) * cells, n_chips))))
        m += 1


def grid_blocks(grid: ChipGrid, cells: int) -> list[list[GridBlock]]:
    """Rows of output blocks aligned to the chip grid, each ``cells`` strides on a side."""
    if cells <= 0:
        raise ValueError(f"block size in grid cells must be positive, got {cells}")
    rows = _axis_blocks(grid.height, grid.stride, grid.offset, cells, grid.rows)
    cols = _axis_blocks(grid.width, grid.stride, grid.offset, cells, grid.cols)
    return [[GridBlock(i, j, Window(c0, r0, c1 - c0, r1 - r0), rr, cc)
             for j, (c0, c1, cc) in enumerate(cols)]
            for i, (r0, r1, rr) in enumerate(rows)]
