"""Evaluation: exact metrics, agreement with scikit-learn, bootstrap, error map, worst chips, grids."""

import json
import subprocess
import sys

import numpy as np
import pytest
import rasterio
from affine import Affine

from geoseg.errors import ConfigError
from geoseg.evaluation.scoring import evaluate_raster
from geoseg.io.classes import DEEPGLOBE, ClassSchema, LandClass, parse_code_mapping
from geoseg.training.metrics import bootstrap_miou, class_report, confusion_matrix, mean_iou

from conftest import write_raster

THREE = ClassSchema((LandClass(0, "a", (255, 0, 0)), LandClass(1, "b", (0, 255, 0)),
                     LandClass(2, "c", (0, 0, 255))))


def test_scores_of_a_hand_made_confusion_matrix():
    cm = np.array([[5, 1, 0], [2, 3, 1], [0, 0, 4]])
    r = class_report(cm, ["a", "b", "c"], [0, 1, 2])
    c = r["classes"]
    assert (c["a"]["iou"], c["b"]["iou"], c["c"]["iou"]) == pytest.approx((5 / 8, 3 / 7, 4 / 5), abs=1e-12)
    assert (c["a"]["precision"], c["b"]["precision"], c["c"]["precision"]) == pytest.approx((5 / 7, 3 / 4,
                                                                                             4 / 5))
    assert (c["a"]["recall"], c["b"]["recall"], c["c"]["recall"]) == pytest.approx((5 / 6, 1 / 2, 1))
    assert (c["a"]["f1"], c["b"]["f1"], c["c"]["f1"]) == pytest.approx((10 / 13, 3 / 5, 8 / 9))
    assert [c[n]["support"] for n in "abc"] == [6, 6, 4]
    assert r["miou"] == pytest.approx((5 / 8 + 3 / 7 + 4 / 5) / 3)
    assert r["fwiou"] == pytest.approx((6 * 5 / 8 + 6 * 3 / 7 + 4 * 4 / 5) / 16)
    assert r["accuracy"] == 0.75
    assert r["kappa"] == pytest.approx(53 / 85)  # po 12/16, pe 86/256


def test_a_class_absent_from_truth_and_prediction_is_left_out_of_the_mean():
    cm = np.array([[3, 1, 0], [1, 3, 0], [0, 0, 0]])
    r = class_report(cm, ["a", "b", "c"], [0, 1, 2])
    assert np.isnan(r["classes"]["c"]["iou"]) and r["miou"] == pytest.approx(0.6)


def test_agrees_with_scikit_learn_on_random_data():
    sk = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(5)
    truth = rng.integers(0, 5, 20000)
    pred = np.where(rng.random(20000) < 0.6, truth, rng.integers(0, 5, 20000))
    truth[rng.random(20000) < 0.05] = 255  # ignored pixels
    keep = truth != 255
    cm = confusion_matrix(truth, pred, 5)
    labels = list(range(5))
    assert (cm == sk.confusion_matrix(truth[keep], pred[keep], labels=labels)).all()
    r = class_report(cm, [str(i) for i in labels], labels)
    t, p = truth[keep], pred[keep]
    assert [r["classes"][str(i)]["iou"] for i in labels] == pytest.approx(
        sk.jaccard_score(t, p, labels=labels, average=None))
    assert [r["classes"][str(i)]["precision"] for i in labels] == pytest.approx(
        sk.precision_score(t, p, labels=labels, average=None))
    assert [r["classes"][str(i)]["recall"] for i in labels] == pytest.approx(
        sk.recall_score(t, p, labels=labels, average=None))
    assert [r["classes"][str(i)]["f1"] for i in labels] == pytest.approx(
        sk.f1_score(t, p, labels=labels, average=None))
    assert r["miou"] == pytest.approx(sk.jaccard_score(t, p, labels=labels, average="macro"))
    assert r["kappa"] == pytest.approx(sk.cohen_kappa_score(t, p, labels=labels))
    assert r["accuracy"] == pytest.approx(sk.accuracy_score(t, p))


def test_bootstrap_interval_brackets_the_estimate_and_is_reproducible():
    rng = np.random.default_rng(0)
    cms = []
    for _ in range(40):
        t = rng.integers(0, 3, 500)
        p = np.where(rng.random(500) < rng.uniform(0.4, 0.9), t, rng.integers(0, 3, 500))
        cms.append(confusion_matrix(t, p, 3))
    lo, hi = bootstrap_miou(cms, [0, 1, 2], n=500, seed=1)
    point = mean_iou(sum(cms), [0, 1, 2])
    assert lo < point < hi and hi - lo < 0.2
    assert bootstrap_miou(cms, [0, 1, 2], n=500, seed=1) == (lo, hi)
    same = [cms[0]] * 10
    lo, hi = bootstrap_miou(same, [0, 1, 2], n=100)
    assert lo == hi == pytest.approx(mean_iou(cms[0], [0, 1, 2]))


@pytest.fixture
def pred_and_truth(tmp_path):
    """A 64×96 prediction and truth (chip 32: 2×3 chips); the chip at row 32, col 64 is half wrong."""
    truth = np.zeros((64, 96), np.uint8)
    truth[:, 48:] = 2   # rangeland on the right
    truth[:4, :4] = 255  # not labelled
    pred = truth.copy()
    pred[:4, :4] = 0
    pred[32:64, 64:80] = 5  # barren where rangeland is
    pred[60:, :2] = 255      # prediction nodata
    t = write_raster(tmp_path / "truth.tif", truth, nodata=255)
    p = write_raster(tmp_path / "pred.tif", pred, nodata=255)
    return p, t, pred, truth


def test_error_map_and_worst_chips(tmp_path, pred_and_truth):
    p, t, pred, truth = pred_and_truth
    ev = evaluate_raster(p, t, DEEPGLOBE, chip=32, error_map=tmp_path / "err.tif")
    with rasterio.open(tmp_path / "err.tif") as err, rasterio.open(p) as src:
        assert err.transform == src.transform and err.crs == src.crs and err.shape == src.shape
        e = err.read(1)
        assert err.colormap(1)[1] == (215, 25, 28, 255)
    expected = np.where(truth == 255, 2, np.where(pred == truth, 0, 1))
    expected[pred == 255] = 255
    assert (e == expected).all()
    assert ev.confusion[2, 5] == 32 * 16 and ev.confusion[2, 2] == 64 * 48 - 32 * 16
    worst = ev.worst(2, "rangeland")
    assert [(int(c.window.row_off), int(c.window.col_off)) for c, _ in worst] == [(32, 64), (0, 32)]
    assert worst[0][1] == pytest.approx(0.5)  # 512 of 1024 rangeland pixels right, none predicted elsewhere
    assert worst[1][1] == pytest.approx(1.0)


def test_an_ignored_class_predicted_on_labelled_pixels_is_an_error(tmp_path):
    """Truth all forest; half predicted 'unknown' (ignored): every pixel is scored, half of them wrong."""
    truth = np.full((32, 32), 3, np.uint8)
    pred = truth.copy()
    pred[:, 16:] = 6
    pred[0, 0] = 255  # nodata in the prediction: left out
    t = write_raster(tmp_path / "t.tif", truth, nodata=255)
    p = write_raster(tmp_path / "p.tif", pred, nodata=255)
    ev = evaluate_raster(p, t, DEEPGLOBE, chip=16, error_map=tmp_path / "err.tif")
    r = ev.report
    assert r["pixels"] == 1023 and r["accuracy"] == pytest.approx(511 / 1023)
    assert r["classes"]["forest"]["iou"] == pytest.approx(511 / 1023)
    assert r["classes"]["forest"]["recall"] == pytest.approx(511 / 1023)
    with rasterio.open(tmp_path / "err.tif") as err:
        e = err.read(1)
    assert (e[:, 16:] == 1).all() and e[0, 0] == 255 and (e[1:, :16] == 0).all()


def test_truth_on_another_grid_is_reprojected_with_nearest_neighbour(tmp_path, pred_and_truth, recwarn):
    p, _, pred, truth = pred_and_truth
    coarse = truth[::2, ::2]  # 1 m pixels over the same extent
    t = write_raster(tmp_path / "coarse.tif", coarse, transform=Affine(1, 0, 500000, 0, -1, 5000000),
                     nodata=255)
    ev = evaluate_raster(p, t, DEEPGLOBE, chip=32)
    assert any("reprojected onto that grid with nearest neighbour" in str(w.message) for w in recwarn)
    upsampled = np.repeat(np.repeat(coarse, 2, 0), 2, 1)
    keep = (upsampled != 255) & (pred != 255)
    assert ev.confusion.sum() == keep.sum()
    assert ev.confusion[2, 5] == ((upsampled == 2) & (pred == 5)).sum()


def test_evaluate_command_writes_the_report(tmp_path, pred_and_truth):
    p, t, _, _ = pred_and_truth
    args = ["evaluate", p, "--truth", t, "--chip", 32, "--worst", 3, "--class", "rangeland", "--out",
            tmp_path / "rep", "--json", tmp_path / "m.json"]
    r = subprocess.run([sys.executable, "-m", "geoseg", *map(str, args)],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    names = sorted(x.name for x in (tmp_path / "rep").iterdir())
    assert names == ["confusion.png", "error_map.qml", "error_map.tif", "error_map.tif.aux.xml", "iou.png",
                     "metrics.json", "report.md", "worst.csv", "worst.png"]
    m = json.loads((tmp_path / "m.json").read_text())
    assert m["classes"]["rangeland"]["support"] == 64 * 48
    lo, hi = m["intervals_95"]["chips"]
    assert lo <= m["miou"] <= hi
    assert "| rangeland |" in (tmp_path / "rep" / "report.md").read_text()
    assert "miou" in r.stdout and "worst chip" in r.stdout


def test_a_reference_in_its_own_codes_is_scored_through_truth_codes(tmp_path, pred_and_truth):
    """A reference raster coded as ESA WorldCover codes its classes (urban 50, rangeland 30, barren 60):
    mapped with --truth-codes, it scores exactly as the same truth in DeepGlobe's codes."""
    p, t, _, truth = pred_and_truth
    worldcover = {0: 50, 2: 30, 5: 60, 255: 255}  # DeepGlobe code → the reference's code
    reference = np.vectorize(worldcover.get, otypes=[np.uint8])(truth)
    ref = write_raster(tmp_path / "worldcover.tif", reference, nodata=255)
    direct = evaluate_raster(p, t, DEEPGLOBE, chip=32)
    mapped = evaluate_raster(p, ref, DEEPGLOBE, chip=32, truth_schema=DEEPGLOBE.with_codes(
        parse_code_mapping("Urban=50, rangeland=30,barren=60")))
    assert (mapped.confusion == direct.confusion).all() and direct.confusion.sum() > 0

    args = ["evaluate", p, "--truth", ref, "--chip", 32, "--worst", 0, "--bootstrap", 0, "--out",
            tmp_path / "rep"]
    geoseg = [sys.executable, "-m", "geoseg", *map(str, args)]
    unmapped = subprocess.run(geoseg, capture_output=True, text=True)
    assert unmapped.returncode != 0  # codes 30, 50 and 60 are no DeepGlobe class (50 is not even a code)
    r = subprocess.run([*geoseg, "--truth-codes", "urban=50,rangeland=30,barren=60"], capture_output=True,
                       text=True)
    assert r.returncode == 0, r.stderr
    m = json.loads((tmp_path / "rep" / "metrics.json").read_text())
    assert m["classes"]["rangeland"]["support"] == 64 * 48


@pytest.mark.parametrize("text, message", [
    ("urban=50,lava=3", "--truth-codes names 'lava', which is not a class; classes are urban, agriculture"),
    ("urban=30,rangeland=30", "--truth-codes gives 'urban' and 'rangeland' the same code 30; give each"),
    ("urban=5", "--truth-codes gives 'urban' and 'barren' the same code 5;"),
    ("urban:50", "--truth-codes takes NAME=CODE pairs separated by commas (e.g. building=10,road=30), got"),
    (" , ", "--truth-codes is empty; give NAME=CODE pairs"),
])
def test_a_code_mapping_that_cannot_be_used_is_one_sentence(text, message):
    with pytest.raises(ConfigError) as error:
        DEEPGLOBE.with_codes(parse_code_mapping(text))
    assert str(error.value).startswith(message)
