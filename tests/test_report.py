"""Report pieces: a gallery stretched per scene, so a uniform chip does not show its noise as colour."""

import numpy as np
import rasterio

from geoseg.outputs.panels import scene_limits, stretch

from conftest import write_raster


def test_chips_are_stretched_with_the_scenes_limits(tmp_path):
    rng = np.random.default_rng(0)
    scene = rng.integers(0, 255, (3, 128, 128)).astype(np.uint8)
    scene[:, :32, :32] = 40 + rng.integers(0, 2, (3, 32, 32))  # calm water: values 40 or 41
    path = write_raster(tmp_path / "s.tif", scene)
    with rasterio.open(path) as src:
        limits = scene_limits(src)
        water = src.read(window=((0, 32), (0, 32))).astype(np.float32)
    own = stretch(water)                  # its own 2–98 %: 40 → 0 and 41 → 255, static
    shared = stretch(water, limits)       # the scene's: 40 and 41 almost the same dark blue
    assert own.max() - own.min() == 255
    assert shared.max() - shared.min() <= 3
