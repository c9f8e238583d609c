"""Scale-out on real engines: predict on an external dask.distributed cluster, train with DDP (torchrun,
gloo)."""

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import rasterio
import yaml

from geoseg.data.samplers import RandomChipSampler
from geoseg.data.scenes import scene_infos
from geoseg.io.manifest import read_manifest
from geoseg.training.metrics import mean_iou

from conftest import TINY_MODEL, DaskCluster, free_port

BIN = Path(sys.executable).parent


@pytest.fixture
def dask_cluster(tmp_path):
    """A real `dask scheduler` and two `dask worker` processes on 127.0.0.1, stopped after the test."""
    with DaskCluster(tmp_path, workers=2) as cluster:
        yield cluster.address


def test_predict_on_an_external_dask_cluster_matches_the_local_run(tmp_path, rgb_scene, tiny_checkpoint,
                                                                   dask_cluster):
    common = [sys.executable, "-m", "geoseg", "predict", str(rgb_scene), "--model", str(tiny_checkpoint),
              "--block-chips", "1", "--quiet"]
    local = subprocess.run(common + ["-o", str(tmp_path / "local.tif")], capture_output=True, text=True,
                           timeout=300)
    assert local.returncode == 0, local.stderr
    remote = subprocess.run(common + ["-o", str(tmp_path / "remote.tif"), "--scheduler", dask_cluster],
                            capture_output=True, text=True, timeout=300)
    assert remote.returncode == 0, remote.stderr
    with rasterio.open(tmp_path / "local.tif") as a, rasterio.open(tmp_path / "remote.tif") as b:
        assert (a.read(1) == b.read(1)).all()
        assert a.transform == b.transform and a.crs == b.crs
    # both workers ran blocks, and each loaded the model exactly once
    from distributed import Client
    with Client(dask_cluster) as client:
        loads = client.run(lambda: len(__import__("geoseg.inference.blocks", fromlist=["_MODELS"])._MODELS))
    assert sorted(loads.values()) == [1, 1]


def test_an_unreachable_scheduler_is_one_sentence(tmp_path, rgb_scene, tiny_checkpoint):
    r = subprocess.run([sys.executable, "-m", "geoseg", "predict", str(rgb_scene), "--model",
                        str(tiny_checkpoint), "-o", str(tmp_path / "x.tif"), "--scheduler",
                        f"tcp://127.0.0.1:{free_port()}", "--quiet"],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 2 and r.stderr.startswith("geoseg: error: cannot reach the dask scheduler at "
                                                     "tcp://")
    assert not (tmp_path / "x.tif").exists()


def test_ddp_training_with_two_cpu_processes(tmp_path, sample_dir):
    cfg = {"batch_size": 2, "ce_weights": [1, 1, 1, 1, 1, 1, 0], "downsize_res": None, "epochs": 1,
           "loss_fn": "CrossEntropyLoss", "lr": 0.001, "model_architecture": "Unet",
           "model_config": TINY_MODEL, "num_workers": 0, "optimizer": "Adam",
           "manifest": str(sample_dir / "manifest.csv"), "chip_size": 64, "chips_per_epoch": 8,
           "val_chips": 6, "output_dir": str(tmp_path / "runs"), "run_name": "ddp", "seed": 2,
           "logger": "csv"}
    (tmp_path / "ddp.yaml").write_text(yaml.safe_dump(cfg))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    r = subprocess.run([str(BIN / "torchrun"), "--nproc_per_node", "2", "--master_port", str(free_port()),
                        "-m", "geoseg", "train", "--config", str(tmp_path / "ddp.yaml"), "--quiet"],
                       capture_output=True, text=True, timeout=600, env=env)
    assert r.returncode == 0, r.stderr[-3000:]
    run = tmp_path / "runs" / "ddp"
    # exactly one set of checkpoints and logs, written by rank 0
    names = sorted(p.name for p in run.iterdir())
    # baseline.ckpt and network.ckpt only when the per-pixel baseline beat this tiny network (said in a
    # warning), by rank 0; no blend (the baseline's validation probabilities are rank 0's alone)
    below = "below the per-pixel baseline's" in r.stderr
    assert ("baseline.ckpt" in names) == ("network.ckpt" in names) == below
    assert [n for n in names if n not in ("baseline.ckpt", "network.ckpt")] == [
        "best.ckpt", "chips", "config.yaml", "labels.json", "last.ckpt", "metrics.csv", "metrics.json",
        "samples", "steps.csv"]
    # each rank trained on its own half of the epoch's chips
    ranks = []
    for k in range(2):
        with open(run / "chips" / f"rank{k}.csv") as fh:
            ranks.append([(int(r["scene"]), int(r["row"]), int(r["col"]),
                           int(r["aug"])) for r in csv.DictReader(fh)])
    records = [x for x in read_manifest(sample_dir / "manifest.csv") if x.split == "train"]
    sampler = RandomChipSampler(scene_infos(records, [1, 2, 3]), 64, 8, seed=2)
    sampler.set_epoch(1)
    everything = [(c.scene, c.row, c.col, c.aug) for c in sampler.epoch_chips()]
    assert ranks[0] == everything[0::2] and ranks[1] == everything[1::2]
    assert not set(ranks[0]) & set(ranks[1])
    # the logged val mIoU is the one of the confusion matrix summed over the ranks
    row = json.loads((run / "metrics.json").read_text())[0]
    cm = np.array(row["val_confusion"])
    assert row["val_miou"] == pytest.approx(mean_iou(cm, [0, 1, 2, 3, 4, 5]))
    # …and that matrix covers every validation chip: its truth counts equal a single process's
    single = dict(cfg, run_name="single", output_dir=str(tmp_path / "single"))
    from geoseg.training.config import parse_config
    from geoseg.training.trainer import train
    one = train(parse_config(single, tmp_path))
    assert (cm.sum(1) == np.array(one.history[0]["val_confusion"]).sum(1)).all()


def test_a_worker_that_cannot_read_the_inputs_is_named(tmp_path, rgb_scene, tiny_checkpoint):
    from geoseg.inference.schedule import access_problem
    assert access_problem(str(rgb_scene), str(tiny_checkpoint)) is None
    assert access_problem(str(tmp_path / "gone.tif"), str(tiny_checkpoint)) == (
        f"cannot read the scene {tmp_path / 'gone.tif'} ({tmp_path / 'gone.tif'} does not exist)")
    assert access_problem(str(rgb_scene), str(tmp_path / "gone.ckpt")) == (
        f"cannot read the checkpoint {tmp_path / 'gone.ckpt'} (No such file or directory)")
