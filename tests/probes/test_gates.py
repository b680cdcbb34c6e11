"""Gate replay reproduces the fused modules' own outputs; gate_stats matches direct counts."""

from __future__ import annotations

import math
import pytest
import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from rnndoctor.probes.gates import (
    SIGMOID_HIGH,
    SIGMOID_LOW,
    TANH_SATURATED,
    gate_stats,
    replay,
    replay_cell,
)

ATOL = 1e-10
F_IN, H, B, T = 3, 5, 4, 7
LENGTHS = torch.tensor([7, 3, 5, 1])  # unsorted: pack with enforce_sorted=False


def make(kind: str, **kw) -> nn.Module:
    torch.manual_seed(0)
    if kind == "LSTM":
        m = nn.LSTM(F_IN, H, **kw)
    elif kind == "GRU":
        m = nn.GRU(F_IN, H, **kw)
    else:
        m = nn.RNN(F_IN, H, nonlinearity=kind, **kw)
    return m.double().eval()


def hx_for(m: nn.Module, batch: int | None):
    D = 2 if m.bidirectional else 1
    shape = (m.num_layers * D,) + ((batch,) if batch is not None else ())
    hout = getattr(m, "proj_size", 0) or m.hidden_size
    h0 = torch.randn(*shape, hout, dtype=torch.float64)
    if isinstance(m, nn.LSTM):
        return h0, torch.randn(*shape, m.hidden_size, dtype=torch.float64)
    return h0


def check(m: nn.Module, x, hx=None) -> None:
    with torch.no_grad():
        out, hn = m(x, hx) if hx is not None else m(x)
    rep = replay(m, x, hx)
    assert rep.exact
    if isinstance(out, nn.utils.rnn.PackedSequence):
        out, _ = pad_packed_sequence(out, batch_first=m.batch_first)
    assert rep.output.shape == out.shape
    torch.testing.assert_close(rep.output, out, atol=ATOL, rtol=0)
    if isinstance(m, nn.LSTM):
        torch.testing.assert_close(rep.h_n, hn[0], atol=ATOL, rtol=0)
        torch.testing.assert_close(rep.c_n, hn[1], atol=ATOL, rtol=0)
    else:
        torch.testing.assert_close(rep.h_n, hn, atol=ATOL, rtol=0)
        assert rep.c_n is None
    D = 2 if m.bidirectional else 1
    assert [(lr.layer, lr.direction) for lr in rep.layers] == [(k, d) for k in range(m.num_layers) for d in range(D)]


KINDS = ["LSTM", "GRU", "tanh", "relu"]
CONFIGS = {
    "plain": {},
    "bidir": {"bidirectional": True},
    "2layer": {"num_layers": 2},
    "2layer-bidir": {"num_layers": 2, "bidirectional": True},
    "nobias": {"bias": False, "num_layers": 2},
}


@pytest.mark.parametrize("batch_first", [False, True])
@pytest.mark.parametrize("config", list(CONFIGS))
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("given_hx", [False, True])
def test_replay_matches_module(kind, config, batch_first, given_hx):
    m = make(kind, batch_first=batch_first, **CONFIGS[config])
    x = torch.randn(B, T, F_IN, dtype=torch.float64)
    if not batch_first:
        x = x.transpose(0, 1)
    check(m, x, hx_for(m, B) if given_hx else None)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("batch_first", [False, True])
@pytest.mark.parametrize("given_hx", [False, True])
def test_replay_unbatched(kind, batch_first, given_hx):
    m = make(kind, batch_first=batch_first, num_layers=2, bidirectional=True)
    check(m, torch.randn(T, F_IN, dtype=torch.float64), hx_for(m, None) if given_hx else None)


@pytest.mark.parametrize("config", [{}, {"bidirectional": True}, {"num_layers": 2, "bidirectional": True}])
@pytest.mark.parametrize("batch_first", [False, True])
@pytest.mark.parametrize("given_hx", [False, True])
def test_replay_lstm_proj_size(config, batch_first, given_hx):
    m = make("LSTM", proj_size=2, batch_first=batch_first, **config)
    x = torch.randn(B, T, F_IN, dtype=torch.float64)
    if not batch_first:
        x = x.transpose(0, 1)
    check(m, x, hx_for(m, B) if given_hx else None)


def packed_input(batch_first: bool):
    x = torch.randn(B, T, F_IN, dtype=torch.float64)
    for b, n in enumerate(LENGTHS):
        x[b, n:] = 0
    if not batch_first:
        x = x.transpose(0, 1)
    return pack_padded_sequence(x, LENGTHS, batch_first=batch_first, enforce_sorted=False)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("batch_first", [False, True])
@pytest.mark.parametrize("given_hx", [False, True])
def test_replay_packed(kind, batch_first, given_hx):
    m = make(kind, batch_first=batch_first, num_layers=2, bidirectional=True)
    check(m, packed_input(batch_first), hx_for(m, B) if given_hx else None)


@pytest.mark.parametrize("batch_first", [False, True])
@pytest.mark.parametrize("given_hx", [False, True])
def test_acceptance_bidir_2layer_lstm_proj_packed(batch_first, given_hx):
    m = make("LSTM", num_layers=2, bidirectional=True, proj_size=3, batch_first=batch_first)
    x = packed_input(batch_first)
    check(m, x, hx_for(m, B) if given_hx else None)
    rep = replay(m, x)
    assert rep.packed and rep.mask.sum() == LENGTHS.sum()
    assert rep.layer(1, 1).c.shape == (B, T, H) and rep.layer(1, 1).h.shape == (B, T, 3)


def test_replay_float32_and_dropout_flag():
    torch.manual_seed(0)
    m = nn.LSTM(F_IN, H, num_layers=2, dropout=0.5)
    x = torch.randn(T, B, F_IN)
    m.eval()
    out, (_, cn) = m(x)
    rep = replay(m, x)
    torch.testing.assert_close(rep.output, out, atol=1e-5, rtol=0)
    torch.testing.assert_close(rep.c_n, cn, atol=1e-5, rtol=0)
    assert rep.exact and not rep.output.requires_grad
    m.train()
    assert not replay(m, x).exact


@pytest.mark.parametrize("cell_cls", [nn.LSTMCell, nn.GRUCell, "tanh", "relu"])
@pytest.mark.parametrize("bias", [True, False])
def test_replay_cell_loop(cell_cls, bias):
    torch.manual_seed(0)
    if isinstance(cell_cls, str):
        cell = nn.RNNCell(F_IN, H, bias=bias, nonlinearity=cell_cls)
    else:
        cell = cell_cls(F_IN, H, bias=bias)
    cell = cell.double()
    x = torch.randn(T, B, F_IN, dtype=torch.float64)
    lstm = isinstance(cell, nn.LSTMCell)
    state = None
    for t in range(T):
        rep = replay_cell(cell, x[t], state)
        with torch.no_grad():
            state = cell(x[t], state)
        h = state[0] if lstm else state
        torch.testing.assert_close(rep.h_n, h, atol=ATOL, rtol=0)
        torch.testing.assert_close(rep.layers[0].h[:, 0], h, atol=ATOL, rtol=0)
        if lstm:
            torch.testing.assert_close(rep.c_n, state[1], atol=ATOL, rtol=0)
    # unbatched call
    hx = tuple(s[0] for s in state) if lstm else state[0]
    rep = replay_cell(cell, x[0, 0], hx)
    with torch.no_grad():
        ref = cell(x[0, 0], hx)
    torch.testing.assert_close(rep.h_n, ref[0] if lstm else ref, atol=ATOL, rtol=0)


def test_gate_order_lstm_gru():
    """Gates recomputed by hand in PyTorch's documented order (LSTM i,f,g,o; GRU r,z,n)."""
    m = make("GRU")
    x = torch.randn(1, B, F_IN, dtype=torch.float64)
    rep = replay(m, x)
    gi = x[0] @ m.weight_ih_l0.T + m.bias_ih_l0
    gh = m.bias_hh_l0.expand(B, -1)  # h0 = 0
    r = torch.sigmoid(gi[:, :H] + gh[:, :H])
    n = torch.tanh(gi[:, 2 * H:] + r * gh[:, 2 * H:])
    torch.testing.assert_close(rep.layers[0].gates["r"][:, 0], r)
    torch.testing.assert_close(rep.layers[0].gates["n"][:, 0], n)
    m = make("LSTM")
    rep = replay(m, x)
    g = x[0] @ m.weight_ih_l0.T + m.bias_ih_l0 + m.bias_hh_l0
    torch.testing.assert_close(rep.layers[0].gates["f"][:, 0], torch.sigmoid(g[:, H:2 * H]))
    torch.testing.assert_close(rep.layers[0].gates["g"][:, 0], torch.tanh(g[:, 2 * H:3 * H]))


def _rows(rep, gate=None):
    return {(r["layer"], r["direction"]): r for r in gate_stats(rep) if r["gate"] == gate}


def test_gate_stats_forget_bias_high():
    m = make("LSTM", num_layers=2)
    with torch.no_grad():
        for k in range(2):
            getattr(m, f"bias_ih_l{k}")[H:2 * H] = 10.0
            getattr(m, f"bias_hh_l{k}")[H:2 * H] = 0.0
    x = torch.randn(T, B, F_IN, dtype=torch.float64)
    rep = replay(m, x)
    rows = gate_stats(rep)
    assert all(isinstance(r["layer"], int) and isinstance(r["direction"], int) for r in rows)
    f = _rows(rep, "f")
    for (k, d), row in f.items():
        v = rep.layer(k, d).gates["f"]
        assert row["frac_high"].item() > 0.99
        assert row["frac_high"].item() == pytest.approx((v > SIGMOID_HIGH).double().mean().item())
        assert row["frac_low"].item() == pytest.approx((v < SIGMOID_LOW).double().mean().item())
        assert row["mean"].item() == pytest.approx(v.mean().item())
        q = torch.quantile(v.flatten(), torch.tensor([0.1, 0.5, 0.9], dtype=v.dtype))
        torch.testing.assert_close(torch.stack([row["p10"], row["p50"], row["p90"]]), q)
        torch.testing.assert_close(row["unit_mean"], v.mean((0, 1)))
        assert row["p10"].dim() == 0 and row["frac_high"].device == v.device
    g = _rows(rep, "g")[(0, 0)]
    v = rep.layer(0, 0).gates["g"]
    assert g["frac_saturated"].item() == pytest.approx((v.abs() > TANH_SATURATED).double().mean().item())
    cell = _rows(rep, None)
    for (k, d), row in cell.items():
        assert row["c_norm"].shape == (T,)
        torch.testing.assert_close(row["c_norm"], rep.layer(k, d).c.norm(dim=-1).mean(0))
        torch.testing.assert_close(row["forget_bias"], torch.full((H,), 10.0, dtype=torch.float64))


@pytest.mark.parametrize("kind", KINDS)
def test_gate_stats_packed_excludes_padding(kind):
    m = make(kind, bidirectional=True)
    x = packed_input(batch_first=True)
    rep = replay(m, x)
    mask = rep.mask
    for row in gate_stats(rep):
        lr = rep.layer(row["layer"], row["direction"])
        if row["gate"] is None and lr.c is None:  # a GRU: its z bias alone
            assert set(row) == {"layer", "direction", "gate", "forget_bias"}
            torch.testing.assert_close(row["forget_bias"], (m.bias_ih_l0 + m.bias_hh_l0)[H:2 * H].detach()
                                       if row["layer"] == 0 and row["direction"] == 0 else row["forget_bias"])
            continue
        if row["gate"] is None:
            c = lr.c.norm(dim=-1)
            ref = torch.stack([c[mask[:, t], t].mean() for t in range(T)])
            torch.testing.assert_close(row["c_norm"], ref)
            continue
        valid = lr.gates[row["gate"]][mask]  # [N, H] valid entries only
        assert row["mean"].item() == pytest.approx(valid.mean().item())
        q = torch.quantile(valid.flatten(), torch.tensor([0.1, 0.5, 0.9], dtype=valid.dtype))
        torch.testing.assert_close(torch.stack([row["p10"], row["p50"], row["p90"]]), q)
        if row["activation"] == "sigmoid":
            assert row["frac_high"].item() == pytest.approx((valid > SIGMOID_HIGH).double().mean().item())
        elif row["activation"] == "tanh":
            assert row["frac_saturated"].item() == pytest.approx((valid.abs() > TANH_SATURATED).double().mean().item())
        else:
            assert row["frac_low"].item() == pytest.approx((valid == 0).double().mean().item())
    # the per-step tensors hold values at padding positions too: an unmasked mean differs
    v = rep.layer(0, 0).gates[next(iter(rep.layers[0].gates))]
    assert not torch.isclose(v.mean(), v[mask].mean())


def test_gate_stats_cell():
    cell = nn.LSTMCell(F_IN, H).double()
    rep = replay_cell(cell, torch.randn(B, F_IN, dtype=torch.float64))
    rows = gate_stats(rep)
    assert [r["gate"] for r in rows] == ["i", "f", "g", "o", None]


def test_gate_stats_judge_the_steps_before_an_overflow_and_nothing_after_it():
    """Seed 003 overflows part way through its first sequence: the statistics are those of the
    finite steps (a NaN is neither saturated nor not), and a replay with no finite step says
    'unknown' (NaN), never 'unsaturated' (0)."""
    m = make("LSTM")
    with torch.no_grad():
        m.bias_ih_l0[H:2 * H] = 10.0
    x = torch.randn(T, B, F_IN, dtype=torch.float64)
    rep = replay(m, x)
    clean = {r["gate"]: r for r in gate_stats(rep)}
    cut = T // 2
    for lr in rep.layers:
        for v in lr.gates.values():
            v[:, cut:] = float("nan")  # [B, T, H]: every step from the middle on overflowed
        lr.c[:, cut:] = float("nan")
    half = {r["gate"]: r for r in gate_stats(rep)}
    f = rep.layer(0, 0).gates["f"][:, :cut]
    assert half["f"]["frac_high"].item() == pytest.approx((f > SIGMOID_HIGH).double().mean().item())
    assert half["f"]["frac_high"].item() > 0.99 and clean["f"]["frac_high"].item() > 0.99
    c_norm = half[None]["c_norm"]
    assert torch.isfinite(c_norm[:cut]).all() and torch.isnan(c_norm[cut:]).all()
    for lr in rep.layers:
        for v in lr.gates.values():
            v.fill_(float("nan"))
    gone = {r["gate"]: r for r in gate_stats(rep)}
    assert all(math.isnan(gone[g]["frac_saturated"].item()) and math.isnan(gone[g]["mean"].item()) for g in "ifgo")


@pytest.mark.parametrize("kind", ["LSTM", "GRU"])
@pytest.mark.parametrize("batch_first", [False, True])
@pytest.mark.parametrize("packed", [False, True])
@pytest.mark.parametrize("given_hx", [False, True])
def test_a_replay_of_the_first_sequences_is_the_full_replay_cut_to_them(kind, batch_first, packed, given_hx):
    """``max_batch``: the gates and states of the batch's first n sequences, exactly as the
    full replay computes them for those sequences (the sequences do not interact)."""
    m = make(kind, batch_first=batch_first, num_layers=2, bidirectional=True)
    x = packed_input(batch_first) if packed else torch.randn(B, T, F_IN, dtype=torch.float64)
    if not packed and not batch_first:
        x = x.transpose(0, 1)
    hx = hx_for(m, B) if given_hx else None
    full, part = replay(m, x, hx), replay(m, x, hx, max_batch=2)
    for a, b in zip(full.layers, part.layers):
        assert set(a.gates) == set(b.gates)
        for g in a.gates:
            torch.testing.assert_close(b.gates[g], a.gates[g][:2], atol=ATOL, rtol=0)
        torch.testing.assert_close(b.h, a.h[:2], atol=ATOL, rtol=0)
    torch.testing.assert_close(part.h_n, full.h_n[:, :2], atol=ATOL, rtol=0)
    assert replay(m, x, hx, max_batch=B + 3).h_n.shape == full.h_n.shape  # a batch under the cap: whole


def test_gate_statistics_from_a_subsample_of_the_batch_estimate_the_full_batchs():
    """The sampling error of gate_batch: the saturated shares read off 8 of 128 sequences,
    on a pinned-open LSTM and on a healthy one, against the whole batch's."""
    torch.manual_seed(0)
    for bias in (6.0, 0.0):
        m = nn.LSTM(4, 32, batch_first=True)
        with torch.no_grad():
            m.bias_ih_l0.fill_(bias)
        x = torch.randn(128, 40, 4)
        full = {r["gate"]: r for r in gate_stats(replay(m, x)) if r.get("gate")}
        part = {r["gate"]: r for r in gate_stats(replay(m, x, max_batch=8)) if r.get("gate")}
        for g in full:
            for key in ("frac_low", "frac_high"):
                if key in full[g]:
                    assert abs(float(part[g][key]) - float(full[g][key])) < 0.05, (bias, g, key)
