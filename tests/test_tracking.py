"""The run's local logs: metrics per epoch in CSV and JSON, steps in CSV; a resumed run drops the steps logged
after the checkpoint it continues from."""

import csv
import json

from geoseg.training.tracking import LocalLog


def steps(run_dir):
    with open(run_dir / "steps.csv", newline="") as fh:
        return [int(r["step"]) for r in csv.DictReader(fh)]


def test_epochs_and_steps_are_logged_and_a_resume_drops_the_steps_after_its_checkpoint(tmp_path):
    log = LocalLog(tmp_path)
    log.log_steps([{"step": s, "epoch": 1, "batch_loss": 1 / s, "loss_ema": 0.5, "lr": 0.01} for s in (1, 2)])
    log.log_epoch({"epoch": 1, "val_miou": 0.5, "val_confusion": [[1, 0], [0, 1]]})
    log.log_steps([{"step": s, "epoch": 2, "batch_loss": 0.1, "loss_ema": 0.2, "lr": 0.01} for s in (3, 4)])
    assert steps(tmp_path) == [1, 2, 3, 4]
    rows = json.loads((tmp_path / "metrics.json").read_text())
    assert rows == [{"epoch": 1, "val_miou": 0.5, "val_confusion": [[1, 0], [0, 1]]}]
    assert (tmp_path / "metrics.csv").read_text().splitlines()[0] == "epoch,val_miou"  # matrices: JSON only
    LocalLog(tmp_path, rows, step=2)  # the run stopped after step 4, its last checkpoint was at step 2
    assert steps(tmp_path) == [1, 2]
