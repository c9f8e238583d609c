"""Samplers: random chips (uniform or centred on rare classes), the validation grid, sharding by rank."""

import numpy as np
import rasterio

from geoseg.data.appearance import NEUTRAL
from geoseg.data.chips import ChipSpec
from geoseg.data.samplers import GridChipSampler, RandomChipSampler
from geoseg.data.scenes import SceneInfo
from geoseg.data.statistics import median_frequency_weights
from geoseg.io.grid import GeoGrid
from geoseg.io.manifest import SceneRecord

from conftest import write_raster


def _scene(tmp_path, name, h, w, scale=(1.0, 1.0)):
    img = write_raster(tmp_path / f"{name}.tif", np.full((3, h, w), 100, np.uint8))
    with rasterio.open(img) as src:
        return SceneInfo(SceneRecord(img, None, "train"), GeoGrid.from_dataset(src), scale)


def test_rare_class_sampling_centres_chips_on_rare_cells(tmp_path):
    img = write_raster(tmp_path / "s.tif", np.full((3, 256, 256), 100, np.uint8))
    with rasterio.open(img) as src:
        scenes = [SceneInfo(SceneRecord(img, None, "train"), GeoGrid.from_dataset(src), (1.0, 1.0))]
    counts = np.zeros((4, 4, 7), np.int64)
    counts[..., 1] = 4096          # agriculture everywhere
    counts[2, 3, 1], counts[2, 3, 4] = 3000, 1096  # water only in cell (2, 3)
    weights = median_frequency_weights([counts], ignored=[6])
    uniform = list(RandomChipSampler(scenes, 64, 400, seed=1, rare=0.0, cell_counts=[counts],
                                     class_weights=weights))
    rare = list(RandomChipSampler(scenes, 64, 400, seed=1, rare=1.0, cell_counts=[counts],
                                  class_weights=weights))

    def overlaps_water(spec):
        return spec.row < 3 * 64 and spec.row + 64 > 2 * 64 and spec.col < 4 * 64 and spec.col + 64 > 3 * 64

    assert sum(map(overlaps_water, uniform)) < 100
    assert sum(map(overlaps_water, rare)) > 250
    # the same seed gives the same chips
    again = list(RandomChipSampler(scenes, 64, 400, seed=1, rare=1.0, cell_counts=[counts],
                                   class_weights=weights))
    assert again == rare


def test_random_chips_lie_inside_their_scene_and_follow_area(tmp_path):
    scenes = [_scene(tmp_path, "big", 300, 400), _scene(tmp_path, "small", 70, 64)]
    specs = list(RandomChipSampler(scenes, 64, 600, seed=2))
    assert len(specs) == 600
    for s in specs:
        h, w = scenes[s.scene].sampled_shape
        assert 0 <= s.row <= h - 64 and 0 <= s.col <= w - 64 and 0 <= s.aug < 8 and 0.92 <= s.gain <= 1.08
    share_small = sum(s.scene == 1 for s in specs) / len(specs)
    assert 0.01 < share_small < 0.1  # 70·64 of 124,480 px ≈ 3.6 %


def test_random_chips_are_dealt_out_by_rank(tmp_path):
    scenes = [_scene(tmp_path, "a", 200, 200)]
    one = RandomChipSampler(scenes, 64, 10, seed=4)
    ranks = [list(RandomChipSampler(scenes, 64, 10, seed=4, rank=r, world=2)) for r in (0, 1)]
    assert ranks[0] == list(one)[0::2] and ranks[1] == list(one)[1::2]
    one.set_epoch(1)
    assert list(one) != ranks[0] + ranks[1]  # another epoch, other chips


def test_grid_sampler_covers_every_scene_at_its_sampling(tmp_path):
    scenes = [_scene(tmp_path, "a", 100, 130), _scene(tmp_path, "b", 128, 128, scale=(2.0, 2.0))]
    grid = GridChipSampler(scenes, 64)
    assert list(grid) == [ChipSpec(0, r, c) for r in (0, 64) for c in (0, 64, 128)] + [ChipSpec(1, 0, 0)]
    limited = GridChipSampler(scenes, 64, limit=3)
    assert list(limited) == [ChipSpec(0, 0, 0), ChipSpec(0, 64, 0), ChipSpec(1, 0, 0)]
    halves = [GridChipSampler(scenes, 64, rank=r, world=2).specs for r in (0, 1)]
    assert sorted(halves[0] + halves[1]) == sorted(grid.specs)


def test_band_jitter_draws_one_gain_per_band_within_its_range(tmp_path):
    scenes = [_scene(tmp_path, "a", 200, 200)]
    plain = list(RandomChipSampler(scenes, 64, 300, seed=5))
    jittered = list(RandomChipSampler(scenes, 64, 300, seed=5, band_jitter=0.1, bands=4))
    assert all(s.band_gains == () for s in plain)
    assert [s._replace(band_gains=()) for s in jittered] == plain  # the same chips: the baseline's too
    gains = np.array([s.band_gains for s in jittered])
    assert gains.shape == (300, 4) and gains.min() >= 0.9 and gains.max() <= 1.1
    assert gains.min() < 0.92 and gains.max() > 1.08  # the whole range is drawn
    assert np.abs(np.corrcoef(gains.T) - np.eye(4)).max() < 0.2  # each band its own gain
    assert list(RandomChipSampler(scenes, 64, 300, seed=5, band_jitter=0.1, bands=4)) == jittered
    unaugmented = RandomChipSampler(scenes, 64, 300, seed=5, augment=False, band_jitter=0.1, bands=4)
    assert all(s.band_gains == () and s.gain == 1.0 and s.aug == 0 for s in unaugmented)


def test_scene_jitter_draws_a_look_per_chip_and_moves_no_chip(tmp_path):
    scenes = [_scene(tmp_path, "a", 200, 200)]
    plain = list(RandomChipSampler(scenes, 64, 300, seed=5))
    looked = list(RandomChipSampler(scenes, 64, 300, seed=5, scene_jitter=0.2))
    assert all(s.look == NEUTRAL for s in plain)
    assert [s._replace(look=NEUTRAL) for s in looked] == plain  # the same chips, gains and flips
    looks = np.array([s.look[:5] + s.look[6:] for s in looked])  # all but the noise seed
    low = [-0.2, 0.8, 0.8, -0.5, 0.0, 0.9]
    high = [0.2, 1.2, 1.2, 0.5, 0.05, 1.1]
    assert (looks >= low).all() and (looks <= high).all()
    span = looks.max(axis=0) - looks.min(axis=0)
    assert (span > 0.9 * (np.array(high) - low)).all()  # each change drawn over its whole range
    assert len({s.look.noise_seed for s in looked}) == 300
    assert list(RandomChipSampler(scenes, 64, 300, seed=5, scene_jitter=0.2)) == looked
    unaugmented = RandomChipSampler(scenes, 64, 300, seed=5, augment=False, scene_jitter=0.2)
    assert all(s.look == NEUTRAL for s in unaugmented)
