"""The weight average: its recursion, the model a run validates and saves, and resuming it."""

import pytest
import torch

from geoseg.errors import CheckpointError
from geoseg.models.checkpoint import load_checkpoint
from geoseg.training.averaging import WeightAverage
from geoseg.training.trainer import train

from conftest import run_config as config


def _filled(model: torch.nn.Module, value: float) -> None:
    with torch.no_grad():
        for t in model.state_dict().values():
            if t.dtype.is_floating_point:
                t.fill_(value)


def test_the_average_follows_the_warmed_up_recursion_and_copies_counters():
    model = torch.nn.Sequential(torch.nn.Conv2d(2, 3, 1), torch.nn.BatchNorm2d(3))
    _filled(model, 1.0)
    average = WeightAverage(model, decay=0.3)
    expected = 1.0  # the copy made at construction
    for n, value in enumerate([4.0, 8.0, 2.0, 6.0], start=1):
        _filled(model, value)
        model[1].num_batches_tracked.fill_(n)
        average.update(model)
        decay = min(0.3, (1 + n) / (10 + n))  # 0.18, 0.25, then capped at the 0.3 asked for
        expected = decay * expected + (1 - decay) * value
    weights = average.module.state_dict()
    assert expected == pytest.approx(5.2377, abs=1e-4)
    for name in ("0.weight", "0.bias", "1.weight", "1.running_mean", "1.running_var"):
        assert torch.allclose(weights[name], torch.full_like(weights[name], expected)), name
    assert int(weights["1.num_batches_tracked"]) == 4
    assert not any(p.requires_grad for p in average.module.parameters())
    assert model[0].weight.requires_grad  # the live model still trains


def test_a_run_validates_and_saves_the_average_and_keeps_the_live_weights_to_resume(tmp_path, sample_dir):
    manifest = sample_dir / "manifest.csv"
    run = train(config(tmp_path, manifest, epochs=1, run_name="avg", weight_averaging=0.9, baseline=False))
    best, last = load_checkpoint(run.best), load_checkpoint(run.last)
    live = last.training_state["live_model"]
    assert last.training_state["average"]["updates"] == 3  # 6 chips in batches of 2
    changed = [k for k, v in best.state_dict.items() if v.dtype.is_floating_point
               and not torch.equal(v, live[k])]
    assert len(changed) > len(live) // 2  # the average is not the last step's weights
    assert all(torch.equal(best.state_dict[k], v) for k, v in last.state_dict.items())
    plain = train(config(tmp_path, manifest, epochs=1, run_name="plain", baseline=False))
    with pytest.raises(CheckpointError, match="did not average its weights"):
        train(config(tmp_path, manifest, run_name="plain", weight_averaging=0.9, baseline=False),
              resume=plain.last)
