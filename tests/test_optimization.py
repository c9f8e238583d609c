"""Losses, optimizers and schedules: one name table each, for config validation and construction alike."""

import pytest
import torch

from geoseg.errors import ConfigError
from geoseg.io.classes import IGNORE_INDEX
from geoseg.training.config import parse_config
from geoseg.training.optimization import (
    LOSSES,
    OPTIMIZERS,
    SCHEDULES,
    make_loss,
    make_optimizer,
    make_schedule,
    steps_per_batch,
)

from conftest import TINY_MODEL


@pytest.mark.parametrize("name", list(LOSSES))
def test_every_loss_ignores_the_ignore_index(name):
    torch.manual_seed(0)
    logits = torch.randn(2, 7, 8, 8, requires_grad=True)
    target = torch.randint(0, 6, (2, 8, 8))
    loss = make_loss(name, [1.0] * 6 + [0.0], list(range(6)), torch.device("cpu"))
    value = loss(logits, target)
    assert torch.isfinite(value)
    changed = target.clone()
    changed[:, :4] = IGNORE_INDEX
    other = logits.detach().clone()
    other[:, :, :4] = torch.randn(2, 7, 4, 8) * 10  # only where the target is ignored
    assert loss(other, changed) == pytest.approx(float(loss(logits.detach(), changed)), rel=1e-5)


@pytest.mark.parametrize("name", list(OPTIMIZERS))
def test_every_optimizer_steps(name):
    p = torch.nn.Parameter(torch.ones(3))
    opt = make_optimizer(name, [p], 0.1, 0.0)
    p.sum().backward()
    opt.step()
    assert (p < 1).all()


@pytest.mark.parametrize("name, loss_type, parts", [
    ("CrossEntropyLoss", "CrossEntropyLoss", None), ("DiceLoss", "DiceLoss", None),
    ("FocalLoss", "FocalLoss", None), ("LovaszLoss", "LovaszLoss", None),
    ("CE+Dice", "SumOfLosses", ["CrossEntropyLoss", "DiceLoss"])])
def test_each_loss_name_builds_that_loss(name, loss_type, parts):
    loss = make_loss(name, [1.0] * 6 + [0.0], list(range(6)), torch.device("cpu"))
    assert type(loss).__name__ == loss_type
    if parts:
        assert [type(p).__name__ for p in loss.parts] == parts


@pytest.mark.parametrize("name, kind, settings", [
    ("Adam", torch.optim.Adam, {"lr": 0.01, "weight_decay": 0.001}),
    ("AdamW", torch.optim.AdamW, {"lr": 0.01, "weight_decay": 0.001}),
    ("SGD", torch.optim.SGD, {"lr": 0.01, "weight_decay": 0.001, "momentum": 0.9})])
def test_each_optimizer_name_builds_that_optimizer_with_the_configs_rates(name, kind, settings):
    opt = make_optimizer(name, [torch.nn.Parameter(torch.ones(3))], 0.01, 0.001)
    assert type(opt) is kind
    assert {k: opt.param_groups[0][k] for k in settings} == settings


@pytest.mark.parametrize("name, kind", [("cosine", "CosineAnnealingLR"), ("onecycle", "OneCycleLR"),
                                        ("plateau", "ReduceLROnPlateau")])
def test_each_schedule_name_builds_that_schedule(name, kind):
    p = torch.nn.Parameter(torch.ones(1))
    assert type(make_schedule(name, torch.optim.SGD([p], lr=1.0), 1.0, 10)).__name__ == kind


def test_schedules():
    p = torch.nn.Parameter(torch.ones(1))
    assert make_schedule("none", torch.optim.SGD([p], lr=1.0), 1.0, 10) is None
    cosine = make_schedule("cosine", torch.optim.SGD([p], lr=1.0), 1.0, 10)
    plateau = make_schedule("plateau", torch.optim.SGD([p], lr=1.0), 1.0, 10)
    assert steps_per_batch(cosine) and not steps_per_batch(plateau) and not steps_per_batch(None)
    assert set(SCHEDULES) == {"none", "cosine", "onecycle", "plateau"}


@pytest.mark.parametrize("key,value,names", [("loss_fn", "Dice", LOSSES), ("optimizer", "adam", OPTIMIZERS),
                                             ("lr_schedule", "step", SCHEDULES)])
def test_config_validation_uses_the_same_tables(key, value, names):
    raw = {"model_config": TINY_MODEL, key: value}
    with pytest.raises(ConfigError) as err:
        parse_config(raw)
    assert str(err.value) == f"config key '{key}' must be one of {', '.join(names)}, got {value!r}"
    with pytest.raises(ConfigError, match=f"config key '{key}' must be one of"):
        {"loss_fn": lambda: make_loss(value, None, [0], torch.device("cpu")),
         "optimizer": lambda: make_optimizer(value, [torch.nn.Parameter(torch.ones(1))], 0.1, 0),
         "lr_schedule": lambda: make_schedule(value, None, 0.1, 1)}[key]()


@pytest.mark.parametrize("name", ["Adam", "AdamW"])
def test_adam_runs_fused_on_the_cpu_with_the_same_steps(name):
    """The fused kernel (torch ≥ 2.4 on the CPU) is used and steps exactly as the per-tensor one."""
    torch.manual_seed(0)
    weights = [torch.randn(7, 5), torch.randn(5)]
    fused_params = [torch.nn.Parameter(w.clone()) for w in weights]
    plain_params = [torch.nn.Parameter(w.clone()) for w in weights]
    fused = make_optimizer(name, fused_params, 1e-2, 1e-4)
    plain = getattr(torch.optim, name)(plain_params, lr=1e-2, weight_decay=1e-4, foreach=False)
    version = tuple(int(v) for v in torch.__version__.split("+")[0].split(".")[:2])
    if version >= (2, 4):
        assert fused.defaults.get("fused") is True
    for step in range(5):
        grads = [torch.randn_like(w) for w in weights]
        for params, optimizer in ((fused_params, fused), (plain_params, plain)):
            for p, g in zip(params, grads):
                p.grad = g.clone()
            optimizer.step()
    for a, b in zip(fused_params, plain_params):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)
