"""Cells called in a Python loop (nn.LSTMCell / nn.GRUCell): their gates are replayed call
by call on gates steps and judged like a fused module's, over the loop's time steps."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import rnndoctor
from rnndoctor.watch import Watch

T, B, F_IN, H = 60, 8, 3, 16


class CellNet(nn.Module):
    def __init__(self, kind: str = "LSTM") -> None:
        super().__init__()
        self.kind = kind
        self.cell = nn.LSTMCell(F_IN, H) if kind == "LSTM" else nn.GRUCell(F_IN, H)
        self.out = nn.Linear(H, 1)

    def forward(self, x):  # x: [B, T, F]
        h = x.new_zeros(x.shape[0], H)
        c = x.new_zeros(x.shape[0], H)
        for t in range(x.shape[1]):
            if self.kind == "LSTM":
                h, c = self.cell(x[:, t], (h, c))
            else:
                h = self.cell(x[:, t], h)
        return self.out(h).squeeze(-1)


def saturate_(cell: nn.LSTMCell, bias: float = 10.0) -> None:
    """Seed 003's recipe: every gate bias +10 (input, forget and output gates pinned open)."""
    with torch.no_grad():
        cell.bias_ih.fill_(bias)
        cell.bias_ih[2 * H:3 * H] = 0.0  # the cell candidate g keeps no bias
        cell.bias_hh.zero_()


def run(model: nn.Module, out, steps: int = 8) -> Watch:
    torch.manual_seed(1)
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    with Watch(model, out=out, summary=False, strict=True) as w:
        for _ in range(steps):
            x = torch.rand(B, T, F_IN)  # positive inputs: a pinned-open cell accumulates them
            loss = F.mse_loss(model(x), x[:, :, 0].mean(1))
            opt.zero_grad()
            loss.backward()
            opt.step()
    return w


def test_lstm_cell_loop_with_saturated_biases_is_found(tmp_path):
    torch.manual_seed(0)
    model = CellNet()
    saturate_(model.cell)
    w = run(model, tmp_path / "r")
    found = w.assert_found("forget-gate-saturation", "error")
    assert found.where.get("module") == "cell"
    w.assert_found("cell-state-growth")
    rec = rnndoctor.load_run(tmp_path / "r")
    gates = rec["gates"]
    assert set(gates["gate"]) == {"i", "f", "g", "o"}
    assert gates["replay_err"].max() < 1e-5  # each call's replay equals the cell's own h
    cell = rec["cell"]
    assert len(cell.iloc[0]["c_norm"]) == T  # one ||c_t|| per call of the loop


def test_healthy_lstm_cell_loop_is_quiet(tmp_path):
    torch.manual_seed(0)
    w = run(CellNet(), tmp_path / "r")
    for rule in ("forget-gate-saturation", "gate-saturation", "cell-state-growth"):
        w.assert_not_found(rule)
    assert len(rnndoctor.load_run(tmp_path / "r")["gates"])  # it was looked at, and judged fine


def test_gru_cell_loop_records_its_gates(tmp_path):
    torch.manual_seed(0)
    run(CellNet("GRU"), tmp_path / "r", steps=3)
    gates = rnndoctor.load_run(tmp_path / "r")["gates"]
    assert set(gates["gate"]) == {"r", "z", "n"} and gates["replay_err"].max() < 1e-5


def test_cell_calls_without_grad_are_not_replayed(tmp_path):
    torch.manual_seed(0)
    model = CellNet()
    with Watch(model, out=tmp_path / "r", summary=False, strict=True):
        with torch.no_grad():
            model(torch.rand(B, T, F_IN))
    assert "gates" not in rnndoctor.load_run(tmp_path / "r").signals


class HandCell(nn.Module):
    """Seed 003's kind of cell: gates from nn.Linear, sigmoid/tanh by hand."""

    def __init__(self) -> None:
        super().__init__()
        self.gates = nn.Linear(F_IN + H, 4 * H)

    def forward(self, x, h, c):
        i, f, g, o = self.gates(torch.cat([x, h], 1)).chunk(4, 1)
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        return torch.sigmoid(o) * torch.tanh(c), c


class HandNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.cell = HandCell()
        self.out = nn.Linear(H, 1)

    def forward(self, x):
        h = c = x.new_zeros(x.shape[0], H)
        for t in range(x.shape[1]):
            h, c = self.cell(x[:, t], h, c)
        return self.out(h).squeeze(-1)


@pytest.mark.parametrize("bias,saturated", [(10.0, True), (0.0, False)])
def test_hand_written_cell_gets_activation_statistics(tmp_path, bias, saturated):
    """No replay can name a hand-written cell's gates; its modules' output statistics over
    the loop's calls show the ±10 pre-activations all the same."""
    torch.manual_seed(0)
    model = HandNet()
    with torch.no_grad():
        model.cell.gates.bias.fill_(bias)
    run(model, tmp_path / "r", steps=3)
    acts = rnndoctor.load_run(tmp_path / "r")["activations"]
    gate_rows = acts[acts["module"] == "cell.gates"]
    assert len(gate_rows) == 3 and (gate_rows["calls"] == T).all()
    share = gate_rows["frac_large"].mean()
    assert (share > 0.9) if saturated else (share < 0.2), share


def test_gate_batch_replays_the_first_sequences_of_each_batch_exactly(tmp_path):
    """watch(gate_batch=n): the replay recomputes n sequences, checked against the module's
    own final state for those sequences; the record says the statistics are a subsample's."""
    torch.manual_seed(0)
    lstm, head = nn.LSTM(3, 8, batch_first=True), nn.Linear(8, 1)
    opt = torch.optim.SGD([*lstm.parameters(), *head.parameters()], lr=0.01)
    with Watch(nn.ModuleList([lstm, head]), out=tmp_path / "r", summary=False, strict=True, gate_batch=4, report="none"):
        for _ in range(3):
            x = torch.randn(32, 10, 3)
            loss = F.mse_loss(head(lstm(x)[0][:, -1]).squeeze(-1), x[:, :, 0].mean(1))
            opt.zero_grad()
            loss.backward()
            opt.step()
    rec = rnndoctor.load_run(tmp_path / "r")
    assert rec["gates"]["replay_err"].max() < 1e-5 and rec.meta["gate_batch"] == 4
    with pytest.raises(ValueError, match="gate_batch"):
        Watch(lstm, gate_batch=0)
