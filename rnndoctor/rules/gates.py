"""Gates and cell state of LSTM/GRU layers, from the scheduled gate replay."""

from __future__ import annotations

from typing import Iterator

import numpy as np
import pandas as pd

from ..finding import Severity
from ..run import Run
from ..signals import SIGMOID_HIGH, SIGMOID_LOW, TANH_SATURATED
from ._common import finite_prefix, first_half, fmt, mean_profile
from .outcome import not_learning, solved
from .registry import Found, rule

#: research-notes §6: "pinned" when >= 90 % of entries sit in a flat end of the sigmoid
PINNED_SHARE = 0.9
#: ... and an extreme bias explains it: mean |b_f| >= 6 gives f < 0.0025 or f > 0.9975
EXTREME_FORGET_BIAS = 6.0
#: the gates that decide how much of the state is kept: an LSTM's forget gate, and a GRU's
#: update gate z (torch's h' = (1 - z) * n + z * h: z ~ 0 wipes the state, z ~ 1 freezes it)
KEEPING_GATES = ("f", "z")
#: gate-saturation: >= 50 % of entries saturated (DD's 50 %, SMD's 50 % of a layer)
SATURATED_SHARE = 0.5


def _where(module: str, layer: int, direction: int, gate: str, units: str | None = None) -> dict:
    where = {"module": module, "layer": int(layer), "direction": "reverse" if direction else "forward", "gate": gate}
    if units:
        where["units"] = units
    return where


def _ranges(idx: np.ndarray) -> str:
    """``[0 1 2 5 7 8]`` -> ``"0-2, 5, 7-8"``."""
    parts, start = [], None
    for i, k in enumerate(idx):
        if start is None:
            start = k
        if i + 1 == len(idx) or idx[i + 1] != k + 1:
            parts.append(f"{start}" if start == k else f"{start}-{k}")
            start = None
    return ", ".join(parts)


def pinned_units(
    rows: pd.DataFrame, low: float, high: float, words: tuple[str, str] = ("low", "high")
) -> tuple[str | None, dict[str, list[int]]]:
    """Which units sit at a flat end on average over ``rows`` (their ``unit_mean`` lists):
    ``"0-6 low; 7-31 high of 32"`` (``words`` name the two ends) and the index lists keyed
    ``low``/``high``; (None, {}) without per-unit means."""
    if "unit_mean" not in rows:
        return None, {}
    means = [np.asarray(v, dtype=float) for v in rows["unit_mean"] if isinstance(v, (list, np.ndarray)) and len(v)]
    if not means or len({len(m) for m in means}) != 1:
        return None, {}
    m = np.nanmean(np.stack(means), axis=0)
    groups = {"low": np.flatnonzero(m < low), "high": np.flatnonzero(m > high)}
    text = "; ".join(f"{_ranges(idx)} {word}" for word, idx in zip(words, groups.values()) if len(idx))
    return (f"{text} of {len(m)}" if text else None), {k: [int(i) for i in v] for k, v in groups.items() if len(v)}


@rule(
    "forget-gate-saturation",
    Severity.ERROR,
    signals=("gates",),
    fix="Initialise the forget-gate bias to about 1 (set b_ih and b_hh of the f slice so their sum is 1), not ±10.",
    plots=("gates",),
)
def forget_gate_saturation(run: Run, *, pinned_share: float = PINNED_SHARE, extreme_bias: float = EXTREME_FORGET_BIAS) -> Iterator[Found]:
    """Forget gates (a GRU's update gates) pinned shut (memory wiped every step) or wide open.

    What it detects: in the replayed gates of an LSTM layer, at least 90 % of forget-gate
    entries (units x time steps x batch) are below 0.05 or above 0.95 on the sampled steps of
    the first half of the run; the same of a GRU's update gate z (torch's convention, the
    share of the state kept: a hand-written cell that keeps 1 - z is read the same way). Error
    when the gate's bias explains it (mean |b| >= 6); warning when the run is also not learning.

    Legitimate look-alikes: a trained LSTM that learned to keep memory (f ≈ 1) or to drop it
    (f ≈ 0), and a forget bias made large on purpose for long dependencies (chrono
    initialisation, b_f = log U(1, T_max - 1)). Learned saturation is told apart by reading
    only the first half of the sampled steps (in a run of a thousand steps, only the three
    at its start), by taking the bias from the first recorded check (its initial value), and
    by reporting a saturation the bias does not explain only as a warning, and only when the
    run is also not learning. Not told apart: chrono initialisation for dependencies of a
    few thousand steps gives a mean |b_f| of about 6 or more and is an error even when the
    run learns.

    Why it matters: f(1 - f) is the gradient through the gate: pinned gates cannot learn to
    remember or forget, and f ≈ 0 turns the LSTM into a memoryless layer, f ≈ 1 lets the
    cell state grow without bound (seed 003's ±10 biases). Jozefowicz et al. 2015: an LSTM
    without a working forget gate performs like a plain tanh RNN.

    How to fix: initialise the forget bias to about 1 (b_ih + b_hh of the f slice), not ±10;
    keep the gate weights' scale moderate; normalise inputs.
    """
    g = run["gates"]
    g = g[g["gate"].isin(KEEPING_GATES)] if not g.empty else g
    if g.empty:
        return
    cell = run["cell"]
    learning_bad = None
    for (module, layer, direction), rows in g.groupby(["module", "layer", "direction"], sort=False):
        early = first_half(rows)
        low, high = float(early["frac_low"].mean()), float(early["frac_high"].mean())
        share = low + high  # pinned at either flat end (seed 003 pins some units shut, the rest open)
        if share < pinned_share:
            continue
        side = "closed" if low >= high else "open"
        bias = float("nan")
        if not cell.empty:
            c = cell[(cell["module"] == module) & (cell["layer"] == layer) & (cell["direction"] == direction)]
            if not c.empty:
                bias = float(np.mean(np.abs(c.iloc[0]["forget_bias"])))
        extreme = bias >= extreme_bias
        if not extreme:
            if learning_bad is None:
                learning_bad = not_learning(run)
            if not learning_bad:
                continue
        text, units = pinned_units(early, SIGMOID_LOW, SIGMOID_HIGH, words=("closed", "open"))
        gate = str(rows["gate"].iloc[0])
        name = "Forget gates" if gate == "f" else "Update gates (z, the share of the state kept)"
        yield Found(
            title=f"{name} of '{module}' layer {layer} are pinned: {share:.0%} of entries below 0.05 or above 0.95",
            explanation=(
                f"Across the sampled steps of the first half of training, {high:.1%} of {gate}-gate values were above 0.95 "
                f"({'the cell never forgets and accumulates' if gate == 'f' else 'the state is never updated'}) and "
                f"{low:.1%} below 0.05 (memory wiped every step); the mean |{gate} bias| is {fmt(bias)}. The gate's "
                f"gradient {gate}(1-{gate}) is ~0, so it cannot learn its way out."
            ),
            evidence={"share_pinned": share, "share_open": high, "share_closed": low, "mostly": side, "mean_abs_forget_bias": bias, "checks": int(len(early)),
                      "p10": float(early["p10"].mean()), "p50": float(early["p50"].mean()), "p90": float(early["p90"].mean()),
                      **({"units_pinned": units} if units else {})},
            where=_where(module, layer, direction, gate, text),
            first_step=int(early["step"].min()),
            severity=Severity.ERROR if extreme else Severity.WARNING,
            fix=None if gate == "f" else
            "Initialise the update gate's bias near 0 (PyTorch's default) or slightly positive, not ±10.",  # an error only when the bias explains it
        )


@rule(
    "gate-saturation",
    Severity.WARNING,
    signals=("gates",),
    fix="Standardise the inputs (zero mean, unit variance per feature); keep initial weights small and gate biases moderate (|b| of a few units at most, not ±10).",
    plots=("gates",),
)
def gate_saturation(run: Run, *, share: float = SATURATED_SHARE) -> Iterator[Found]:
    """Input/output gates or the cell candidate saturated for most units.

    What it detects: at least half of the entries of an LSTM input or output gate (sigmoid
    below 0.05 or above 0.95), of the cell candidate g (|tanh| > 0.95), or of a GRU's reset
    gate or candidate are saturated on the sampled steps of the first half of the run (the
    gates that keep the state, f and z, are forget-gate-saturation's).

    Legitimate look-alikes: gates a trained model uses as switches: an input gate shut
    between rare events, a tanh RNN whose
    units settle at ±1 to count or hold a bit; an initialisation that shuts gates on purpose
    (chrono initialisation sets the input bias to minus the large forget bias). Told apart
    by reading the first half of the sampled steps (in a run of a thousand steps, only the
    three at its start), where saturation comes from the inputs and the initial weights
    rather than from learning, and by the outcome: a run that solved its task (its loss at
    most 5 % of the best input-independent predictor's) gets the finding as information; ReLU units
    are not judged (their zeros are not saturation). Not told apart: a long run that learned
    such switches before its midpoint and then stalled.

    Why it matters: saturated sigmoid/tanh units pass almost no gradient (σ' < 0.05 at
    0.05/0.95), so those gates stop learning — typically because inputs are far from unit
    scale (seed 004's points in the hundreds) or weights are large.

    How to fix: standardise the inputs; keep initial weights small (PyTorch's default
    U(-1/√H, 1/√H)) and gate biases moderate; lower a learning rate that blew the weights up.
    """
    g = run["gates"]
    if g.empty:
        return
    g = g[~g["gate"].isin(KEEPING_GATES) & g["frac_saturated"].notna()]  # forget-gate-saturation's
    learned = None  # read once, only when a gate is saturated
    for (module, layer, direction, gate), rows in g.groupby(["module", "layer", "direction", "gate"], sort=False):
        early = first_half(rows)
        sat = float(early["frac_saturated"].mean()) if not early.empty else float("nan")
        if not sat >= share:  # (NaN: nothing sampled)
            continue
        act = str(early["activation"].iloc[0]) if "activation" in early else "sigmoid"
        lo, hi = (-TANH_SATURATED, TANH_SATURATED) if act == "tanh" else (SIGMOID_LOW, SIGMOID_HIGH)
        text, units = pinned_units(early, lo, hi)
        if learned is None:
            learned = solved(run)
        yield Found(
            title=f"Gate '{gate}' of '{module}' layer {layer} is saturated for {sat:.0%} of entries",
            explanation=(
                f"On the sampled steps of the first half of training {sat:.1%} of the '{gate}' gate's values sat in a flat end "
                "of its sigmoid/tanh, where almost no gradient passes."
                + (" The run solved its task anyway (its loss is under 5 % of an input-independent predictor's): "
                   "how the model uses this gate, not why it fails." if learned else "")
            ),
            severity=Severity.INFO if learned else None,
            evidence={"share_saturated": sat, "checks": int(len(early)), "mean": float(early["mean"].mean()),
                      **({"units_pinned": units} if units else {})},
            where=_where(module, layer, direction, str(gate), text),
            first_step=int(early["step"].min()),
        )


@rule(
    "cell-state-growth",
    Severity.WARNING,
    signals=("cell",),
    fix="Set the forget bias near 1 (not large positive), keep cell activations bounded (tanh), clip gradients, shorten sequences.",
    plots=("cell_norm",),
)
def cell_state_growth(
    run: Run,
    *,
    growth: float = 3.0,  # ||c_T|| / ||c_{T/4}||: linear accumulation from 0 gives ~4, a bounded cell ~1-1.5 (calibrated on lstm_saturated_gates 3.99 vs its twin)
    min_len: int = 20,
    magnitude: float = 1e3,  # mean |c| per unit > 1e3 (TDC's magnitude bound)
) -> Iterator[Found]:
    """The LSTM cell state grows steadily along the sequence.

    What it detects: on sequences of at least 20 steps, the mean ‖c_t‖ over the batch,
    averaged over the sampled steps of the first half of the run, is at least 3x larger at
    the last time step than a quarter of the way in and grows through the middle
    (TDC's divergence pattern applied over time; linear accumulation from 0 gives
    4x), or its mean magnitude per unit exceeds 1e3.

    Legitimate look-alikes: a cell that accumulates evidence on purpose (counting, summing,
    a running total over the sequence), and a forget gate slow by design (chrono
    initialisation, forget biases of 4 or more) whose cell is still filling up over
    sequences shorter than its time constant 1 / (1 - f). Told apart only by reading the
    first half of the sampled steps, before most accumulation is learned. Not told apart: a
    slow forget gate at initialisation on sequences shorter than its time constant, and
    accumulation learned before the midpoint of a long run; the rule reads neither the
    forget bias nor whether the run learns, and stays a warning.

    Why it matters: a cell that only accumulates (forget gate ≈ 1, input gate open) has no
    bounded memory: h = o·tanh(c) saturates and, with unbounded activations, the values
    overflow on long sequences — seed 003's road to NaN.

    How to fix: forget bias about 1 instead of large positive values; bounded (tanh) cell
    activations; shorter sequences or truncated backprop; gradient clipping.
    """
    cell = run["cell"]
    if cell.empty or "c_norm" not in cell:
        return
    cell = cell[cell["c_norm"].map(lambda v: isinstance(v, (list, tuple, np.ndarray)) and len(v) > 0)]  # a GRU has no c
    for (module, layer, direction), rows in cell.groupby(["module", "layer", "direction"], sort=False):
        rows = first_half(rows)  # a short sequence that learned to accumulate evidence is fine later on
        rows = rows[rows["c_norm"].map(lambda v: bool(np.isfinite(np.asarray(v, float)).any()))]
        prof = finite_prefix(mean_profile(rows["c_norm"]))  # up to where the cell overflowed
        t = len(prof) if prof is not None else 0
        if t < min_len:
            continue
        q, mid, last = prof[t // 4], prof[t // 2], prof[-1]
        hidden = max(1, len(rows.iloc[0]["forget_bias"]))
        per_unit = last / np.sqrt(hidden)
        if not ((q > 0 and last >= growth * q and q < mid < last) or per_unit > magnitude):
            continue
        yield Found(
            title=f"Cell state of '{module}' layer {layer} grows {fmt(last / q if q > 0 else float('inf'))}x from t={t // 4} to t={t - 1}",
            explanation=(
                f"Mean ‖c_t‖ rises from {fmt(q)} at t={t // 4} to {fmt(mid)} at t={t // 2} and {fmt(last)} at t={t - 1}: "
                "the cell accumulates instead of forgetting."
            ),
            evidence={"c_norm_quarter": float(q), "c_norm_half": float(mid), "c_norm_last": float(last), "sequence_length": t,
                      "c_norm_profile": [round(float(v), 4) for v in prof]},
            where={"module": module, "layer": int(layer), "direction": "reverse" if direction else "forward"},
            first_step=int(rows["step"].min()),
        )
