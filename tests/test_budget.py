"""Time budgets: parsing, the plan's arithmetic, and a real run that ends within 10 % of the time asked."""

import json
import time

import pytest
import yaml

from geoseg.errors import ConfigError
from geoseg.training.budget import Speeds, format_seconds, parse_budget, plan_budget
from geoseg.training.trainer import train

from conftest import run_config as config

# real runs held to their time: alone on the machine (make test runs them after the parallel part)
pytestmark = pytest.mark.serial


@pytest.mark.parametrize("text, seconds", [("15m", 900), ("1h30m", 5400), ("90s", 90), ("2.5m", 150),
                                           ("1h 5s", 3605), (120, 120), ("45", 45), (None, None)])
def test_budgets_are_read_as_times(text, seconds):
    assert parse_budget(text) == seconds


@pytest.mark.parametrize("text", ["soon", "-5m", "0", "15 minutes", "m", True, [15]])
def test_a_budget_that_is_no_time_is_one_sentence(text):
    with pytest.raises(ConfigError, match=r"^config key 'budget' must be a time such as 15m, 90s or 1h30m"):
        parse_budget(text)


def test_budgets_are_written_back_as_given():
    assert [format_seconds(s) for s in (900, 5400, 42, 3605, 0.4)] == ["15m", "1h30m", "42s", "1h5s", "0s"]


def test_the_plan_fills_what_is_left_after_set_up_and_validation():
    # 100 s, 10 s spent; 4 epochs validating 20 chips at 0.05 s (+0.5 s of checkpoints each: 1.5 s), 1 s
    # final margin: (100 - 10 - 1 - 6) * 0.95 = 78.85 s of steps, 19.71 s an epoch at 0.1 s a chip → 197
    # chips, whole batches of 8 → 192
    plan = plan_budget(100, 10, Speeds(train=0.1, validate=0.05, read=0.02), epochs=4, batch_size=8,
                       val_chips=20, loader_workers=2)
    assert (plan.chips_per_epoch, plan.epoch_overhead) == (192, pytest.approx(1.5))
    # reading in the training process (no loader workers) costs its share too: 0.12 s a chip, validation
    # 20 * 0.07 + 0.5 = 1.9 s: (100 - 10 - 1 - 7.6) * 0.95 / 4 / 0.12 = 161.1 → 160
    inline = plan_budget(100, 10, Speeds(0.1, 0.05, 0.02), 4, 8, 20, loader_workers=0)
    assert inline.chips_per_epoch == 160
    assert ("160 chips per epoch × 4 epochs (80 steps of 8; measured 10.00 chips/s training"
            in inline.describe())


def test_a_budget_set_up_uses_up_is_one_sentence():
    with pytest.raises(ConfigError, match=r"^a budget of 20s leaves no time to train: set-up took 19 s and "
                                          r"each of the 4 epochs needs at least 2 s; give at least 30s or "
                                          r"fewer epochs$"):
        plan_budget(20, 19, Speeds(0.1, 0.05, 0.0), epochs=4, batch_size=8, val_chips=20, loader_workers=1)


def test_training_ends_within_ten_percent_of_its_budget(tmp_path, sample_dir):
    # what a fresh process pays once (first imports, e.g. the sample panels' plotting) is not the budget's to
    # plan: one short unbudgeted run first
    train(config(tmp_path, sample_dir / "manifest.csv", epochs=1, run_name="warm-up", baseline=False))
    budget = 30.0
    # no baseline: its fit (seconds, more on a busy machine) would be most of a tiny run's set-up
    cfg = config(tmp_path, sample_dir / "manifest.csv", budget=f"{budget:g}s", epochs=3, batch_size=4,
                 lr_schedule="onecycle", run_name="budget", val_chips=8, baseline=False)
    t = time.perf_counter()
    result = train(cfg)
    elapsed = time.perf_counter() - t
    assert 0.9 * budget <= elapsed <= 1.1 * budget
    rows = json.loads((result.run_dir / "metrics.json").read_text())
    assert len(rows) == 3
    # re-planned after each epoch from its real speed, the last plan written back into the run's config
    planned = yaml.safe_load((result.run_dir / "config.yaml").read_text())["chips_per_epoch"]
    assert planned > 6 and planned % 4 == 0  # more than the config's 6 chips: what fits in the time
    assert 0 < rows[-1]["train_chips"] <= planned
    steps = (result.run_dir / "steps.csv").read_text().splitlines()[1:]
    assert len(steps) == sum(-(-r["train_chips"] // 4) for r in rows)
    # the one-cycle schedule spans the steps that ran: it ends near zero, it does not stop half-way
    assert float(steps[-1].split(",")[-1]) < 0.05 * cfg.lr


def test_a_budget_run_resumes_with_its_plan(tmp_path, sample_dir):
    cfg = lambda: config(tmp_path, sample_dir / "manifest.csv", budget="12s", epochs=2,  # noqa: E731
                         run_name="split", val_chips=4)
    first = train(cfg(), until_epoch=1)
    replanned = yaml.safe_load((first.run_dir / "config.yaml").read_text())["chips_per_epoch"]
    resumed = train(cfg(), resume=first.last)
    assert [r["train_chips"] for r in resumed.history][1] == replanned  # the plan, not the config's 6
    steps = (resumed.run_dir / "steps.csv").read_text().splitlines()[1:]
    assert len(steps) == sum(-(-r["train_chips"] // 2) for r in resumed.history)
