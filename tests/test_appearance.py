"""Scene augmentation: another scene's look (brightness, contrast, saturation, sharpness, noise, scale) on a
training chip, with nodata kept out of it."""

import numpy as np
import pytest
import rasterio
from scipy.ndimage import laplace

from geoseg.data.appearance import NEUTRAL, Look, apply_look, draw_look
from geoseg.data.chips import ChipDataset, ChipSpec
from geoseg.data.scenes import SceneInfo
from geoseg.io.classes import DEEPGLOBE, IGNORE_INDEX
from geoseg.io.grid import GeoGrid
from geoseg.io.manifest import SceneRecord

from conftest import write_raster


@pytest.fixture
def chip():
    rng = np.random.default_rng(0)
    image = rng.normal(0, 1, (3, 32, 32)).astype(np.float32)
    image[0] += np.linspace(-1, 1, 32)[None, :]
    valid = np.ones((32, 32), bool)
    valid[:6] = False  # nodata rows: normalised to 0
    image[:, ~valid] = 0.0
    return image, valid


def test_a_neutral_look_changes_nothing(chip):
    image, valid = chip
    assert apply_look(image, valid, NEUTRAL) is image
    assert draw_look(np.random.default_rng(1), 0.0) == NEUTRAL


def test_brightness_contrast_and_saturation_do_what_they_say(chip):
    image, valid = chip
    v = valid
    brighter = apply_look(image, v, Look(brightness=0.3))
    np.testing.assert_allclose(brighter[:, v], image[:, v] + 0.3, atol=1e-6)
    contrast = apply_look(image, v, Look(contrast=1.5))
    means = image[:, v].mean(axis=1, keepdims=True)
    np.testing.assert_allclose(contrast[:, v], means + 1.5 * (image[:, v] - means), atol=1e-5)
    grey = apply_look(image, v, Look(saturation=0.0))  # no saturation: every band the pixel's band mean
    np.testing.assert_allclose(grey[:, v], np.broadcast_to(image[:, v].mean(axis=0), (3, v.sum())), atol=1e-6)
    richer = apply_look(image, v, Look(saturation=1.2))
    np.testing.assert_allclose(richer[:, v].mean(axis=0), image[:, v].mean(axis=0), atol=1e-5)
    assert richer[:, v].std(axis=0).mean() == pytest.approx(1.2 * image[:, v].std(axis=0).mean(), rel=1e-4)


def test_blur_and_sharpening_move_the_fine_detail_and_noise_is_reproducible(chip):
    image, valid = chip
    inner = (slice(None), slice(8, -2), slice(2, -2))  # away from the nodata rows and the edges

    def detail(a):
        return np.abs(np.stack([laplace(b) for b in a]))[inner].mean()

    blurred = apply_look(image, valid, Look(sharpness=-0.5))
    sharper = apply_look(image, valid, Look(sharpness=0.5))
    assert detail(blurred) < 0.7 * detail(image) < 0.7 * detail(sharper)
    noisy = apply_look(image, valid, Look(noise=0.05, noise_seed=3))
    assert (noisy[:, valid] - image[:, valid]).std() == pytest.approx(0.05, rel=0.1)
    np.testing.assert_array_equal(noisy, apply_look(image, valid, Look(noise=0.05, noise_seed=3)))
    assert not np.array_equal(noisy, apply_look(image, valid, Look(noise=0.05, noise_seed=4)))


def test_nodata_stays_the_fill_and_does_not_leak_into_valid_pixels(chip):
    image, valid = chip
    look = draw_look(np.random.default_rng(7), 0.5)._replace(sharpness=-1.0)
    out = apply_look(image, valid, look)
    assert (out[:, ~valid] == 0).all()
    other = image.copy()
    other[:, ~valid] = 50.0  # whatever the fill, valid pixels come out the same
    again = apply_look(other, valid, look)
    np.testing.assert_allclose(again[:, valid], out[:, valid], atol=1e-5)
    assert (again[:, ~valid] == 50.0).all()
    assert apply_look(image, np.zeros_like(valid), look) is image  # nothing valid: nothing to change


def test_a_look_s_scale_reads_image_and_labels_over_a_larger_ground_area(tmp_path):
    """A ramp of one unit per column read at scale 2: each chip pixel is the mean of two columns, and the
    label boundary at column 60 falls at chip column (60 − 20) / 2."""
    image = np.broadcast_to(100 + np.arange(200, dtype=np.float32), (3, 64, 200)).copy()
    labels = np.zeros((64, 200), np.uint8)
    labels[:, 60:] = 4
    img, lbl = write_raster(tmp_path / "s.tif", image), write_raster(tmp_path / "l.tif", labels)
    with rasterio.open(img) as src:
        scene = SceneInfo(SceneRecord(img, lbl, "train"), GeoGrid.from_dataset(src), (1.0, 1.0))
    ds = ChipDataset([scene], DEEPGLOBE, [1, 2, 3], 32, mean=[0] * 3, std=[1] * 3)
    plain, plain_label = ds.read(ChipSpec(0, 0, 20))
    np.testing.assert_allclose(plain[0, 5], 120 + np.arange(32))
    assert (plain_label[:, :40 - 20] == 0).all() and (plain_label[:, 40:] == 4).all()
    coarse, label = ds.read(ChipSpec(0, 0, 20, look=Look(scale=2.0)))
    # the pixel centre of chip column j lies at x = 20 + 2 (j + ½) scene columns, where the ramp (100 + c at
    # column c's centre, c + ½) is 120.5 + 2 j; at scale ½ it lies at 20 + (j + ½) / 2: 119.75 + j / 2
    np.testing.assert_allclose(coarse[:, 5, 2:-2], np.broadcast_to(120.5 + 2 * np.arange(2, 30), (3, 28)),
                               atol=0.01)
    assert (label[:32 // 2 * 2, :20] == 0).all() and (label[:, 20:] == 4).all()
    finer, fine_label = ds.read(ChipSpec(0, 0, 20, look=Look(scale=0.5)))
    np.testing.assert_allclose(finer[0, 5, 2:-2], 119.75 + 0.5 * np.arange(2, 30), atol=0.01)
    assert (fine_label == 0).all()  # 16 scene columns from column 20: all left of the boundary


def test_the_look_is_applied_after_normalisation_with_nodata_ignored(tmp_path):
    image = np.full((3, 40, 40), 120, np.uint8)
    image[:, :5] = 0  # nodata rows
    img = write_raster(tmp_path / "s.tif", image, nodata=0)
    lbl = write_raster(tmp_path / "l.tif", np.zeros((40, 40), np.uint8))
    with rasterio.open(img) as src:
        scene = SceneInfo(SceneRecord(img, lbl, "train"), GeoGrid.from_dataset(src), (1.0, 1.0))
    ds = ChipDataset([scene], DEEPGLOBE, [1, 2, 3], 16, mean=[100] * 3, std=[10] * 3)
    out, label = ds.read(ChipSpec(0, 0, 0, look=Look(brightness=0.5, contrast=2.0, sharpness=0.5)))
    np.testing.assert_allclose(out[:, 5:], 2.5, atol=1e-5)  # (120 − 100) / 10 + 0.5: flat, so no contrast
    assert (out[:, :5] == 0).all() and (label[:5] == IGNORE_INDEX).all()
