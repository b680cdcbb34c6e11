"""Gradients left from the last step (``zero_grad`` once per epoch, or never) are read at
each step's first backward pass, and ``gradients-not-zeroed`` judges them; the loops that
legitimately keep gradients between backward passes stay quiet."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import rnndoctor


class SumSign(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.rnn, self.head = nn.GRU(1, 16, batch_first=True), nn.Linear(16, 2)
        self.frozen = nn.Linear(1, 1)  # requires grad, never in the optimizer

    def forward(self, x):
        return self.head(self.rnn(x)[0][:, -1]) + 0 * self.frozen(x[:, 0]).sum()


def _train(tmp_path, loop: str, steps: int = 24):
    torch.manual_seed(0)
    model = SumSign()
    opt = torch.optim.SGD([*model.rnn.parameters(), *model.head.parameters()], lr=0.05, momentum=0.9)
    with rnndoctor.watch(model, out=tmp_path / loop, summary=False, strict=True) as run:
        for i in range(steps):
            if loop == "per_epoch" and i % 8 == 0:
                opt.zero_grad()
            if loop in ("each", "zeros"):
                opt.zero_grad(set_to_none=loop == "each")
            micro = 4 if loop == "accumulate" else 1
            for _ in range(micro):
                x = torch.randn(16, 10, 1)
                (F.cross_entropy(model(x), (x.sum((1, 2)) > 0).long()) / micro).backward()
            opt.step()
            if loop == "accumulate":
                opt.zero_grad()
    return run.diagnosis, rnndoctor.load_run(tmp_path / loop)["stale_grads"]


@pytest.mark.parametrize("loop", ["per_epoch", "never"])
def test_gradients_kept_across_steps_are_found(tmp_path, loop):
    diagnosis, rows = _train(tmp_path, loop)
    (f,) = [f for f in diagnosis.findings if f.id == "gradients-not-zeroed"]
    expected = 23 - 2 if loop == "per_epoch" else 23  # steps 8 and 16 start from zero
    assert f.evidence["steps_with_leftover"] == expected and f.evidence["steps_observed"] == 23
    assert rows["with_grad"].max() == 6  # the GRU's 4 and the head's 2; the frozen layer is not read


@pytest.mark.parametrize("loop", ["each", "zeros", "accumulate"])
def test_zeroed_or_deliberately_accumulated_gradients_are_quiet(tmp_path, loop):
    diagnosis, rows = _train(tmp_path, loop)
    assert "gradients-not-zeroed" not in diagnosis.ids()
    assert len(rows) == 23 and (rows["stale_norm"] == 0).all()
