"""The blend of the network and the per-pixel baseline: the share fitted on validation, saved as one
checkpoint that prediction (block invariant), evaluation and the engine choice treat like any other model,
refused by export and by the ONNX engines with a sentence, and checked field by field when loaded."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch

from geoseg.errors import CheckpointError, InputError
from geoseg.inference.predict import PredictOptions, predict_scene
from geoseg.models.checkpoint import blended_checkpoint, load_checkpoint, save_checkpoint
from geoseg.models.engines import select_engine
from geoseg.models.export import export_onnx
from geoseg.models.fields import BLEND
from geoseg.training.blend import WEIGHTS, BlendSearch
from geoseg.training.trainer import Trainer, train, train_baseline

from conftest import run_config

NAMES = ["a", "b", "c"]


def test_the_search_finds_the_share_where_each_model_covers_the_others_mistakes():
    """Chips of 2 pixels: on the first pixel the network is right and sure, the baseline wrong and unsure;
    on the second the baseline is right and sure, the network wrong and unsure. Only a blend with a share
    between the two certainties gets both right."""
    baseline = np.array([[[[0.30, 0.05]], [[0.45, 0.90]], [[0.25, 0.05]]]], np.float16)  # [1, 3, 1, 2]
    logits = torch.log(torch.tensor([[[[0.90, 0.40]], [[0.05, 0.30]], [[0.05, 0.30]]]]))  # network
    labels = torch.tensor([[[0, 1]]])
    search = BlendSearch(baseline, NAMES, [0, 1, 2])
    search.add(logits, labels)
    weight, miou = search.best()
    assert miou == 1.0 and 0 < weight < 1
    # what each share scores, computed directly: both pixels right only where 0.9w + 0.3(1-w) beats
    # 0.05w + 0.45(1-w) and 0.3w + 0.9(1-w) beats 0.4w + 0.05(1-w)
    right = [w for w in WEIGHTS if 0.9 * w + 0.3 * (1 - w) > 0.05 * w + 0.45 * (1 - w)
             and 0.3 * w + 0.9 * (1 - w) > 0.4 * w + 0.05 * (1 - w)]
    assert weight == max(right)
    search.start()  # a new pass starts from nothing
    assert search.confusion.sum() == 0 and search.offset == 0


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """Sample scenes, and a tiny network and the baseline fitted on the same run config (so the same
    normalisation), made once for the module."""
    from geoseg.data.sample_data import make_sample_data

    root = tmp_path_factory.mktemp("blend")
    make_sample_data(root / "sample", size=160, seed=43, splits=("train", "val", "test"))
    cfg = run_config(root, root / "sample" / "manifest.csv", epochs=1, chips_per_epoch=8, baseline=False)
    network = load_checkpoint(train(cfg).best)
    baseline_path, _ = train_baseline(cfg, root / "baseline.ckpt")
    return root / "sample", network, load_checkpoint(baseline_path)


@pytest.fixture
def sample_dir(trained):
    return trained[0]


@pytest.fixture
def network_and_baseline(trained):
    return trained[1], trained[2]


def test_a_blend_predicts_the_weighted_mean_of_its_parts_block_invariant(tmp_path, sample_dir,
                                                                        network_and_baseline):
    network, baseline = network_and_baseline
    assert (network.mean, network.std) == (baseline.mean, baseline.std)
    path = save_checkpoint(blended_checkpoint(network, baseline.state_dict, 0.6, {"val_miou": 0.5}),
                           tmp_path / "blend.ckpt")
    blend = load_checkpoint(path)
    assert blend.architecture == BLEND and blend.model_config["network_weight"] == 0.6

    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        got = blend.build()(x).exp()
        expected = 0.6 * torch.softmax(network.build()(x), 1) + 0.4 * baseline.build()(x).exp()
    assert torch.allclose(got, expected, atol=1e-6)

    rasters = []
    for cells in (1, 3):
        out = predict_scene(sample_dir / "test_1.tif", path, tmp_path / f"map_{cells}.tif",
                            PredictOptions(block_chips=cells))
        with rasterio.open(out.raster) as src:
            rasters.append(src.read(1))
    assert np.array_equal(rasters[0], rasters[1])
    assert len(set(np.unique(rasters[0]).tolist()) - {255}) >= 2

    # evaluated through the CLI like any model, beside the checkpoint under its own name
    report = tmp_path / "blend_evaluation_test"
    done = subprocess.run([sys.executable, "-m", "geoseg", "evaluate", "--model", str(path), "--data",
                           str(sample_dir / "manifest.csv"), "--split", "test",
                           "--bootstrap", "0", "--worst", "0", "--quiet"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    metrics = json.loads((report / "metrics.json").read_text())
    assert 0 <= metrics["miou"] <= 1


def test_a_blend_runs_in_torch_and_says_why_onnx_cannot_hold_it(tmp_path, network_and_baseline):
    network, baseline = network_and_baseline
    path = save_checkpoint(blended_checkpoint(network, baseline.state_dict, 0.5, {}), tmp_path / "blend.ckpt")
    choice = select_engine(path)
    assert choice.kind == "torch" and "trees run in torch only" in choice.reason
    for engine in ("onnx", "int8", "adaptive"):
        with pytest.raises(InputError, match="whose trees ONNX Runtime cannot run"):
            select_engine(path, engine)
    with pytest.raises(InputError, match="blends a network with the per-pixel baseline's trees, which ONNX "
                                         "cannot hold"):
        export_onnx(path, tmp_path / "blend.onnx")
    assert not (tmp_path / "blend.onnx").exists()
    with pytest.raises(InputError, match="is the per-pixel baseline"):
        export_onnx(baseline, tmp_path / "baseline.onnx")


@pytest.mark.parametrize("change, says", [
    (lambda d: d["model_config"].update(network_weight=1.5), "model_config.network_weight must be a number"),
    (lambda d: d["model_config"].update(network_architecture="PixelBaseline"),
     "model_config.network_architecture must be a network"),
    (lambda d: d["model_config"]["network_config"].update(classes=3), "model_config.classes must be 7"),
    (lambda d: d["state_dict"].update({"other.weight": torch.zeros(1)}), "belong to no part of its blend"),
    (lambda d: [d["state_dict"].pop(k) for k in list(d["state_dict"]) if k.startswith("baseline.")],
     "baseline's tensors under baseline."),
    (lambda d: d["state_dict"].pop("network.segmentation_head.0.bias"), "do not fit its Unet"),
])
def test_a_damaged_blend_is_refused_in_one_sentence(tmp_path, network_and_baseline, change, says):
    network, baseline = network_and_baseline
    raw = blended_checkpoint(network, baseline.state_dict, 0.5, {}).to_dict()
    change(raw)
    path = tmp_path / "damaged.ckpt"
    torch.save(raw, path)
    with pytest.raises(CheckpointError, match=says):
        load_checkpoint(path).build()


def test_the_run_keeps_a_blend_that_beats_both_and_best_ckpt_follows_the_better_model(tmp_path, sample_dir):
    """The decision at the end of a run, from the validation scores its history holds: a blend better than
    both is saved beside a network that beat the baseline (best.ckpt stays the network); where the network
    is below the baseline, best.ckpt becomes the blend and the network is kept as network.ckpt."""
    cfg = run_config(tmp_path, sample_dir / "manifest.csv", epochs=1, chips_per_epoch=4, baseline=True,
                     run_name="decide", best_model="network")
    trainer = Trainer(cfg)
    result = trainer.fit()
    trainer.cfg.best_model = "auto"
    run = result.run_dir
    for name in ("blend.ckpt", "network.ckpt", "baseline.ckpt"):
        (run / name).unlink(missing_ok=True)
    network_bytes = result.best.read_bytes()
    row = result.history[0]

    row.update(val_miou=0.50, blend_val_miou=0.55, blend_network_weight=0.7)
    trainer.baseline.scores["miou"] = 0.40
    trainer.settle_best_model(result)
    blend = load_checkpoint(run / "blend.ckpt")
    assert blend.model_config["network_weight"] == 0.7 and blend.metrics["val_miou"] == 0.55
    assert result.best.read_bytes() == network_bytes and not (run / "network.ckpt").exists()

    row.update(val_miou=0.30, blend_val_miou=0.45, blend_network_weight=0.3)
    with pytest.warns(UserWarning, match=r"best\.ckpt is now the blend of network and baseline \(val mIoU "
                                         r"0\.450\)"):
        trainer.settle_best_model(result)
    assert (run / "network.ckpt").read_bytes() == network_bytes
    assert load_checkpoint(result.best).model_config["network_weight"] == 0.3
    assert load_checkpoint(run / "baseline.ckpt").metrics["val_miou"] == 0.40

    assert all(not math.isnan(s["miou"]) and s["labelled_pixels"] > 0 for s in row["val_scenes"])


def test_the_qgis_provider_runs_a_blend_as_geoseg_predict_does(tmp_path, sample_dir, network_and_baseline,
                                                                monkeypatch):
    """Real QGIS (qgis_process) running geoseg:predict on a blended model gives `geoseg predict`'s raster."""
    from test_qgis_provider import GEOSEG, QGIS_PROCESS, SYSTEM_PYTHON, qgis_process

    from geoseg.cli.qgis_plugin import install_plugin

    if QGIS_PROCESS is None or not Path(SYSTEM_PYTHON).exists():
        pytest.skip("QGIS (qgis_process, python3-qgis) is not installed")
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    install_plugin(executable=GEOSEG)
    network, baseline = network_and_baseline
    blend = blended_checkpoint(network, baseline.state_dict, 0.4, {})
    model = save_checkpoint(blend, tmp_path / "blend.ckpt")
    scene = sample_dir / "test_1.tif"
    subprocess.run([GEOSEG, "predict", scene, "-o", tmp_path / "cli.tif", "--model", model, "--quiet"],
                   check=True)
    r = qgis_process("run", "geoseg:predict", "--", f"INPUT={scene}", f"MODEL={model}",
                     f"OUTPUT_RASTER={tmp_path / 'q.tif'}", f"OUTPUT_VECTOR={tmp_path / 'q.gpkg'}")
    assert r.returncode == 0, r.stdout + r.stderr
    with rasterio.open(tmp_path / "cli.tif") as a, rasterio.open(tmp_path / "q.tif") as b:
        assert np.array_equal(a.read(1), b.read(1)) and a.transform == b.transform
