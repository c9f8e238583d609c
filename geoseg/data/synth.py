"""Synthetic land-cover scenes that look like aerial imagery, for demos and tests.

A :class:`Landscape` is drawn once from a seed (parcel seeds and their classes,
a river, ponds, an urban road grid, a slanted scene footprint); :func:`render`
then paints any window of it from global pixel coordinates alone, so scenes of
any size are written block by block in bounded memory.

Classes follow DeepGlobe (urban, agriculture, rangeland, forest, water, barren).
Textures, not mean colours, separate the classes: dry rangeland, bare fields and
barren land share colours; crop rows, tree crowns, roofs and roads differ.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy.spatial import cKDTree

from geoseg.data.noise import fbm, gaussian, hash01, smoothstep, value_noise

URBAN, AGRICULTURE, RANGELAND, FOREST, WATER, BARREN, UNKNOWN = range(7)
PARCEL_SPACING = 180  # px between parcel seeds (90 m at 0.5 m pixels)


@dataclass(frozen=True)
class Landscape:
    width: int
    height: int
    seed: int
    seeds_xy: np.ndarray        # (n, 2) parcel seed positions in pixels
    seed_class: np.ndarray      # (n,) class of each parcel
    river: tuple[float, ...] | None  # angle, offset, amp1, len1, ph1, amp2, len2, ph2, width
    ponds: tuple[tuple[float, float, float, float, float], ...]  # cx, cy, r, p1, p2
    road_angle: float
    footprint_angle: float
    light_angle: float

    def __hash__(self) -> int:  # numpy fields are not hashable
        return hash((self.width, self.height, self.seed))


def make_landscape(width: int, height: int, seed: int) -> Landscape:
    """Draw a landscape's layout; everything else is derived from it per pixel."""
    rng = np.random.default_rng(seed)
    gx = np.arange(-1, width // PARCEL_SPACING + 2)
    gy = np.arange(-1, height // PARCEL_SPACING + 2)
    xx, yy = np.meshgrid(gx, gy)
    pts = np.stack([xx.ravel(), yy.ravel()], 1).astype(float) * PARCEL_SPACING
    pts += rng.uniform(0.1, 0.9, pts.shape) * PARCEL_SPACING
    urban = fbm(pts[:, 0], pts[:, 1], 900, seed + 11, 3)
    forest = fbm(pts[:, 0], pts[:, 1], 600, seed + 12, 3)
    roll = rng.uniform(size=len(pts))
    cls = np.full(len(pts), AGRICULTURE)
    cls[roll < 0.30] = RANGELAND
    cls[roll < 0.15] = BARREN
    cls[forest > 0.64] = FOREST
    cls[urban > 0.66] = URBAN
    river = None
    if rng.uniform() < 0.85:
        river = (
            rng.uniform(-0.5, 0.5), rng.uniform(0.3, 0.7) * height,
            rng.uniform(20, 60), rng.uniform(300, 700), rng.uniform(0, 2 * math.pi),
            rng.uniform(5, 20), rng.uniform(90, 200), rng.uniform(0, 2 * math.pi),
            rng.uniform(22, 36),
        )
    n_ponds = rng.poisson(1.5 * width * height / 1024**2)
    ponds = tuple(
        (rng.uniform(0, width), rng.uniform(0, height), rng.uniform(18, 40),
         rng.uniform(0, 2 * math.pi), rng.uniform(0, 2 * math.pi))
        for _ in range(n_ponds)
    )
    return Landscape(
        width, height, seed, pts, cls, river, ponds,
        road_angle=rng.uniform(0, math.pi / 2),
        footprint_angle=rng.choice([-1, 1]) * rng.uniform(math.radians(5), math.radians(9)),
        light_angle=rng.uniform(0, 2 * math.pi),
    )


def _rotate(x, y, angle):
    c, s = math.cos(angle), math.sin(angle)
    return x * c + y * s, -x * s + y * c


def labels(land: Landscape, x: np.ndarray, y: np.ndarray, tree: cKDTree,
           nearest: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Class of every pixel at (x, y), with the parcel id and distance to the river centre line.

    ``nearest`` may pass the index of each pixel's nearest parcel seed when the caller already has it.
    """
    s = land.seed
    if nearest is None:
        _, nearest = tree.query(np.stack([x.ravel(), y.ravel()], 1), k=1)
    wx = x + 60 * (fbm(x, y, 160, s + 21, 3) - 0.5)
    wy = y + 60 * (fbm(x, y, 160, s + 22, 3) - 0.5)
    _, i_warp = tree.query(np.stack([wx.ravel(), wy.ravel()], 1), k=1)
    i_straight = np.asarray(nearest).reshape(x.shape)
    i_warp = i_warp.reshape(x.shape)
    c_s, c_w = land.seed_class[i_straight], land.seed_class[i_warp]
    use_straight = (c_s == AGRICULTURE) & (c_w == AGRICULTURE)
    parcel = np.where(use_straight, i_straight, i_warp)
    cls = land.seed_class[parcel].copy()

    river_dist = np.full(x.shape, np.inf)
    if land.river is not None:
        angle, off, a1, l1, p1, a2, l2, p2, width = land.river
        u, v = _rotate(x, y, angle)
        centre = off + a1 * np.sin(2 * np.pi * u / l1 + p1) + a2 * np.sin(2 * np.pi * u / l2 + p2)
        slope = (a1 * 2 * np.pi / l1 * np.cos(2 * np.pi * u / l1 + p1)
                 + a2 * 2 * np.pi / l2 * np.cos(2 * np.pi * u / l2 + p2))
        half = width / 2 * (1 + 0.25 * np.sin(2 * np.pi * u / 410 + p2))
        river_dist = np.abs(v - centre) / np.sqrt(1 + slope**2) / half
        bank = (river_dist < 2.2) & (cls != URBAN)
        riparian = np.where(fbm(x, y, 70, s + 23, 2) > 0.5, FOREST, RANGELAND)
        cls = np.where(bank, riparian, cls)
        cls = np.where(river_dist < 1, WATER, cls)
    x0, x1, y0, y1 = x.min(), x.max(), y.min(), y.max()
    for cx, cy, r, p1, p2 in land.ponds:
        reach = r * 1.3
        if cx + reach < x0 or cx - reach > x1 or cy + reach < y0 or cy - reach > y1:
            continue  # the pond is nowhere near this window
        theta = np.arctan2(y - cy, x - cx)
        radius = r * (1 + 0.18 * np.sin(3 * theta + p1) + 0.1 * np.sin(5 * theta + p2))
        inside = np.hypot(x - cx, y - cy) < radius
        cls = np.where(inside & (cls != URBAN), WATER, cls)
    return cls.astype(np.uint8), parcel, river_dist


def _mix(a, b, t):
    t = t[..., None]
    return a * (1 - t) + b * t


def _color(*rgb):
    return np.array(rgb, dtype=np.float64)


def render(land: Landscape, window_rows: tuple[int, int], window_cols: tuple[int, int]):
    """Paint rows × cols of the scene: returns (rgb uint8 [3,h,w], class uint8 [h,w], valid bool [h,w])."""
    s = land.seed
    r0, r1 = window_rows
    c0, c1 = window_cols
    y, x = np.mgrid[r0:r1, c0:c1].astype(np.float64) + 0.5
    tree = cKDTree(land.seeds_xy)
    d2, nearest = tree.query(np.stack([x.ravel(), y.ravel()], 1), k=2)
    cls, parcel, river_dist = labels(land, x, y, tree, nearest[:, 0])
    h, w = cls.shape
    img = np.zeros((h, w, 3))

    # Agriculture: parcels with crop rows at their own orientation, period and crop stage.
    ph = hash01(parcel, 0, s + 31)
    angle = hash01(parcel, 1, s + 31) * math.pi
    period = 5 + 5 * hash01(parcel, 2, s + 31)
    stage = hash01(parcel, 3, s + 31)
    crops = np.stack([
        _color(70, 120, 45), _color(105, 140, 60), _color(150, 150, 80),
        _color(185, 165, 105), _color(140, 112, 84),
    ])
    base = crops[np.minimum((stage * 5).astype(int), 4)]
    rows = 0.5 + 0.5 * np.sin(2 * np.pi * (x * np.cos(angle) + y * np.sin(angle)) / period + ph * 6.28)
    depth = 0.03 + 0.25 * hash01(parcel, 4, s + 31)
    within = fbm(x, y, 120, s + 32, 3) - 0.5
    ag = base * (1 - depth[..., None] * rows[..., None]) * (1 + 0.25 * within[..., None])
    margin = (d2[:, 1] - d2[:, 0]).reshape(h, w) < 5
    ag = np.where(margin[..., None], _color(160, 140, 110), ag)

    # Forest: tree crowns with shadows.
    crowns = 0.6 * value_noise(x, y, 5.5, s + 41) + 0.4 * value_noise(x, y, 12, s + 42)
    lit = smoothstep(0.35, 0.75, crowns)
    forest = _mix(_color(18, 40, 24), _color(58, 102, 48), lit)
    forest *= (1 + 0.2 * (fbm(x, y, 200, s + 43, 2) - 0.5))[..., None]

    # Rangeland: grass from green to dry, sparse dark shrubs.
    dryness = fbm(x, y, 150, s + 51, 3)
    grass = _mix(_color(100, 132, 62), _color(165, 150, 105), smoothstep(0.3, 0.75, dryness))
    grass *= (1 + 0.10 * (value_noise(x, y, 3, s + 52) - 0.5))[..., None]
    density = 0.66 + 0.22 * hash01(parcel, 5, s + 53)
    shrubs = smoothstep(density, density + 0.1, value_noise(x, y, 4, s + 53))
    rangeland = _mix(grass, _color(45, 60, 35), shrubs)

    # Barren: sand, bare rock and gravel with fine speckle.
    tone = fbm(x, y, 180, s + 61, 3)
    barren = _mix(_color(172, 152, 122), _color(150, 146, 140), smoothstep(0.35, 0.7, tone))
    grain = 1 + 0.16 * (value_noise(x, y, 2.0, s + 62) - 0.5) + 0.08 * (value_noise(x, y, 25, s + 63) - 0.5)
    barren *= grain[..., None]

    # Water: deep centre, shallow turbid banks, ponds greener.
    depth_t = np.clip(1 - river_dist, 0, 1) if np.isfinite(river_dist).any() else np.zeros((h, w))
    water = _mix(_color(75, 90, 70), _color(22, 48, 62), smoothstep(0.0, 0.6, depth_t))
    water = np.where((river_dist >= 1)[..., None], _color(38, 68, 56), water)
    water *= (1 + 0.06 * (fbm(x, y, 40, s + 71, 2) - 0.5))[..., None]

    urban = _urban(land, x, y, s)

    for k, layer in ((AGRICULTURE, ag), (FOREST, forest), (RANGELAND, rangeland),
                     (BARREN, barren), (WATER, water), (URBAN, urban)):
        img = np.where((cls == k)[..., None], layer, img)

    img = _sensor(land, img, x, y, s)
    # The slanted footprint outside which there is no data.
    fu, fv = _rotate(x - land.width / 2, y - land.height / 2, land.footprint_angle)
    valid = (np.abs(fu) < land.width * 0.5) & (np.abs(fv) < land.height * 0.5)
    rgb = np.clip(np.rint(img), 1, 255).astype(np.uint8)
    rgb[~valid] = 0
    cls = np.where(valid, cls, 255).astype(np.uint8)
    return np.moveaxis(rgb, -1, 0), cls, valid


def _urban(land: Landscape, x: np.ndarray, y: np.ndarray, s: int) -> np.ndarray:
    """Urban colours: a rotated road grid, lots with roofs, shadows and gardens."""
    u, v = _rotate(x, y, land.road_angle)
    road = ((u % 80) < 8) | ((v % 96) < 8)
    lot_u, lot_v = np.floor((u % 80 - 8) / 36), np.floor((v % 96 - 8) / 44)
    lot_id_u, lot_id_v = np.floor(u / 80) * 3 + lot_u, np.floor(v / 96) * 3 + lot_v
    lu, lv = (u % 80 - 8) % 36, (v % 96 - 8) % 44
    building = (lu > 4) & (lu < 31) & (lv > 5) & (lv < 38)
    shadow = (lu >= 31) & (lu < 34) & (lv > 7) & (lv < 40)
    roof_pick = hash01(lot_id_u, lot_id_v, s + 81)
    roofs = np.stack([_color(170, 80, 60), _color(120, 120, 125), _color(210, 205, 195), _color(95, 75, 70)])
    roof = roofs[np.minimum((roof_pick * 4).astype(int), 3)]
    roof = roof * np.where(lv < 21.5, 1.08, 0.9)[..., None]
    garden = _mix(_color(85, 120, 60), _color(120, 115, 100), value_noise(x, y, 6, s + 82))
    is_garden = hash01(lot_id_u, lot_id_v, s + 83) < 0.15
    urban = np.where((building & ~is_garden)[..., None], roof, garden)
    urban = np.where(shadow[..., None], _color(50, 52, 55), urban)
    urban = np.where(road[..., None], _color(115, 112, 108), urban)
    return urban


def _sensor(land: Landscape, img: np.ndarray, x: np.ndarray, y: np.ndarray, s: int) -> np.ndarray:
    """What the sensor adds: an illumination gradient, haze, a per-scene colour shift and noise."""
    lu_, _ = _rotate(x - land.width / 2, y - land.height / 2, land.light_angle)
    gain = 1 + 0.12 * lu_ / max(land.width, land.height) * 2 + 0.06 * (fbm(x, y, 500, s + 91, 2) - 0.5)
    img = img * gain[..., None]
    for b in range(3):
        band_gain = 1 + 0.16 * (hash01(b, 0, s + 95) - 0.5)  # per-scene sensor/season colour shift
        img[..., b] = img[..., b] * band_gain + 5.0 * gaussian(x, y, s + 100 + 10 * b)
    return img
