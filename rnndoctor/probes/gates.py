"""Gate replay: recompute a fused ``nn.LSTM`` / ``nn.GRU`` / ``nn.RNN`` from its own weights.

PyTorch's fused recurrent modules expose neither their gates nor their intermediate layers.
:func:`replay` recomputes every layer and direction from the module's weights and one call's
input and initial state (as captured by a forward hook, before the optimizer moves the
weights), without gradient. The input-to-gate part is one matmul per layer and direction for
all time steps at once; only the recurrent part loops over t in Python (design.md: a literal
shadow forward costs 2x a step, the split costs a fraction of that).

Layout of the per-step tensors in :class:`LayerReplay`: always ``[B, T, H]``, batch first, in
the input's own time order (the reverse direction's value at t is the one after it has read
``x_t``, as in the module's output). Padding positions of a packed input hold values computed
from padding and must be excluded with :attr:`Replay.mask`; ``h`` is zero there, as in the
module's padded output. The module-layout fields (``output``, ``h_n``, ``c_n``) are laid out
exactly like the module's own return values, so a test or a self-check can compare them.

:func:`gate_stats` reduces a replay to recorder rows on the device: no host sync.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import PackedSequence, pad_packed_sequence

# saturation thresholds: defined with their origin in signals.py, shared with the rules
from ..signals import SIGMOID_HIGH, SIGMOID_LOW, TANH_SATURATED

#: percentiles recorded per gate, over valid (non-padding) entries
PERCENTILES = (0.10, 0.50, 0.90)

#: gate names per mode, in the order of PyTorch's weight layout
GATES: dict[str, tuple[str, ...]] = {
    "LSTM": ("i", "f", "g", "o"),
    "GRU": ("r", "z", "n"),
    "RNN_TANH": ("h",),
    "RNN_RELU": ("h",),
}
#: activation applied to each gate
ACTIVATIONS: dict[str, str] = {
    "i": "sigmoid", "f": "sigmoid", "g": "tanh", "o": "sigmoid",
    "r": "sigmoid", "z": "sigmoid", "n": "tanh",
}


@dataclass
class LayerReplay:
    """One layer and direction: per-step values, each ``[B, T, ·]`` batch first.

    ``gates`` maps gate name to its activation (LSTM i/f/g/o, GRU r/z/n; for an RNN the one
    entry ``"h"`` is the tanh/relu output, i.e. h_t itself). ``c`` is the LSTM cell state.
    ``h`` is the layer's output (after the projection when ``proj_size > 0``).
    """

    layer: int
    direction: int
    gates: dict[str, Tensor]
    h: Tensor
    c: Tensor | None = None
    #: the parameters the gates were computed from (for forget-bias statistics)
    b_ih: Tensor | None = None
    b_hh: Tensor | None = None


@dataclass
class Replay:
    """Everything recomputed for one call of a recurrent module."""

    mode: str  # "LSTM", "GRU", "RNN_TANH", "RNN_RELU"
    layers: list[LayerReplay]
    #: top layer's output in the module's layout (padded if the input was packed)
    output: Tensor
    #: final states in the module's layout ([L*D, B, H], or [L*D, H] unbatched)
    h_n: Tensor
    c_n: Tensor | None = None
    #: [B, T] bool, True at valid positions; None when every position is valid
    mask: Tensor | None = None
    #: [B] int64 sequence lengths (CPU) for packed input, else None
    lengths: Tensor | None = None
    batch_first: bool = False
    packed: bool = False
    unbatched: bool = False
    #: False when the module ran in training mode with inter-layer dropout: the replay
    #: reproduces eval behaviour and cannot match the module's (random) outputs then
    exact: bool = True
    hidden_size: int = 0
    proj_size: int = 0
    notes: list[str] = field(default_factory=list)

    def layer(self, layer: int, direction: int = 0) -> LayerReplay:
        for lr in self.layers:
            if lr.layer == layer and lr.direction == direction:
                return lr
        raise KeyError((layer, direction))


def _mode(module: nn.Module) -> str:
    if isinstance(module, nn.LSTMCell):
        return "LSTM"
    if isinstance(module, nn.GRUCell):
        return "GRU"
    if isinstance(module, nn.RNNCell):
        return "RNN_TANH" if module.nonlinearity == "tanh" else "RNN_RELU"
    mode = getattr(module, "mode", None)
    if mode not in GATES:
        raise TypeError(f"cannot replay {type(module).__name__}: not a fused LSTM/GRU/RNN")
    return mode


def _step(mode: str, xt: Tensor, h: Tensor, c: Tensor | None, w_hh: Tensor, b_hh: Tensor | None,
          w_hr: Tensor | None) -> tuple[dict[str, Tensor], Tensor, Tensor | None]:
    """One recurrent step given the precomputed input part ``xt`` = W_ih x_t + b_ih."""
    hh = nn.functional.linear(h, w_hh, b_hh)
    if mode == "LSTM":
        xi, xf, xg, xo = xt.chunk(4, -1)
        hi, hf, hg, ho = hh.chunk(4, -1)
        i, f, g, o = torch.sigmoid(xi + hi), torch.sigmoid(xf + hf), torch.tanh(xg + hg), torch.sigmoid(xo + ho)
        c_new = f * c + i * g  # type: ignore[operator]
        h_new = o * torch.tanh(c_new)
        if w_hr is not None:
            h_new = nn.functional.linear(h_new, w_hr)
        return {"i": i, "f": f, "g": g, "o": o}, h_new, c_new
    if mode == "GRU":
        xr, xz, xn = xt.chunk(3, -1)
        hr, hz, hn = hh.chunk(3, -1)
        r, z = torch.sigmoid(xr + hr), torch.sigmoid(xz + hz)
        n = torch.tanh(xn + r * hn)
        return {"r": r, "z": z, "n": n}, (1 - z) * n + z * h, None
    pre = xt + hh
    h_new = torch.tanh(pre) if mode == "RNN_TANH" else torch.relu(pre)
    return {"h": h_new}, h_new, None


def _run_direction(mode: str, xi: Tensor, h: Tensor, c: Tensor | None, w_hh: Tensor,
                   b_hh: Tensor | None, w_hr: Tensor | None, mask: Tensor | None
                   ) -> tuple[dict[str, Tensor], Tensor, Tensor | None, Tensor, Tensor | None]:
    """Loop over t of ``xi`` [B, T, G*H]; padded steps (mask False) keep the state."""
    gates: dict[str, list[Tensor]] = {}
    hs: list[Tensor] = []
    cs: list[Tensor] = []
    for t in range(xi.shape[1]):
        g, h_new, c_new = _step(mode, xi[:, t], h, c, w_hh, b_hh, w_hr)
        if mask is not None:
            m = mask[:, t, None]
            h = torch.where(m, h_new, h)
            c = torch.where(m, c_new, c) if c_new is not None else None  # type: ignore[arg-type]
        else:
            h, c = h_new, c_new
        for k, v in g.items():
            gates.setdefault(k, []).append(v)
        hs.append(h)
        if c is not None:
            cs.append(c)
    H = torch.stack(hs, 1)
    if mask is not None:
        H = H * mask[..., None]
    return ({k: torch.stack(v, 1) for k, v in gates.items()}, H,
            torch.stack(cs, 1) if cs else None, h, c)


def _reverse_index(lengths: Tensor, T: int) -> Tensor:
    """[B, T] index reversing each row within its length (an involution), CPU int64."""
    t = torch.arange(T)[None, :]
    L = lengths[:, None]
    return torch.where(t < L, L - 1 - t, t)


def _unreverse(v: Tensor, rev_idx: Tensor | None) -> Tensor:
    """Undo the per-row time reversal (a flip when every row has full length)."""
    return v.flip(1) if rev_idx is None else v.gather(1, rev_idx[..., None].expand_as(v))


@torch.no_grad()
def replay(module: nn.Module, input: Tensor | PackedSequence, hx: Any = None, max_batch: int | None = None) -> Replay:
    """Recompute one call of a fused ``nn.LSTM``/``nn.GRU``/``nn.RNN`` (eval semantics).

    ``input`` and ``hx`` are exactly what the module was called with (a forward hook's
    ``args``). Returns gates and states for every layer, direction and step, and the outputs
    in the module's own layout. No host sync beyond what packing itself implies. With
    ``max_batch``, only the batch's first ``max_batch`` sequences are recomputed (gate
    statistics are shares of entries: a fixed subsample estimates them at a fraction of the
    cost, and the time loop shrinks with it); the outputs then hold those sequences only.
    """
    mode = _mode(module)
    L, D = module.num_layers, 2 if module.bidirectional else 1
    H = module.hidden_size
    P = getattr(module, "proj_size", 0) or 0
    Hout = P or H
    batch_first = module.batch_first
    packed = isinstance(input, PackedSequence)
    unbatched = False
    lengths = mask = None
    if packed:
        x, lengths = pad_packed_sequence(input, batch_first=True)  # original batch order
        T = x.shape[1]
        mask_cpu = torch.arange(T)[None, :] < lengths[:, None]
        mask = mask_cpu.to(x.device, non_blocking=True)
    else:
        x = input
        if x.dim() == 2:
            unbatched = True
            x = x.unsqueeze(0 if batch_first else 1)
        if not batch_first:
            x = x.transpose(0, 1)
        T = x.shape[1]
    B = x.shape[0]
    keep = max_batch if max_batch is not None and not unbatched and B > max_batch else None
    if keep is not None:
        x, B = x[:keep], keep
        lengths = lengths[:keep] if lengths is not None else None
        mask = mask[:keep] if mask is not None else None

    # initial state, [L*D, B, ·]
    if mode == "LSTM":
        h0, c0 = hx if hx is not None else (None, None)
    else:
        h0, c0 = hx, None
    if h0 is not None and unbatched:
        h0 = h0.unsqueeze(1)
        c0 = c0.unsqueeze(1) if c0 is not None else None
    if h0 is not None and keep is not None:
        h0 = h0[:, :keep]
        c0 = c0[:, :keep] if c0 is not None else None
    if h0 is None:
        h0 = x.new_zeros(L * D, B, Hout)
    if mode == "LSTM" and c0 is None:
        c0 = x.new_zeros(L * D, B, H)

    rev_idx = None
    layers: list[LayerReplay] = []
    h_n: list[Tensor] = []
    c_n: list[Tensor] = []
    layer_in = x
    for k in range(L):
        outs = []
        for d in range(D):
            sfx = f"_l{k}" + ("_reverse" if d else "")
            w_ih, w_hh = getattr(module, "weight_ih" + sfx), getattr(module, "weight_hh" + sfx)
            b_ih = getattr(module, "bias_ih" + sfx) if module.bias else None
            b_hh = getattr(module, "bias_hh" + sfx) if module.bias else None
            w_hr = getattr(module, "weight_hr" + sfx) if P else None
            xi = nn.functional.linear(layer_in, w_ih, b_ih)  # all t at once
            if d:
                if lengths is None:
                    xi = xi.flip(1)
                else:
                    if rev_idx is None:
                        rev_idx = _reverse_index(lengths, T).to(x.device, non_blocking=True)
                    xi = xi.gather(1, rev_idx[..., None].expand_as(xi))
            s = k * D + d
            gates, hseq, cseq, hT, cT = _run_direction(
                mode, xi, h0[s], c0[s] if c0 is not None else None, w_hh, b_hh, w_hr, mask)
            if d:  # back to input time order
                gates = {g: _unreverse(v, rev_idx) for g, v in gates.items()}
                hseq = _unreverse(hseq, rev_idx)
                cseq = _unreverse(cseq, rev_idx) if cseq is not None else None
            layers.append(LayerReplay(k, d, gates, hseq, cseq, b_ih, b_hh))
            outs.append(hseq)
            h_n.append(hT)
            if cT is not None:
                c_n.append(cT)
        layer_in = torch.cat(outs, -1) if D > 1 else outs[0]

    output = layer_in  # [B, T, D*Hout]
    hn = torch.stack(h_n)
    cn = torch.stack(c_n) if c_n else None
    if not batch_first:
        output = output.transpose(0, 1)
    if unbatched:
        output = output.squeeze(0 if batch_first else 1)
        hn = hn.squeeze(1)
        cn = cn.squeeze(1) if cn is not None else None
    exact = not (module.training and module.dropout > 0 and L > 1)
    notes = [] if exact else [
        "module in training mode with dropout between layers: replay computes eval behaviour"]
    return Replay(mode, layers, output, hn, cn, mask, lengths, batch_first, packed, unbatched,
                  exact, H, P, notes)


@torch.no_grad()
def replay_cell(cell: nn.Module, input: Tensor, hx: Any = None) -> Replay:
    """One step of ``nn.LSTMCell``/``nn.GRUCell``/``nn.RNNCell``: gates and the new state.

    Returned as a one-layer :class:`Replay` with T = 1 (so :func:`gate_stats` applies);
    ``h_n``/``c_n`` (and ``output`` = ``h_n``) are the new state in the cell's layout.
    """
    mode = _mode(cell)
    unbatched = input.dim() == 1
    x = input.unsqueeze(0) if unbatched else input
    if mode == "LSTM":
        h, c = hx if hx is not None else (None, None)
    else:
        h, c = hx, None
    if h is None:
        h = x.new_zeros(x.shape[0], cell.hidden_size)
    elif unbatched:
        h = h.unsqueeze(0)
    if mode == "LSTM":
        c = x.new_zeros(x.shape[0], cell.hidden_size) if c is None else (c.unsqueeze(0) if unbatched else c)
    b_ih = cell.bias_ih if cell.bias else None
    b_hh = cell.bias_hh if cell.bias else None
    xt = nn.functional.linear(x, cell.weight_ih, b_ih)
    gates, h_new, c_new = _step(mode, xt, h, c, cell.weight_hh, b_hh, None)
    lr = LayerReplay(0, 0, {k: v.unsqueeze(1) for k, v in gates.items()}, h_new.unsqueeze(1),
                     c_new.unsqueeze(1) if c_new is not None else None, b_ih, b_hh)
    if unbatched:
        h_new = h_new.squeeze(0)
        c_new = c_new.squeeze(0) if c_new is not None else None
    return Replay(mode, [lr], h_new, h_new, c_new, batch_first=True, unbatched=unbatched,
                  hidden_size=cell.hidden_size)


#: cell calls of one step kept for the replay (a loop over this many time steps is
#: sampled at its first MAX_CELL_CALLS steps)
MAX_CELL_CALLS = 1000


def join_cell_calls(calls: list[Replay]) -> Replay:
    """The replays of a cell's successive calls (one time step each) as one sequence, so
    ``gate_stats`` sees gates over t and ``c_norm`` is ‖c_t‖ along the loop."""
    first = calls[0]
    lr0 = first.layers[0]
    joined = LayerReplay(
        0, 0,
        {g: torch.cat([r.layers[0].gates[g] for r in calls], 1) for g in lr0.gates},
        torch.cat([r.layers[0].h for r in calls], 1),
        torch.cat([r.layers[0].c for r in calls], 1) if lr0.c is not None else None,  # type: ignore[misc]
        lr0.b_ih, lr0.b_hh,
    )
    last = calls[-1]
    return replace(first, layers=[joined], output=last.output, h_n=last.h_n, c_n=last.c_n)


#: percentiles are descriptive (the rules read fractions and means): take them from an evenly
#: strided sample of at most this many entries — sorting every entry of every gate made
#: gate_stats cost ~13 ms on the seed-000 model, ten times the replay itself
PERCENTILE_SAMPLE = 4096


def _percentiles(v: Tensor, valid: Tensor, n: Tensor) -> Tensor:
    """Linear-interpolated PERCENTILES of each row of ``v`` ([G, N]) over its ``valid``
    entries (``valid`` [N] shared by the rows, ``n`` its count); returns [G, len(PERCENTILES)]."""
    if v.shape[1] > PERCENTILE_SAMPLE:
        stride = -(-v.shape[1] // PERCENTILE_SAMPLE)
        v, valid = v[:, ::stride], valid[::stride]
        n = valid.sum()
    v = torch.where(valid, v, torch.full_like(v, float("inf")))  # invalid sort last
    s = v.sort(dim=1).values
    q = torch.tensor(PERCENTILES, dtype=s.dtype, device=s.device)
    pos = (q * (n.to(s.dtype) - 1)).clamp(min=0)
    lo = pos.floor().long()
    hi = pos.ceil().long().clamp(max=s.shape[1] - 1)
    a, b = s[:, lo], s[:, hi]
    out = a + (b - a) * (pos - lo.to(s.dtype))
    out = torch.where(b == a, a, out)  # exact when equal (also avoids inf - inf)
    return torch.where(n > 0, out, torch.full_like(out, float("nan")))


def _activation(rep: Replay, gate: str) -> str:
    return ACTIVATIONS.get(gate, "tanh" if rep.mode == "RNN_TANH" else "relu")


def _thresholds(acts: list[str], like: Tensor) -> tuple[Tensor, Tensor]:
    """Per-gate (low, high) bounds: a gate counts as low where x < low, high where x > high.
    relu: low is the smallest positive float (x < it means x == 0, a dead unit), no high."""
    tiny = torch.finfo(like.dtype).tiny
    low = {"sigmoid": SIGMOID_LOW, "tanh": -TANH_SATURATED, "relu": tiny}
    high = {"sigmoid": SIGMOID_HIGH, "tanh": TANH_SATURATED, "relu": float("inf")}
    shape = (len(acts), 1, 1, 1)
    return (torch.tensor([low[a] for a in acts], dtype=like.dtype).view(shape).to(like.device),
            torch.tensor([high[a] for a in acts], dtype=like.dtype).view(shape).to(like.device))


def gate_stats(rep: Replay) -> list[dict[str, Any]]:
    """Reduce a replay to recorder rows; values are device tensors, keys plain Python.

    One row per (layer, direction, gate) with keys ``layer, direction, gate, activation,
    frac_low, frac_high, frac_saturated, mean, p10, p50, p90, unit_mean``:
    sigmoid gates: frac_low = P(x < SIGMOID_LOW), frac_high = P(x > SIGMOID_HIGH);
    tanh gates: frac_low = P(x < -TANH_SATURATED), frac_high = P(x > TANH_SATURATED);
    frac_saturated = frac_low + frac_high; relu: frac_low = P(x == 0) (dead), frac_high and
    frac_saturated NaN. ``unit_mean`` is [H] (mean per unit). All over valid entries only.
    For an LSTM, also one row per (layer, direction) with ``gate=None`` and keys
    ``c_norm`` ([T]: mean over valid batch rows of ||c_t||) and ``forget_bias``
    ([H]: b_ih + b_hh of the f slice; zeros when the module has no bias); for a GRU, that
    row holds ``forget_bias`` alone: the z slice, the update gate's (the share of h kept).

    Every gate of every layer and direction is stacked into one [G, B, T, H] tensor and
    reduced along its dimensions at once: a few dozen ops per replay however deep the
    module, where one pass per gate cost ~25 ops each.
    """
    rows: list[dict[str, Any]] = []
    keys = [(lr, name) for lr in rep.layers for name in lr.gates]
    if keys:
        v = torch.stack([lr.gates[name] for lr, name in keys])  # [G, B, T, H]
        G, Bn, T, H = v.shape
        acts = [_activation(rep, name) for _, name in keys]
        mask = _finite_mask(rep, v)  # [B, T]
        m4 = mask[None, :, :, None]
        n_rows = mask.sum()
        nf = (n_rows * H).to(v.dtype).clamp(min=1)
        low, high = _thresholds(acts, v)
        is_low, is_high = (v < low) & m4, (v > high) & m4
        frac_low = is_low.sum((1, 2, 3)).to(v.dtype) / nf
        frac_high = is_high.sum((1, 2, 3)).to(v.dtype) / nf
        relu = torch.tensor([a == "relu" for a in acts], device=v.device)
        frac_high = torch.where(relu, torch.full_like(frac_high, float("nan")), frac_high)
        vz = torch.where(m4, v, torch.zeros_like(v))
        unit_mean = vz.sum((1, 2)) / n_rows.to(v.dtype).clamp(min=1)  # [G, H]
        mean = vz.sum((1, 2, 3)) / nf
        pct = _percentiles(v.reshape(G, -1), m4.expand(1, Bn, T, H).reshape(-1), n_rows * H)  # [G, 3]
        # no finite entry at all (a step after an overflow): unknown, not 0
        none = n_rows == 0
        nan = torch.full((), float("nan"), dtype=v.dtype, device=v.device)
        frac_low, frac_high, mean, unit_mean = (torch.where(none, nan, x) for x in (frac_low, frac_high, mean, unit_mean))
        sat = frac_low + frac_high
        for g, ((lr, name), act) in enumerate(zip(keys, acts)):
            rows.append({
                "layer": lr.layer, "direction": lr.direction, "gate": name, "activation": act,
                "frac_low": frac_low[g], "frac_high": frac_high[g], "frac_saturated": sat[g],
                "mean": mean[g], "p10": pct[g, 0], "p50": pct[g, 1], "p90": pct[g, 2],
                "unit_mean": unit_mean[g],
            })
    for lr in rep.layers:
        if lr.c is not None:
            rows.append({"layer": lr.layer, "direction": lr.direction, "gate": None,
                         "c_norm": _c_norm(lr.c, rep.mask), "forget_bias": _forget_bias(lr, lr.c.shape[-1])})
        elif rep.mode == "GRU":  # no cell state; the update gate z's bias plays the forget bias
            rows.append({"layer": lr.layer, "direction": lr.direction, "gate": None,
                         "forget_bias": _forget_bias(lr, lr.h.shape[-1])})
    return rows


def _finite_mask(rep: Replay, v: Tensor) -> Tensor:
    """The valid (b, t) entries, less those where a gate is NaN/Inf: a run that overflows part
    way through a sequence is judged on the steps before it (a NaN is neither saturated nor
    not). Always a mask, decided on the device (no host sync)."""
    finite = torch.isfinite(v).all(dim=3).all(dim=0)  # [B, T]
    return finite if rep.mask is None else rep.mask & finite


def _c_norm(c: Tensor, mask: Tensor | None) -> Tensor:
    """[T]: mean over valid batch rows of ||c_t||; NaN at a t with no finite row."""
    cnorm = c.norm(dim=-1)  # [B, T]
    ok = torch.isfinite(cnorm) if mask is None else mask & torch.isfinite(cnorm)
    n = ok.sum(0)
    mean = torch.where(ok, cnorm, torch.zeros_like(cnorm)).sum(0) / n.clamp(min=1).to(cnorm.dtype)
    return torch.where(n > 0, mean, torch.full_like(mean, float("nan")))


def _forget_bias(lr: LayerReplay, hidden: int) -> Tensor:
    """b_ih + b_hh of the [H:2H] slice: the LSTM's f, the GRU's z (zeros without biases)."""
    if lr.b_ih is not None and lr.b_hh is not None:
        return (lr.b_ih[hidden:2 * hidden] + lr.b_hh[hidden:2 * hidden]).detach().clone()
    return lr.h.new_zeros(hidden)
