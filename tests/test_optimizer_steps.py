"""Steps as the optimizer takes them: ``LBFGS.step(closure)`` evaluates its closure up to 20
times in one step; every evaluation is part of that step, and the step's loss is the one
``step()`` returns (the first evaluation), also when the model is found by discovery
(``diagnose``), whose first step starts before the model was ever called."""

from __future__ import annotations

import json
import subprocess
import sys

import torch
from torch import nn

import rnndoctor

LBFGS = """\
import torch, torch.nn as nn
torch.manual_seed(0)
lstm = nn.LSTM(1, 16, batch_first=True); lin = nn.Linear(16, 1)
opt = torch.optim.LBFGS([*lstm.parameters(), *lin.parameters()], lr=0.5)
x = torch.sin(torch.linspace(0, 20, 400)).reshape(20, 20, 1)
returned = []
def train(n):
    for i in range(n):
        def closure():
            opt.zero_grad()
            loss = nn.functional.mse_loss(lin(lstm(x[:, :-1])[0]), x[:, 1:])
            loss.backward()
            return loss
        returned.append(float(opt.step(closure).detach()))
"""


def _train_losses(run_dir) -> list[float]:
    rows = [json.loads(line) for line in (run_dir / "signals" / "steps.jsonl").read_text().splitlines()]
    assert all(r["loss_calls"] == 1 for r in rows if r["mode"] == "train")
    return [r["loss"] for r in rows if r["mode"] == "train"]


def test_lbfgs_closure_calls_are_one_step_inside_watch(tmp_path):
    scope: dict = {}
    exec(LBFGS, scope)
    model = nn.ModuleList([scope["lstm"], scope["lin"]])
    with rnndoctor.watch(model, out=tmp_path / "run", summary=False) as w:
        scope["train"](12)
    assert w.steps == 12
    assert torch.allclose(torch.tensor(_train_losses(tmp_path / "run")), torch.tensor(scope["returned"]), rtol=1e-5)
    assert "divergence" not in {f.id for f in w.diagnosis.findings}


def test_lbfgs_under_diagnose_counts_its_first_step_once(tmp_path):
    (tmp_path / "t.py").write_text(LBFGS + "train(12)\nimport json; json.dump(returned, open('returned.json', 'w'))\n")
    proc = subprocess.run([sys.executable, "-m", "rnndoctor", "diagnose", "t.py", "--out", "run", "--quiet"],
                          cwd=tmp_path, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    returned = json.loads((tmp_path / "returned.json").read_text())
    losses = _train_losses(tmp_path / "run")
    assert len(losses) == 12
    assert torch.allclose(torch.tensor(losses), torch.tensor(returned), rtol=1e-5)


def test_two_optimizers_stepping_in_one_iteration_are_one_step(tmp_path):
    """seq2seq style: an encoder's and a decoder's optimizer both step each iteration."""
    torch.manual_seed(0)
    enc, dec = nn.GRU(3, 8, batch_first=True), nn.Linear(8, 2)
    o1, o2 = torch.optim.Adam(enc.parameters()), torch.optim.Adam(dec.parameters())
    with rnndoctor.watch(nn.ModuleList([enc, dec]), out=tmp_path / "run", summary=False) as w:
        for _ in range(10):
            x = torch.randn(4, 5, 3)
            loss = nn.functional.cross_entropy(dec(enc(x)[1][-1]), (x[:, 0, 0] > 0).long())
            o1.zero_grad(); o2.zero_grad(); loss.backward(); o1.step(); o2.step()
    assert w.steps == 10
    assert len(_train_losses(tmp_path / "run")) == 10


def _eval_without_no_grad(tmp_path, *, train_mode_for_training: bool):
    torch.manual_seed(0)
    lstm, lin = nn.LSTM(3, 8, batch_first=True), nn.Linear(8, 2)
    model = nn.ModuleDict({"lstm": lstm, "lin": lin})
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    x, y = torch.randn(16, 5, 3), torch.randint(0, 2, (16,))
    model.train(train_mode_for_training)
    with rnndoctor.watch(model, out=tmp_path / "r", summary=False, strict=True):
        for i in range(6):
            loss = nn.functional.cross_entropy(lin(lstm(x)[0][:, -1]), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            if i % 2 == 1:  # validation without no_grad: three batches, losses with grad, no backward
                model.eval()
                for _ in range(3):
                    nn.functional.cross_entropy(lin(lstm(x)[0][:, -1]), y)
                model.train(train_mode_for_training)
    return [json.loads(line) for line in (tmp_path / "r" / "signals" / "steps.jsonl").read_text().splitlines()]


def test_an_eval_pass_without_no_grad_is_not_merged_into_the_next_step(tmp_path):
    rows = _eval_without_no_grad(tmp_path, train_mode_for_training=True)
    train = [r for r in rows if r["mode"] == "train"]
    assert len(train) == 6 and all(r["loss_calls"] == 1 for r in train)
    assert [r["loss_calls"] for r in rows if r["mode"] == "eval"] == [3, 3, 3]


def test_a_loop_that_trains_in_eval_mode_still_trains(tmp_path):
    rows = _eval_without_no_grad(tmp_path, train_mode_for_training=False)
    train = [r for r in rows if r["mode"] == "train"]
    # nothing tells these passes apart from training: they count with the next step, as before
    assert len(train) == 6 and [r["loss_calls"] for r in train] == [1, 1, 4, 1, 4, 1]
    assert not [r for r in rows if r["mode"] == "eval"]


def _head_swap_run(tmp_path, build_after: bool):
    """An LSTM classifier whose head is replaced (a new class count) after the optimizer was
    built: the new head gets gradients that no optimizer applies."""
    torch.manual_seed(0)

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.lstm, self.head = nn.LSTM(3, 16, batch_first=True), nn.Linear(16, 2)

        def forward(self, x):
            return self.head(self.lstm(x)[0][:, -1])

    model = Net()
    opt = None if build_after else torch.optim.Adam(model.parameters(), lr=1e-2)
    model.head = nn.Linear(16, 3)
    opt = opt or torch.optim.Adam(model.parameters(), lr=1e-2)
    with rnndoctor.watch(model, out=tmp_path / "r", summary=False) as w:
        for _ in range(30):
            x = torch.randn(32, 10, 3)
            loss = nn.functional.cross_entropy(model(x), (x[:, :, 0].sum(1) > 0).long() + (x[:, 0, 1] > 1).long())
            opt.zero_grad()
            loss.backward()
            opt.step()
    return w


def test_a_layer_replaced_after_the_optimizer_was_built_is_never_updated(tmp_path):
    f = _head_swap_run(tmp_path / "a", build_after=False).assert_found("learning-rate-scale")
    assert f.evidence["never_updated"] == ["head.weight", "head.bias"]
    healthy = _head_swap_run(tmp_path / "b", build_after=True)
    assert not [x for x in healthy.diagnosis.findings if "never_updated" in x.evidence]
