"""Per-block inference: blending weights, test-time augmentation, the overlap hand-over, the model cache."""

from dataclasses import replace

import numpy as np
import pytest
import torch
from rasterio.windows import Window

from geoseg.errors import CheckpointError
from geoseg.inference.blocks import (
    _MODELS,
    BlockAccumulation,
    ModelRef,
    blend_weights,
    finish_block,
    model_for,
    predict_probabilities,
    top_class,
)
from geoseg.io.classes import DEEPGLOBE, NODATA
from geoseg.models.checkpoint import load_checkpoint, save_checkpoint


def test_blend_weights_are_positive_and_cross_fade():
    w = blend_weights(64, 16)
    assert w.min() > 0 and w.max() == 1.0
    one = w[32]  # a row through the middle: ramps sum to 1 across a 16 px overlap
    assert np.allclose(one[48:64] + one[0:16], 1.0)
    assert (blend_weights(8, 0) == 1).all()


def test_flip_tta_averages_the_four_flipped_predictions(tiny_checkpoint):
    ckpt = load_checkpoint(tiny_checkpoint)
    model = ckpt.build()
    x = np.random.default_rng(0).normal(size=(2, 3, 64, 64)).astype(np.float32)
    plain = torch.from_numpy(predict_probabilities(model, x, "fp32", "none"))
    tta = torch.from_numpy(predict_probabilities(model, x, "fp32", "flips"))
    expected = 0
    with torch.no_grad():
        for dims in ((), (3,), (2,), (2, 3)):
            t = torch.from_numpy(x)
            p = torch.softmax(model(torch.flip(t, dims) if dims else t), 1)
            expected = expected + (torch.flip(p, dims) if dims else p)
    assert torch.allclose(tta, expected / 4, atol=1e-5)
    assert torch.allclose(plain, torch.softmax(model(torch.from_numpy(x)), 1), atol=1e-5)
    assert (tta - plain).abs().max() > 1e-3  # a random model is not flip-equivariant: TTA changes the result


def _acc(rng, k, h, w):
    a = rng.random((k + 1, h, w)).astype(np.float32)
    a[-1] += 0.5  # weight sums
    return a


def test_finish_block_adds_the_neighbours_strips_before_the_argmax():
    rng = np.random.default_rng(3)
    k, h, w = 7, 12, 10
    core = _acc(rng, k, h, w)
    left, above, diagonal = _acc(rng, k, h, 3), _acc(rng, k, 4, w), _acc(rng, k, 4, 3)
    valid = np.ones((h, w), bool)
    valid[-1, -1] = False
    own = BlockAccumulation(core.copy(), None, None, None, valid, 5)
    lut = DEEPGLOBE.index_to_code_lut()
    done = finish_block(own, Window(0, 0, w, h), lut, left, above, diagonal, True, "uint8")
    total = core.copy()
    total[:, :, :3] += left
    total[:, :4, :] += above
    total[:, :4, :3] += diagonal
    expected = total[:-1].argmax(0).astype(np.uint8)
    expected[~valid] = NODATA
    assert (done.codes == expected).all() and done.chips == 5
    assert (own.core == core).all()  # the block's own accumulation is not written into
    conf = np.round(total[:-1].max(0) / total[-1] * 100)
    assert (done.confidence[valid] == conf[valid]).all() and done.confidence[-1, -1] == NODATA
    # the fast path without probabilities gives the same classes
    fast = finish_block(BlockAccumulation(core.copy(), None, None, None, valid, 5), Window(0, 0, w, h), lut,
                        left, above, diagonal, False, None)
    assert (fast.codes == done.codes).all() and fast.probabilities is None


def test_the_model_is_built_once_per_process(tiny_checkpoint):
    _MODELS.clear()
    ckpt = load_checkpoint(tiny_checkpoint)
    first = model_for(tiny_checkpoint, 1, checkpoint=ckpt)
    assert model_for(tiny_checkpoint, 1) is first  # found in the cache, the file is not read again
    assert first[0].state_dict == {} and ckpt.state_dict  # the cache keeps no second copy of the weights
    _MODELS.clear()


def test_a_checkpoint_replaced_during_a_run_is_refused(tiny_checkpoint, tmp_path):
    """Block tasks carry the model file with the identity it had when the run began: a worker that finds
    another file under that name (replaced mid-run) stops with one sentence instead of mixing two models."""
    ckpt = load_checkpoint(tiny_checkpoint)
    ref = ModelRef.of(ckpt)
    assert model_for(ref, 1)[0].classes == ckpt.classes
    save_checkpoint(replace(ckpt, chip_size=96), tiny_checkpoint)
    with pytest.raises(CheckpointError, match="changed while this prediction was using it"):
        model_for(ref, 1)
    _MODELS.clear()


@pytest.mark.parametrize("tta", ["none", "flips"])
def test_probabilities_sum_to_one(tiny_checkpoint, tta):
    model = load_checkpoint(tiny_checkpoint).build()
    x = np.zeros((1, 3, 64, 64), np.float32)
    p = predict_probabilities(model, x, "fp32", tta)
    assert p.shape == (1, 7, 64, 64) and p.dtype == np.float32 and np.allclose(p.sum(1), 1.0, atol=1e-5)


def test_an_exported_model_gives_the_same_probabilities_with_and_without_flips(tiny_checkpoint, tmp_path):
    from geoseg.models.export import export_onnx

    model = load_checkpoint(tiny_checkpoint).build()
    onnx_model = load_checkpoint(export_onnx(tiny_checkpoint, tmp_path / "m.onnx")).build()
    x = np.random.default_rng(1).normal(size=(2, 3, 64, 64)).astype(np.float32)
    for tta in ("none", "flips"):
        expected = predict_probabilities(model, x, "fp32", tta)
        got = predict_probabilities(onnx_model, x, "fp32", tta)
        assert got.dtype == np.float32 and got.flags.c_contiguous
        assert np.allclose(got, expected, atol=1e-5)


def test_top_class_takes_the_first_of_equal_scores():
    scores = np.array([[[0.2, 0.5]], [[0.7, 0.5]], [[0.7, 0.1]]], np.float32)  # [K=3, 1, 2]
    top, index = top_class(scores)
    assert index.tolist() == [[1, 0]] and top[0].tolist() == pytest.approx([0.7, 0.5])
    rng = np.random.default_rng(0)
    scores = rng.integers(0, 4, (7, 50, 60)).astype(np.float32)  # many ties
    top, index = top_class(scores)
    assert (index == scores.argmax(0)).all() and (top == scores.max(0)).all()
