import numpy as np
import pytest

from geoseg.training.metrics import confusion_matrix, iou_per_class, mean_iou, pixel_accuracy, summarize


def test_confusion_matrix_by_hand():
    truth = np.array([0, 0, 1, 1, 2, 255])
    pred = np.array([0, 1, 1, 1, 0, 2])
    cm = confusion_matrix(truth, pred, 3)
    assert cm.tolist() == [[1, 1, 0], [0, 2, 0], [1, 0, 0]]
    iou = iou_per_class(cm)
    assert iou[0] == pytest.approx(1 / 3)   # tp 1, fp 1, fn 1
    assert iou[1] == pytest.approx(2 / 3)   # tp 2, fp 1
    assert iou[2] == 0.0
    assert mean_iou(cm) == pytest.approx((1 / 3 + 2 / 3 + 0) / 3)
    assert mean_iou(cm, [0, 1]) == pytest.approx(0.5)
    assert pixel_accuracy(cm) == pytest.approx(3 / 5)


def test_absent_class_is_left_out_of_miou():
    cm = np.array([[5, 0, 0], [0, 5, 0], [0, 0, 0]])
    assert np.isnan(iou_per_class(cm)[2])
    assert mean_iou(cm) == 1.0
    s = summarize(cm, ["a", "b", "c"], [0, 1, 2])
    assert s["miou"] == 1.0 and s["iou_a"] == 1.0
