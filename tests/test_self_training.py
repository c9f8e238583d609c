"""Self-training on sparse labels: confident predictions on unlabelled training pixels become labels, read
into the chips and drawn from; nodata, labelled pixels and excluded classes never get one; resume stays
exact."""

import json

import numpy as np
import pytest
import rasterio
import torch
from rasterio.windows import Window
from test_trainer import TIMING, sparse_config, sparse_polygons

from geoseg.data.appearance import Look
from geoseg.data.chips import ChipDataset, ChipSpec
from geoseg.data.scenes import SceneInfo
from geoseg.errors import CheckpointError
from geoseg.io.classes import IGNORE_INDEX, ClassSchema, LandClass
from geoseg.io.grid import GeoGrid
from geoseg.io.labels import LabelReader
from geoseg.io.manifest import SceneRecord
from geoseg.training.self_training import (
    load_pseudo_labels,
    pseudo_label,
    pseudo_label_file,
    round_epochs,
    save_pseudo_labels,
    tile_starts,
)
from geoseg.training.trainer import Trainer, train

from conftest import write_raster

SCHEMA = ClassSchema((LandClass(1, "field", (255, 255, 0)), LandClass(2, "forest", (0, 128, 0)),
                      LandClass(3, "water", (0, 0, 255))))
MEAN, STD = [100.0, 110.0, 120.0], [40.0, 50.0, 60.0]


@pytest.fixture
def sparse_scene(tmp_path):
    """A 150 × 97 scene with a nodata hole and labels on two boxes (the rest unlabelled: label nodata 0)."""
    rng = np.random.default_rng(4)
    image = rng.integers(1, 255, (3, 150, 97), np.uint8)
    image[:, 20:40, 30:50] = 0  # nodata
    labels = np.zeros((150, 97), np.uint8)
    labels[100:150, 0:40] = 2
    labels[5:25, 60:90] = 3
    img = write_raster(tmp_path / "s.tif", image, nodata=0)
    lbl = write_raster(tmp_path / "l.tif", labels, nodata=0)
    with rasterio.open(img) as src:
        scene = SceneInfo(SceneRecord(img, lbl, "train"), GeoGrid.from_dataset(src), (1.0, 1.0))
    return scene, image, labels


def without_timing(rows):
    return [{k: v for k, v in r.items() if k not in (*TIMING, "pseudo_seconds")} for r in rows]


def per_pixel_model() -> torch.nn.Module:
    """A 1 × 1 convolution: each pixel's classes from its own bands, whatever the tile around it."""
    torch.manual_seed(0)
    model = torch.nn.Conv2d(3, 3, 1)
    with torch.no_grad():
        model.weight.mul_(4.0)
    return model.eval()


def per_pixel_probabilities(model: torch.nn.Conv2d, image: np.ndarray) -> np.ndarray:
    """The 1 × 1 convolution's class probabilities [classes, h, w] over the whole scene, in float64 numpy."""
    x = (image.astype(np.float64) - np.array(MEAN)[:, None, None]) / np.array(STD)[:, None, None]
    w = model.weight.detach().double().numpy()[:, :, 0, 0]
    logits = np.einsum("kb,bhw->khw", w, x) + model.bias.detach().double().numpy()[:, None, None]
    p = np.exp(logits - logits.max(0))
    return p / p.sum(0)


def test_round_epochs_spread_the_rounds_and_never_follow_the_last_epoch():
    assert round_epochs(10, 1) == [5]
    assert round_epochs(10, 2) == [3, 7]
    assert round_epochs(2, 3) == [1]
    assert round_epochs(1, 1) == [] and round_epochs(10, 0) == []


def test_tiles_reach_the_end_with_the_overlap_asked_for():
    assert tile_starts(150, 32, 4) == [0, 24, 48, 72, 96, 120]
    assert tile_starts(32, 32, 4) == [0] and tile_starts(20, 32, 4) == [0]


def test_pseudo_labels_are_the_confident_predictions_on_unlabelled_valid_pixels(sparse_scene):
    """Against the per-pixel model's own probabilities over the whole scene, computed apart: tiles are
    placed and cover the scene exactly; labelled pixels, nodata, unsure pixels and an excluded class get
    none."""
    scene, image, labels = sparse_scene
    model = per_pixel_model()
    dataset = ChipDataset([scene], SCHEMA, [1, 2, 3], 32, MEAN, STD)
    confidence = 0.7
    (pseudo,), found = pseudo_label(model, dataset, torch.device("cpu"), None, confidence, excluded=[2],
                                    batch_size=5)
    valid = (image != 0).all(axis=0)
    p = per_pixel_probabilities(model, image)
    expected = np.where(valid & (labels == 0) & (p.max(0) >= confidence) & (p.argmax(0) != 2), p.argmax(0),
                        IGNORE_INDEX)
    clear = np.abs(p.max(0) - confidence) > 1e-4  # float32 against float64 at the threshold
    assert pseudo.shape == (150, 97) and pseudo.dtype == np.uint8
    np.testing.assert_array_equal(pseudo[clear], expected[clear])
    assert 0.2 < (pseudo != IGNORE_INDEX).mean() < 0.8  # the threshold cuts: some pixels, not all
    assert (pseudo[labels != 0] == IGNORE_INDEX).all() and (pseudo[~valid] == IGNORE_INDEX).all()
    assert found.unlabelled == int((valid & (labels == 0)).sum())
    assert found.pixels == int((pseudo != IGNORE_INDEX).sum())
    assert found.per_class[2] == 0 and found.per_class[:2].sum() == found.pixels


def test_a_class_balanced_share_takes_each_class_s_most_confident_predictions(sparse_scene):
    """With a confidence no prediction reaches, each class still gets its ``share`` most confident
    predictions (against the per-pixel model's probabilities computed apart)."""
    scene, image, labels = sparse_scene
    model = per_pixel_model()
    dataset = ChipDataset([scene], SCHEMA, [1, 2, 3], 32, MEAN, STD)
    (pseudo,), found = pseudo_label(model, dataset, torch.device("cpu"), None, 1.0, excluded=[2], share=0.3)
    valid = (image != 0).all(axis=0)
    p = per_pixel_probabilities(model, image)
    open_ = valid & (labels == 0)
    for c in (0, 1):
        mine = open_ & (p.argmax(0) == c)
        wanted = int(0.3 * mine.sum())
        cut = np.sort(p.max(0)[mine])[::-1][wanted - 1]  # the wanted-th most confident
        kept = pseudo == c
        assert wanted <= kept.sum() <= wanted + 0.01 * mine.sum()
        assert (p.max(0)[kept] >= cut - 1e-4).all() and (p.max(0)[mine & ~kept] <= cut + 1e-4).all()
        assert found.per_class[c] == kept.sum()
    assert not (pseudo == 2).any()  # excluded, whatever its share
    none, _ = pseudo_label(model, dataset, torch.device("cpu"), None, 1.0)
    assert (none[0] == IGNORE_INDEX).mean() > 0.99  # without a share, a confidence of 1 takes (almost) none


class EdgeMarker(torch.nn.Module):
    """Class 1 on a tile's outer ``margin`` pixels, class 0 inside: shows which part of each tile is kept."""

    def __init__(self, margin: int):
        super().__init__()
        self.margin = margin

    def forward(self, x):
        n, _, h, w = x.shape
        edge = torch.ones(h, w, dtype=torch.bool)
        edge[self.margin:h - self.margin, self.margin:w - self.margin] = False
        logits = torch.zeros(n, 3, h, w)
        logits[:, 0] = torch.where(edge, -20.0, 20.0)
        logits[:, 1] = torch.where(edge, 20.0, -20.0)
        return logits


def test_each_pixel_is_predicted_with_context_around_it_except_at_the_scene_edge(tmp_path):
    rng = np.random.default_rng(1)
    img = write_raster(tmp_path / "s.tif", rng.integers(1, 255, (3, 150, 97), np.uint8))
    lbl = write_raster(tmp_path / "l.tif", np.zeros((150, 97), np.uint8), nodata=0)
    with rasterio.open(img) as src:
        scene = SceneInfo(SceneRecord(img, lbl, "train"), GeoGrid.from_dataset(src), (1.0, 1.0))
    dataset = ChipDataset([scene], SCHEMA, [1, 2, 3], 32, MEAN, STD)
    (pseudo,), _ = pseudo_label(EdgeMarker(4), dataset, torch.device("cpu"), None, 0.9)
    assert (pseudo != IGNORE_INDEX).all()
    assert (pseudo[4:-4, 4:-4] == 0).all()  # away from the scene's edge: always a tile's centre
    assert (pseudo[:4] == 1).all() and (pseudo[:, :4] == 1).all()  # no tile has context there


def test_chips_read_pseudo_labels_into_unlabelled_pixels_only(sparse_scene):
    scene, image, labels = sparse_scene
    dataset = ChipDataset([scene], SCHEMA, [1, 2, 3], 32, MEAN, STD)
    pseudo = np.full((150, 97), IGNORE_INDEX, np.uint8)
    pseudo[90:150, 20:97] = 0  # over the labelled box's right part and unlabelled pixels
    spec = ChipSpec(0, 130, 30)  # crosses the labelled box and runs past the scene's bottom edge
    before = dataset.read_chip(spec)[2]
    dataset.set_pseudo_labels([pseudo])
    after = dataset.read_chip(spec)[2]
    truth = labels[130:150, 30:62]
    assert (after[:20][truth == 2] == 1).all()  # labelled (code 2: index 1) stays
    assert (after[:20][truth == 0] == 0).all()  # unlabelled takes the pseudo-label
    assert (after[20:] == IGNORE_INDEX).all() and (before[20:] == IGNORE_INDEX).all()  # past the edge
    _, label = dataset.read(spec._replace(aug=5))
    assert np.array_equal(label, np.rot90(after, 1)[..., ::-1])  # augmented as the image
    zoomed = dataset.read_chip(spec._replace(look=Look(scale=1.5)))[2]
    assert not (zoomed == 0).any()  # another scale: pseudo-labels at the scene's sampling do not apply
    dataset.set_pseudo_labels(None)
    assert np.array_equal(dataset.read_chip(spec)[2], before)


def test_a_run_pseudo_labels_the_unlabelled_part_and_draws_chips_there(tmp_path, capsys):
    manifest, _ = sparse_polygons(tmp_path)
    trainer = Trainer(sparse_config(tmp_path, manifest, epochs=2, chips_per_epoch=8, self_training=1,
                                    pseudo_label_confidence=0.5, baseline=False))
    result = trainer.fit()
    out = capsys.readouterr().out
    assert "self-training round 1 (after epoch 1):" in out
    assert "self-training: best val mIoU" in out and "up to the first round (after epoch 1)" in out
    row = result.history[0]
    assert row["pseudo_pixels"] > 100 and "pseudo_pixels" not in result.history[1]
    (labels,) = load_pseudo_labels(result.run_dir / pseudo_label_file(1), [(192, 192)], 3)
    assert (labels[:, :64] == IGNORE_INDEX).sum() > 0
    with rasterio.open(tmp_path / "s.tif") as src:  # the polygons' pixels are labelled: never pseudo
        grid = GeoGrid.from_dataset(src)
    true = LabelReader(tmp_path / "drawn.gpkg", grid, trainer.cfg.classes, "landcover").read(
        Window(0, 0, 192, 192), (192, 192))
    assert (labels[true != IGNORE_INDEX] == IGNORE_INDEX).all()
    assert int((labels != IGNORE_INDEX).sum()) == row["pseudo_pixels"]
    trainer.train_sampler.set_epoch(2)
    cols = [spec.col for spec in trainer.train_sampler.epoch_chips()]
    assert max(cols) >= 64  # before the round, chips held labelled cells: all in the left third


def test_resume_after_a_round_continues_exactly(tmp_path):
    manifest, _ = sparse_polygons(tmp_path)
    keys = dict(epochs=3, chips_per_epoch=6, self_training=1, pseudo_label_confidence=0.5, baseline=False)
    full = train(sparse_config(tmp_path, manifest, run_name="full", **keys))
    first = train(sparse_config(tmp_path, manifest, run_name="split", **keys), until_epoch=2)
    assert first.history[1]["pseudo_pixels"] > 0
    resumed = train(sparse_config(tmp_path, manifest, run_name="split", **keys), resume=first.last)
    assert json.dumps(without_timing(resumed.history), default=str) == json.dumps(
        without_timing(full.history), default=str)


def test_pseudo_labels_that_do_not_fit_the_run_are_refused_in_one_sentence(tmp_path):
    path = save_pseudo_labels([np.zeros((10, 12), np.uint8)], tmp_path / "p.npz")
    assert load_pseudo_labels(path, [(10, 12)], 3)[0].shape == (10, 12)
    for shapes, classes in (([(10, 13)], 3), ([(10, 12), (4, 4)], 3), ([(10, 12)], 0)):
        with pytest.raises(CheckpointError, match="do not fit the run's training scenes"):
            load_pseudo_labels(path, shapes, classes)
    (tmp_path / "bad.npz").write_bytes(b"not an archive")
    with pytest.raises(CheckpointError, match="cannot be read"):
        load_pseudo_labels(tmp_path / "bad.npz", [(10, 12)], 3)
