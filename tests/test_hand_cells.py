"""Hand-written cells get the gate diagnosis: the cell and its gates are found by dataflow
(a module fed back its own output; a sigmoid multiplied with the carried state), whatever the
cell's style. Each style is trained with seed 003's saturated gate biases and as a healthy
twin (PyTorch's default init)."""

from __future__ import annotations

import json

import pytest
import torch
import numpy as np
import torch.nn.functional as F
from torch import nn

import rnndoctor
from rnndoctor.watch import Watch
from test_cells import B, F_IN, H, T
from test_cells import run as train  # positive inputs: a pinned-open cell accumulates them

GATE_RULES = ("forget-gate-saturation", "gate-saturation", "cell-state-growth")


class PerGateLinear(nn.Module):
    """Lasagne style (seed 003): one nn.Linear per gate on [x, h]."""

    def __init__(self) -> None:
        super().__init__()
        self.ingate, self.forgetgate, self.cellgate, self.outgate = (nn.Linear(F_IN + H, H) for _ in range(4))

    def forward(self, x, state):
        h, c = state
        z = torch.cat([x, h], 1)
        i, f = torch.sigmoid(self.ingate(z)), torch.sigmoid(self.forgetgate(z))
        g, o = torch.tanh(self.cellgate(z)), torch.sigmoid(self.outgate(z))
        c = f * c + i * g
        return o * torch.tanh(c), c

    def saturate(self) -> None:
        for lin in (self.ingate, self.forgetgate, self.outgate):
            nn.init.constant_(lin.bias, 10.0)


class ChunkedLinear(nn.Module):
    """One nn.Linear producing 4H, chunked; sigmoid as a method."""

    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(F_IN + H, 4 * H)

    def forward(self, x, state):
        h, c = state
        i, f, g, o = self.lin(torch.cat([x, h], 1)).chunk(4, 1)
        c = f.sigmoid() * c + i.sigmoid() * g.tanh()
        return o.sigmoid() * c.tanh(), c

    def saturate(self) -> None:
        with torch.no_grad():
            self.lin.bias.fill_(10.0)
            self.lin.bias[2 * H:3 * H] = 0.0


class RawParameters(nn.Module):
    """Raw nn.Parameter matrices with @, gates in the order f, i, o."""

    def __init__(self) -> None:
        super().__init__()
        self.W = nn.Parameter(torch.randn(F_IN, 4 * H) * 0.3)
        self.U = nn.Parameter(torch.randn(H, 4 * H) * 0.3)
        self.b = nn.Parameter(torch.zeros(4 * H))

    def forward(self, x, state):
        h, c = state
        pre = x @ self.W + h @ self.U + self.b
        f, i, o = torch.sigmoid(pre[:, :H]), torch.sigmoid(pre[:, H:2 * H]), torch.sigmoid(pre[:, 2 * H:3 * H])
        g = torch.tanh(pre[:, 3 * H:])
        c = f * c + i * g
        return o * torch.tanh(c), c

    def saturate(self) -> None:
        with torch.no_grad():
            self.b[:3 * H] = 10.0


class Peephole(ChunkedLinear):
    """A peephole LSTM: the gates also read c (element-wise weights)."""

    def __init__(self) -> None:
        super().__init__()
        self.p_i, self.p_f, self.p_o = (nn.Parameter(torch.zeros(H)) for _ in range(3))

    def forward(self, x, state):
        h, c = state
        a_i, a_f, a_g, a_o = self.lin(torch.cat([x, h], 1)).chunk(4, 1)
        i = torch.sigmoid(a_i + self.p_i * c)
        f = torch.sigmoid(a_f + self.p_f * c)
        c = f * c + i * torch.tanh(a_g)
        o = torch.sigmoid(a_o + self.p_o * c)
        return o * torch.tanh(c), c


class GRUStyle(nn.Module):
    """A GRU by hand: z, r = sigmoid(...).chunk(2); h = (1 - z) * h + z * n."""

    def __init__(self) -> None:
        super().__init__()
        self.zr = nn.Linear(F_IN + H, 2 * H)
        self.n = nn.Linear(F_IN + H, H)

    def forward(self, x, h):
        z, r = torch.sigmoid(self.zr(torch.cat([x, h], 1))).chunk(2, 1)
        n = torch.tanh(self.n(torch.cat([x, r * h], 1)))
        return (1 - z) * h + z * n

    def saturate(self) -> None:
        nn.init.constant_(self.zr.bias, 10.0)


class Loop(nn.Module):
    def __init__(self, cell: nn.Module) -> None:
        super().__init__()
        self.cell, self.out = cell, nn.Linear(H, 1)

    def forward(self, x):
        h = c = x.new_zeros(x.shape[0], H)
        for t in range(x.shape[1]):
            if isinstance(self.cell, GRUStyle):
                h = self.cell(x[:, t], h)
            else:
                h, c = self.cell(x[:, t], (h, c))
        return self.out(h).squeeze(-1)


LSTM_STYLES = [PerGateLinear, ChunkedLinear, RawParameters, Peephole]


@pytest.mark.parametrize("style", LSTM_STYLES, ids=lambda c: c.__name__)
def test_a_saturated_hand_written_lstm_is_diagnosed(tmp_path, style):
    torch.manual_seed(0)
    model = Loop(style())
    model.cell.saturate()
    w = train(model, tmp_path / "r")
    ids = w.diagnosis.ids()
    assert "forget-gate-saturation" in ids or "gate-saturation" in ids, ids
    assert "cell-state-growth" in ids, ids
    rec = rnndoctor.load_run(tmp_path / "r")
    assert set(rec["gates"]["gate"]) == {"i", "f", "g", "o"}
    f = rec["gates"][rec["gates"]["gate"] == "f"]
    assert (f["module"] == "cell").all() and f["frac_high"].min() > 0.99
    assert len(rec["cell"].iloc[0]["c_norm"]) == T  # one ||c_t|| per call of the loop


@pytest.mark.parametrize("style", LSTM_STYLES + [GRUStyle], ids=lambda c: c.__name__)
def test_a_healthy_hand_written_cell_is_quiet(tmp_path, style):
    torch.manual_seed(0)
    w = train(Loop(style()), tmp_path / "r")
    for rule in GATE_RULES:
        w.assert_not_found(rule)
    rec = rnndoctor.load_run(tmp_path / "r")
    assert len(rec["gates"])  # read, and judged fine
    assert rec["hand_cells"][["module", "read"]].to_dict("records") == [{"module": "cell", "read": 1}]
    assert not [n for n in w.diagnosis.notes if "not recognised" in n]


def test_the_forget_bias_is_read_from_the_linear_that_feeds_the_gate(tmp_path):
    torch.manual_seed(0)
    model = Loop(PerGateLinear())
    model.cell.saturate()
    w = train(model, tmp_path / "r", steps=3)
    w.assert_found("forget-gate-saturation")  # |bias| 10 is extreme: judged without waiting
    bias = rnndoctor.load_run(tmp_path / "r")["cell"].iloc[0]["forget_bias"]
    assert min(bias) > 9.9


def test_a_saturated_hand_written_gru_is_diagnosed(tmp_path):
    torch.manual_seed(0)
    model = Loop(GRUStyle())
    model.cell.saturate()
    w = train(model, tmp_path / "r")
    # this cell keeps (1 - z) of its state: read as torch's z (the share kept), ~0, with bias -10
    f = w.assert_found("forget-gate-saturation")
    assert f.severity.value == "error" and f.where["gate"] == "z" and f.evidence["mostly"] == "closed"
    assert f.evidence["mean_abs_forget_bias"] > 9.9
    w.assert_found("gate-saturation")  # r, pinned open
    rec = rnndoctor.load_run(tmp_path / "r")
    gates = rec["gates"]
    assert set(gates["gate"]) == {"r", "z", "n"}
    assert gates[gates["gate"] == "z"]["frac_low"].min() > 0.99
    assert min(rec["cell"].iloc[0]["forget_bias"]) < -9.9


def test_a_gru_cell_written_the_torch_way_round_is_read_the_same(tmp_path):
    """h' = (1 - z) * n + z * h with z's bias -10: the state is wiped; the z recorded is the
    sigmoid itself, its bias -10 read from the Linear that feeds it (one Linear per gate)."""

    class TorchOrder(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.z, self.r, self.n = (nn.Linear(F_IN + H, H) for _ in range(3))

        def forward(self, x, h):
            xh = torch.cat([x, h], 1)
            z, r = torch.sigmoid(self.z(xh)), torch.sigmoid(self.r(xh))
            n = torch.tanh(self.n(torch.cat([x, r * h], 1)))
            return (1 - z) * n + z * h

    class Loop1(Loop):
        def forward(self, x):
            h = x.new_zeros(x.shape[0], H)
            for t in range(x.shape[1]):
                h = self.cell(x[:, t], h)
            return self.out(h).squeeze(-1)

    torch.manual_seed(0)
    model = Loop1(TorchOrder())
    nn.init.constant_(model.cell.z.bias, -10.0)
    w = train(model, tmp_path / "r")
    f = w.assert_found("forget-gate-saturation")
    assert f.severity.value == "error" and f.where["gate"] == "z" and f.evidence["mostly"] == "closed"
    assert min(rnndoctor.load_run(tmp_path / "r")["cell"].iloc[0]["forget_bias"]) < -9.9


def test_a_feedback_module_without_gates_is_not_guessed(tmp_path):
    """An Elman cell (tanh only) feeds its state back but has no gate to read."""

    class Elman(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.lin = nn.Linear(F_IN + H, H)

        def forward(self, x, state):
            h = torch.tanh(self.lin(torch.cat([x, state[0]], 1)))
            return h, state[1]

    w = train(Loop(Elman()), tmp_path / "r", steps=3)
    rec = rnndoctor.load_run(tmp_path / "r")
    assert rec["gates"].empty
    (told,) = rec["hand_cells"].to_dict("records")
    assert told["module"] == "cell" and told["read"] == 0 and told["reason"] == "no sigmoid gate"
    (note,) = [n for n in w.diagnosis.notes if "not recognised" in n]
    assert "'cell'" in note and "no sigmoid gate" in note and "not judged" in note


def _mode_active() -> bool:
    return torch._C._len_torch_function_stack() > 0


def _observer_active() -> bool:
    """The hand-cell observer is on the torch-function stack (the time-gradient probe's host
    value guard, on its own schedule, is another mode)."""
    from rnndoctor.probes import hand_cells

    n = torch._C._len_torch_function_stack()
    return any(isinstance(torch._C._get_function_stack_at(i), hand_cells.CellObserver) for i in range(n))


def test_a_model_without_recurrence_is_not_observed_after_the_loop_search(tmp_path):
    """The op log is for cells: a feed-forward model is looked at on its first step (which
    module is fed back its own output? the log of that step is dropped when none is); with
    none, two sampled steps look for a loop inside its forward (which has no module to hook),
    and then it never runs under the mode again."""
    seen = []

    class MLP(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a, self.b = nn.Linear(F_IN, H), nn.Linear(H, 1)

        def forward(self, x):
            seen.append(_mode_active())
            return self.b(torch.tanh(self.a(x))).squeeze(-1)

    model = MLP()
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    with Watch(model, out=tmp_path / "r", summary=False, strict=True):
        for _ in range(5):
            x = torch.rand(B, F_IN)
            loss = F.mse_loss(model(x), x[:, 0])
            opt.zero_grad()
            loss.backward()
            opt.step()
    assert len(seen) == 5 and seen == [True, True, True, False, False]


def test_a_cell_runs_under_the_mode_only_on_observed_steps(tmp_path):
    seen = []
    cell = PerGateLinear()
    forward = cell.forward

    def spy(x, state):
        seen.append(_observer_active())
        return forward(x, state)

    cell.forward = spy
    train(Loop(cell), tmp_path / "r", steps=6)
    per_step = [any(seen[i * T:(i + 1) * T]) for i in range(6)]
    assert per_step == [True, True, True, False, False, False]  # found and read on step 0, read on 1 and 2


def test_our_own_hooks_ops_never_enter_the_cells_op_log(tmp_path):
    """The activation statistics run inside the cell's call on a gates step (``x * x``,
    sums): the observer logs the user's ops only, so every mul it logged is the cell's."""
    from rnndoctor.probes import hand_cells

    logs = []
    original = hand_cells.recognise

    def spy(obs):
        logs.append(list(obs.ops))
        return original(obs)

    hand_cells.recognise = spy
    try:
        torch.manual_seed(0)
        train(Loop(ChunkedLinear()), tmp_path / "r", steps=3)
    finally:
        hand_cells.recognise = original
    assert logs
    for ops in logs:
        muls = [src for kind, _, src in ops if kind == "mul"]
        # per call of the chunked cell: f * c, i * g, o * tanh(c): three, none of them x * x
        assert len(muls) == 3 * T and not any(a is b for a, b in muls)


class _GRUStyleCell(nn.Module):
    def __init__(self, f: int, h: int) -> None:
        super().__init__()
        self.zr = nn.Linear(f + h, 2 * h)
        self.n = nn.Linear(f + h, h)

    def forward(self, x: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        z, r = torch.sigmoid(self.zr(torch.cat([x, h], 1))).chunk(2, 1)
        n = torch.tanh(self.n(torch.cat([x, r * h], 1)))
        return (1 - z) * n + z * h


class _Loop(nn.Module):
    def __init__(self, fed_back: bool) -> None:
        super().__init__()
        self.cell, self.out, self.fed_back = _GRUStyleCell(2, 12), nn.Linear(12, 2), fed_back

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.zeros(x.shape[0], 12)
        last = h
        for t in range(x.shape[1]):
            last = self.cell(x[:, t], h)
            if self.fed_back:
                h = last
        return self.out(last)


@pytest.mark.parametrize("fed_back", [False, True])
def test_a_hand_cell_whose_state_is_never_fed_back_is_no_recurrence(tmp_path, fed_back):
    """``h_new = cell(x_t, h)`` with ``h`` never reassigned: every call gets the same zero
    state. Its twin passes the state back and is read as a GRU-style cell."""
    torch.manual_seed(0)
    model = _Loop(fed_back)
    opt = torch.optim.Adam(model.parameters(), 1e-2)
    with rnndoctor.watch(model, out=tmp_path / "r", summary=False, strict=True) as run:
        for _ in range(6):
            x = torch.randn(16, 10, 2)
            loss = F.cross_entropy(model(x), (x[:, 0, 0] > 0).long())
            opt.zero_grad(); loss.backward(); opt.step()
    ids = run.diagnosis.ids()
    assert ("no-recurrence" in ids) is not fed_back


class InlineLSTM(nn.Module):
    """The time loop written inside the model's own forward over raw parameters: no cell
    module at all (the recurrence is only in the forward's dataflow)."""

    def __init__(self, carry: bool = True) -> None:
        super().__init__()
        self.W = nn.Parameter(torch.randn(F_IN, 4 * H) / F_IN ** 0.5)
        self.U = nn.Parameter(torch.randn(H, 4 * H) / H ** 0.5)
        self.b_i, self.b_f, self.b_g, self.b_o = (nn.Parameter(torch.zeros(H)) for _ in range(4))
        self.out = nn.Linear(H, 1)
        self.carry = carry

    def forward(self, x):
        h = c = h0 = x.new_zeros(x.shape[0], H)
        for t in range(x.shape[1]):
            zi, zf, zg, zo = (x[:, t] @ self.W + (h if self.carry else h0) @ self.U).chunk(4, dim=1)
            f = torch.sigmoid(zf + self.b_f)
            i = torch.sigmoid(zi + self.b_i)
            o = torch.sigmoid(zo + self.b_o)
            c = f * (c if self.carry else h0) + i * torch.tanh(zg + self.b_g)
            h = o * torch.tanh(c)
        return self.out(h).squeeze(-1)


class InlineGRU(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.gates = nn.Linear(F_IN + H, 2 * H)
        self.cand = nn.Linear(F_IN + H, H)
        self.out = nn.Linear(H, 1)

    def forward(self, x):
        h = x.new_zeros(x.shape[0], H)
        for t in range(x.shape[1]):
            z, r = torch.sigmoid(self.gates(torch.cat([x[:, t], h], 1))).chunk(2, 1)
            n = torch.tanh(self.cand(torch.cat([x[:, t], r * h], 1)))
            h = (1 - z) * n + z * h
        return self.out(h).squeeze(-1)


def test_a_loop_inside_the_forward_is_read_as_a_cell(tmp_path):
    torch.manual_seed(0)
    model = InlineLSTM()
    with torch.no_grad():
        model.b_f.fill_(-8.0)  # the keeping gate pinned shut
    w = train(model, tmp_path / "r")
    found = w.assert_found("forget-gate-saturation", "error")
    assert found.where["module"] == "InlineLSTM" and found.evidence["mostly"] == "closed"
    assert abs(found.evidence["mean_abs_forget_bias"] - 8.0) < 0.1  # read from b_f, not guessed
    rec = rnndoctor.load_run(tmp_path / "r")
    assert set(rec["gates"]["gate"]) == {"i", "f", "g", "o"}
    assert rec["hand_cells"][["module", "read"]].to_dict("records") == [{"module": "InlineLSTM", "read": 1}]
    assert len(rec["cell"].iloc[0]["c_norm"]) == T - 1  # the steps after the first, one each


@pytest.mark.parametrize("style", [InlineLSTM, InlineGRU], ids=lambda c: c.__name__)
def test_a_healthy_loop_inside_the_forward_is_quiet(tmp_path, style):
    torch.manual_seed(0)
    w = train(style(), tmp_path / "r")
    for rule in GATE_RULES:
        w.assert_not_found(rule)
    rec = rnndoctor.load_run(tmp_path / "r")
    assert rec["hand_cells"][["module", "read"]].to_dict("records") == [{"module": style.__name__, "read": 1}]
    assert set(rec["gates"]["gate"]) == ({"i", "f", "g", "o"} if style is InlineLSTM else {"r", "z", "n"})


def test_a_loop_that_carries_nothing_is_no_recurrence(tmp_path):
    """Each step reads the zero initial state instead of the one the step before made."""
    torch.manual_seed(0)
    w = train(InlineLSTM(carry=False), tmp_path / "r")
    found = w.assert_found("no-recurrence", "error")
    assert found.where["module"] == "InlineLSTM"
    rec = rnndoctor.load_run(tmp_path / "r")
    assert not rec.has("gates")
    cells = rec["hand_cells"]
    assert set(cells["read"]) == {-1} and len(cells) >= 2 and (cells["state_abs_max"] == 0).all()
    assert "no state is carried" in cells["reason"].iloc[0]


class MGU(nn.Module):
    """A minimal gated unit (one gate, no r): h' = (1 - f) * h + f * tanh(W x + U (f * h))."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = nn.Linear(F_IN + H, H)
        self.cand_x, self.cand_h = nn.Linear(F_IN, H), nn.Linear(H, H, bias=False)

    def forward(self, x, h):
        f = torch.sigmoid(self.gate(torch.cat([x, h], 1)))
        return (1 - f) * h + f * torch.tanh(self.cand_x(x) + self.cand_h(f * h))


class MaskedLoop(nn.Module):
    """The state updated only where a sequence has not ended (``torch.where``): the cell is
    never fed back its own output, so the loop is read from the forward's dataflow."""

    def __init__(self, cell: nn.Module) -> None:
        super().__init__()
        self.cell, self.out = cell, nn.Linear(H, 1)

    def forward(self, x):
        h = x.new_zeros(x.shape[0], H)
        lengths = torch.full((x.shape[0],), x.shape[1] - 1)
        for t in range(x.shape[1]):
            h = torch.where((t < lengths).unsqueeze(1), self.cell(x[:, t], h), h)
        return self.out(h).squeeze(-1)


@pytest.mark.parametrize("bias, pinned", [(-10.0, True), (0.0, False)])
def test_a_minimal_gated_unit_is_read_with_its_one_gate(tmp_path, bias, pinned):
    torch.manual_seed(0)
    model = MaskedLoop(MGU())
    with torch.no_grad():
        model.cell.gate.bias.fill_(bias)  # -10: the state is never updated
    w = train(model, tmp_path / "r")
    if pinned:
        found = w.assert_found("forget-gate-saturation")
        assert found.evidence["mostly"] == "open"  # z = 1 - f: all of the old state kept
        assert abs(found.evidence["mean_abs_forget_bias"] - 10.0) < 0.1
    else:
        for rule in GATE_RULES:
            w.assert_not_found(rule)
    rec = rnndoctor.load_run(tmp_path / "r")
    assert set(rec["gates"]["gate"]) == {"z", "n"}


class InlineElman(nn.Module):
    def __init__(self, carry: bool) -> None:
        super().__init__()
        self.W, self.U = nn.Parameter(torch.randn(F_IN, H) / F_IN ** 0.5), nn.Parameter(torch.randn(H, H) / H ** 0.5)
        self.out, self.carry = nn.Linear(H, 1), carry

    def forward(self, x):
        h = h0 = x.new_zeros(x.shape[0], H)
        outs = []
        for t in range(x.shape[1]):
            h_t = torch.tanh(x[:, t] @ self.W + (h if self.carry else h0) @ self.U)
            h = h_t if self.carry else h
            outs.append(h_t)
        return self.out(outs[-1]).squeeze(-1)


@pytest.mark.parametrize("carry", [False, True])
def test_an_inline_elman_loop_that_drops_its_state_is_no_recurrence(tmp_path, carry):
    torch.manual_seed(0)
    w = train(InlineElman(carry), tmp_path / "r")
    if carry:
        w.assert_not_found("no-recurrence")
    else:
        assert w.assert_found("no-recurrence", "error").where["module"] == "InlineElman"


class DeepTanhMLP(nn.Module):
    """Eight identical tanh layers, each with weights of its own: its ops repeat like a loop's,
    and each layer hands its output to the next, but nothing is shared: not a recurrence."""

    def __init__(self) -> None:
        super().__init__()
        self.inp = nn.Linear(F_IN * T, H)
        self.layers = nn.ParameterList([nn.Parameter(torch.randn(H, H) / H ** 0.5) for _ in range(8)])
        self.out = nn.Linear(H, 1)

    def forward(self, x):
        h = torch.tanh(self.inp(x.flatten(1)))
        for w in self.layers:
            h = torch.tanh(h @ w)
        return self.out(h).squeeze(-1)


def test_a_stack_of_layers_with_their_own_weights_is_not_read_as_a_loop(tmp_path):
    w = train(DeepTanhMLP(), tmp_path / "r")
    rec = rnndoctor.load_run(tmp_path / "r")
    assert not rec.has("hand_cells") and not rec.has("gates")
    assert not [n for n in w.diagnosis.notes if "not recognised" in n]


def test_a_cell_is_read_on_the_weights_its_first_step_used(tmp_path):
    """Seed 003 overflows in its first forward and its first update turns every weight NaN:
    the cell is found and read on that very first step, with the biases as the pass used
    them (a copy at first use), not as the optimizer left them at the step's end."""
    torch.manual_seed(0)
    cell = PerGateLinear()
    cell.saturate()
    model = Loop(cell)
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    with Watch(model, out=tmp_path / "r", summary=False, strict=True):
        x = torch.rand(B, T, F_IN)
        loss = F.mse_loss(model(x), x[:, :, 0].mean(1))
        opt.zero_grad()
        loss.backward()
        with torch.no_grad():
            cell.forgetgate.bias.fill_(float("nan"))  # the update ruins the live parameter
        opt.step()
    rec = rnndoctor.load_run(tmp_path / "r")
    assert rec["hand_cells"]["step"].tolist() == [0]
    (row,) = rec["cell"].to_dict("records")
    assert row["step"] == 0 and np.allclose(row["forget_bias"], 10.0)
    f = rec["gates"].query("gate == 'f'").iloc[0]
    assert f["step"] == 0 and f["frac_high"] > 0.99


@pytest.mark.parametrize("style", [PerGateLinear, RawParameters, GRUStyle], ids=lambda c: c.__name__)
def test_the_gate_bias_treatment_reaches_a_hand_written_cell_where_the_run_found_its_biases(tmp_path, style):
    """A fix trial's forget-bias-1 on a hand-written cell: the diagnosed run records where each
    gate's bias lives (parameter and slice); the treatment, given that, sets them before the
    first forward pass: forget gate 1, the others 0 (a GRU's all 0)."""
    from rnndoctor.probes import DEFAULT_PROBES
    from rnndoctor.treatments import ForgetGateBias

    torch.manual_seed(0)
    model = Loop(style())
    model.cell.saturate()
    train(model, tmp_path / "r", steps=2)
    args = ForgetGateBias.arguments_from(rnndoctor.load_run(tmp_path / "r"))
    where = args["hand_cells"]["cell"]
    if style is RawParameters:  # f, i, o, g = b[:H], b[H:2H], b[2H:3H], b[3H:]
        assert where == {"f": [["cell.b", 0, H, 1]], "i": [["cell.b", H, 2 * H, 1]], "o": [["cell.b", 2 * H, 3 * H, 1]],
                         "g": [["cell.b", 3 * H, 4 * H, 1]]}
    elif style is PerGateLinear:
        assert where["f"] == [["cell.forgetgate.bias", 0, H, 1]] and set(where) == {"i", "f", "g", "o"}
    else:
        # h = (1 - z) * h + z * n keeps 1 - z: torch's z, biased by minus this slice
        assert where["z"] == [["cell.zr.bias", 0, H, -1]] and where["r"] == [["cell.zr.bias", H, 2 * H, 1]]

    torch.manual_seed(0)
    model = Loop(style())
    model.cell.saturate()  # as the script does: after the watch adopted the model, before training
    t = ForgetGateBias(**json.loads(json.dumps(args)))  # what the trial's child gets
    opt = torch.optim.SGD(model.parameters(), lr=0.0)
    with Watch(model, out=tmp_path / "t", summary=False, strict=True, probes=[t, *DEFAULT_PROBES]) as w:
        for _ in range(2):
            x = torch.rand(B, T, F_IN)
            loss = F.mse_loss(model(x), x[:, :, 0].mean(1))
            opt.zero_grad()
            loss.backward()
            opt.step()
    assert t.applied == 1
    keep = rnndoctor.load_run(tmp_path / "t")["cell"].iloc[0]["forget_bias"]
    assert np.allclose(keep, 0.0 if style is GRUStyle else 1.0)
    assert "forget-gate-saturation" not in w.diagnosis.ids()


def test_a_gate_bias_summed_from_two_vectors_gets_its_value_in_the_first():
    from rnndoctor.treatments import _set_gate_biases

    b_ih, b_hh = nn.Parameter(torch.full((8,), 5.0)), nn.Parameter(torch.full((8,), 5.0))
    params = {"b_ih": b_ih, "b_hh": b_hh}
    with torch.no_grad():
        assert _set_gate_biases({"i": [["b_ih", 0, 4, 1], ["b_hh", 0, 4, 1]], "f": [["b_ih", 4, 8, 1], ["b_hh", 4, 8, 1]]}, params)
    assert (b_ih + b_hh).tolist() == [0.0] * 4 + [1.0] * 4
    assert not _set_gate_biases({"f": [["gone", 0, 4, 1]]}, params)  # a name the model does not have: nothing set
