"""One training step, shared by the run and the budget's speed probe: the same update as written out by
hand."""

import copy

import torch

from geoseg.models.checkpoint import build_model
from geoseg.training.step import training_step

from conftest import TINY_MODEL


def test_a_step_is_forward_loss_backward_and_the_optimizers_step():
    torch.manual_seed(0)
    model = build_model("Unet", TINY_MODEL)
    twin = copy.deepcopy(model)
    x, y = torch.randn(2, 3, 64, 64), torch.randint(0, 7, (2, 64, 64))
    loss_fn = torch.nn.CrossEntropyLoss()
    opt, twin_opt = (torch.optim.SGD(m.parameters(), lr=0.1) for m in (model, twin))
    loss, logits = training_step(model, x, y, loss_fn, opt, None)
    expected = loss_fn(twin(x).float(), y)
    twin_opt.zero_grad()
    expected.backward()
    twin_opt.step()
    assert torch.equal(loss.detach(), expected.detach()) and logits.shape == (2, 7, 64, 64)
    for a, b in zip(model.parameters(), twin.parameters()):
        assert torch.equal(a, b)
