"""Wiring of the recurrence itself: does the loop let the network recur at all?"""

from __future__ import annotations

from typing import Iterator

import numpy as np
import pandas as pd

from ..finding import Severity
from ..run import Run
from . import data as data_rules
from .gradients import rate_too_small
from ._common import blow_up_step, constant_inputs, horizon, last_reached, mean_profile, second_half
from .outcome import not_learning
from .registry import Found, rule


@rule(
    "no-recurrence",
    Severity.ERROR,
    signals=("rnn_inputs|hand_cells",),
    fix="Call the RNN on the whole sequence (lstm(x), x: [B, T, F]), or carry the returned state into the next call.",
    plots=("inputs",),
)
def no_recurrence(run: Run, *, min_calls: int = 5) -> Iterator[Found]:
    """The recurrent module never carries anything from one element to the next.

    What it detects: every sampled training call of a recurrent module (at least 5) was a
    sequence of length 1 with no initial state or an all-zero one. A training call is one
    whose output a gradient reached: a ``generate()`` loop run between steps with grad
    enabled carries its state, but it is inference, not what the model learns from. A
    hand-written cell (any module called once per time step) counts when, on at least two
    sampled training steps, every call received the very same all-zero state tensor and
    never the module's own output (``h_new = cell(x_t, h)`` with ``h`` never reassigned);
    so does a loop written inside a forward whose time steps hand no tensor on to the next
    and all read the very same all-zero state-shaped tensor (``h0 @ U`` where ``h @ U`` was
    meant).

    Legitimate look-alikes: a ``generate()`` loop that feeds one element at a time with grad
    enabled; a training loop that steps the RNN by hand and passes the state back in; an RNN
    applied on purpose to single-step inputs as a gated feed-forward layer (tabular data
    with one time step). The first two are told apart: only calls that a gradient reached
    are judged, and one sampled call with a non-zero initial state is enough to keep the
    module quiet. Not told apart: the deliberate one-step use, an error although nothing
    there was meant to recur.

    Why it matters: an RNN called one element at a time with a fresh zero state is a
    feed-forward layer: its recurrent weights get no gradient and nothing is remembered
    (seed 001 trains each bit separately, then asks for the parity of the whole string).

    How to fix: feed the whole sequence in one call (``lstm(x)`` with x of shape [B, T, F]);
    or, stepping manually, pass the returned state back in (``out, state = lstm(x_t, state)``)
    and backpropagate through the loop before the optimizer step.
    """
    yield from _stateless_hand_cells(run)
    r = run["rnn_inputs"]
    if r.empty or "hx_given" not in r:
        return
    for module, rows in r.groupby("module", sort=False):
        if "backward" in rows:  # the training calls: a sampling loop with grad on carries its
            trained = rows[rows["backward"].fillna(1) != 0]  # state but never trains
            rows = trained if not trained.empty else rows
        if len(rows) < min_calls or not (rows["seq_len"] == 1).all():
            continue
        fresh = (rows["hx_given"] == 0) | (rows.get("hx_zero", 0) == 1)
        if not fresh.all():
            continue
        yield Found(
            title=f"'{module}' only ever sees one element at a time with a fresh zero state",
            explanation=(
                f"All {len(rows)} sampled calls of '{module}' had sequence length 1 and "
                f"{'no initial state' if (rows['hx_given'] == 0).all() else 'an all-zero initial state'}: "
                "it never carries information from one element to the next, so it cannot compute anything "
                "that depends on order or history."
            ),
            evidence={"calls": int(len(rows)), "seq_len": 1, "state_passed": bool((rows["hx_given"] == 1).any())},
            where={"module": module},
            first_step=int(rows["step"].min()),
        )


def _stateless_hand_cells(run: Run, min_steps: int = 2) -> Iterator[Found]:
    """Hand-written cells called once per time step (or the steps of a loop inside a forward)
    with the same all-zero state every time."""
    cells = run["hand_cells"]
    if cells.empty or "state_fed_back" not in cells:
        return
    fed = set(cells.loc[pd.to_numeric(cells.get("read"), errors="coerce") >= 0, "module"]) if "read" in cells else set()
    rows = cells[pd.to_numeric(cells["state_fed_back"], errors="coerce") == 0]
    for module, r in rows.groupby("module", sort=False):
        zero = pd.to_numeric(r["state_abs_max"], errors="coerce") == 0
        if module in fed or len(r) < min_steps or not zero.all():
            continue  # fed back on some step, or a state that carries something (a fixed context)
        yield Found(
            title=f"'{module}' is called once per time step but never given its own output back",
            explanation=(
                f"On {len(r)} sampled training steps every time step of '{module}' read the same all-zero state "
                "tensor and never the state the step before returned: the new state is computed and dropped, "
                "so nothing is carried from one element to the next."
            ),
            evidence={"steps_sampled": int(len(r)), "state_fed_back": False, "state_abs_max": 0.0},
            where={"module": str(module)},
            first_step=int(r["step"].min()),
            fix="Assign the cell's output back to the state it reads (h = cell(x_t, h)).",
        )


def labels_unrelated_to_inputs(run: Run) -> bool:
    """The data rules show the targets are not a function of the inputs: identical inputs
    carry different labels, or what decides an index's label is redrawn on every fetch (the
    error, not the online-generation information)."""
    if any(True for _ in data_rules.inconsistent_labels(run)):
        return True
    return any(f.severity is Severity.ERROR for f in data_rules.resampled_parameters(run))


@rule(
    "vanishing-gradient-through-time",
    Severity.WARNING,
    signals=("time_grad", "steps"),
    fix=(
        "Give the model a short path to the inputs: dense per-step targets, a short-to-long curriculum or "
        "random packed lengths, forget-gate bias 1; avoid post-padding (pack or pre-pad)."
    ),
    plots=("time_grad",),
)
def vanishing_gradient_through_time(
    run: Run,
    *,
    eps: float = 1e-2,  # research-notes §6: horizon H = steps back with g >= 1e-2 x peak (1e-3: strong)
    min_len: int = 10,
    horizon_fraction: float = 0.5,  # warn when H < T / 2 ...
) -> Iterator[Found]:
    """The gradient fades out a few steps back from the end of the sequence.

    What it detects: from ‖∂L/∂x_t‖ measured at every time step of a (padded, not packed)
    recurrent input (or of the model's own input where a cell loop or hand-written
    recurrence slices it, with no fused RNN to hook), the gradient horizon — how many steps back from the last one the
    gradient stays at least 1 % of its peak — is under half the sequence length, and the run
    is not learning (stuck at the baseline, or loss down less than 10 %). Not judged where
    the profile cannot mean anything: an input that never varies (there is nothing to
    assign credit to; constant-input), a run whose loss blew up (divergence, non-finite),
    or targets that are not a function of the inputs (identical inputs with different
    labels, or an index whose label changes when fetched again: inconsistent-labels,
    resampled-parameters) — no horizon would let the model learn those — or weights that
    barely moved (learning-rate-scale's "too small"): the profile is then the initial
    weights', not what training made of them.

    The same profile read from the other end: when the steps after the last one reached get
    no gradient (below 1 % of the peak) over at least half the sequence, the loss reads the
    output before the sequence ends (``out[:, 0]`` for ``out[:, -1]``): reported as that,
    with its own fix. Properly masked padding also leaves trailing steps without gradient,
    but only beyond each batch's longest sequence, and such a run learns.

    Legitimate look-alikes: a task whose answer depends only on recent inputs, where a short
    horizon is exactly what the model should learn; a healthy run that reads as not learning
    because its loss starts near its floor (fine-tuning, a resumed run, a task whose best
    loss is within 10 % of its first). The first is told apart by requiring that the run is
    not learning (stuck at the baseline, or the loss of its last tenth less than 10 % below
    that of its first tenth); inputs that never vary, packed inputs and runs that blew up
    are not judged. Not told apart: the second, since a loss that cannot fall 10 % counts as
    not learning; and a short-memory task that fails for another reason (a rate too small)
    is reported too, with the horizon blamed.

    Why it matters: the loss cannot assign credit to inputs beyond the horizon, so a target
    that depends on them (parity of 50 bits) never gets a usable gradient: the loss surface
    is flat at ln 2 and SGD sees noise (Pascanu et al. 2013; Shalev-Shwartz et al. 2017).

    How to fix: shorten the path from the inputs to the loss: dense per-step targets (e.g.
    running parity), a curriculum from short to long sequences (or random lengths, packed),
    forget-gate bias 1; post-padding reinserts the long path, so pack or pre-pad.
    """
    tg = run["time_grad"]
    if tg.empty or not not_learning(run):
        return
    if blow_up_step(run) is not None:
        return  # a run that blew up has no meaningful profile: divergence/non-finite say it
    if labels_unrelated_to_inputs(run):
        return  # nothing to learn from any step back: the data rules say why
    if rate_too_small(run):
        return  # the weights barely moved: the profile is the initial weights', learning-rate-scale says why
    own = tg[(tg["backward_step"] == tg["step"]) & (tg.get("packed", 0) == 0)]
    constant = constant_inputs(run)
    for module, rows in own.groupby("module", sort=False):
        if module in constant:
            continue  # no input to assign credit to: constant-input says it
        rows = second_half(rows)  # the trained half
        profile = mean_profile(rows["grad_norm"])
        t = len(profile) if profile is not None else 0
        if t < min_len:
            continue
        peak = float(np.nanmax(profile))
        relative = [round(float(v) / peak, 6) if peak > 0 else 0.0 for v in profile]
        cut = last_reached(profile, eps)
        if cut is not None and t - 1 - cut >= horizon_fraction * t:
            yield Found(
                title=f"No gradient reaches time steps {cut + 1}-{t - 1} of '{module}': the answer is read at step {cut}",
                explanation=(
                    f"‖∂L/∂x_t‖ is above 1 % of its peak only up to time step {cut} of 0-{t - 1}; the {t - 1 - cut} "
                    "steps after it get no gradient at all. The loss reads the recurrent output before the sequence "
                    "ends (out[:, 0] for out[:, -1], an index on the wrong axis), so the model never sees the rest."
                ),
                evidence={"last_step_reached": cut, "sequence_length": t, "eps": eps, "horizon": horizon(profile, eps),
                          "profile_relative": relative,
                          "steps_sampled": int(len(rows))},
                where={"module": module, "time_steps": f"0-{cut} reached of 0-{t - 1}"},
                first_step=int(rows["step"].min()),
                fix="Read the output at the last time step (out[:, -1] when batch_first, out[-1] when time-major, "
                    "or h_n), or at each sequence's length - 1 when padded.",
            )
            continue
        h = horizon(profile, eps)
        if h >= horizon_fraction * t:
            continue
        yield Found(
            title=f"The gradient reaches only {h} of {t} time steps back into '{module}'",
            explanation=(
                f"‖∂L/∂x_t‖ stays above 1 % of its peak only over the last {h} of the {t} time steps "
                f"(above 0.1 %: {horizon(profile, eps / 10)} steps), and the run is not learning: "
                "inputs further back get no usable credit."
            ),
            evidence={"horizon": h, "horizon_strong": horizon(profile, eps / 10), "sequence_length": t, "eps": eps,
                      "profile_relative": relative,
                      "steps_sampled": int(len(rows))},
            where={"module": module, "time_steps": f"{t - h}-{t - 1} reached of 0-{t - 1}"},
            first_step=int(rows["step"].min()),
        )


@rule(
    "undetached-state",
    Severity.WARNING,
    signals=("steps",),
    fix="Detach the carried state each batch: h, c = h.detach(), c.detach(); then retain_graph=True is not needed.",
    plots=("time_grad",),
)
def undetached_state(run: Run) -> Iterator[Found]:
    """Hidden state is carried across batches without detach, so backprop reaches old batches.

    What it detects: a recurrent module was given, as its initial state, a tensor that an
    earlier step's call returned and that still carries that step's graph (``carried_state``);
    or the backward pass of a later step produced gradient at the recurrent input of an
    earlier step (``time_grad``, on sampled steps). When the run crashed with torch's "Trying
    to backward through the graph a second time", this is why.

    Legitimate look-alikes: truncated BPTT done right (the state detached at the batch
    boundary); an encoder handing its final state to a decoder, or a hand-stepped loop
    carrying the state, within one step; inference that carries state with grad disabled.
    All are told apart: only a state that still has a ``grad_fn``, is the very tensor a call
    of an earlier optimizer step returned, and is fed in with grad enabled is recorded, and
    a detached state stops every gradient at the batch boundary. Not told apart:
    backpropagating across batches on purpose (full BPTT over a stream with
    ``retain_graph=True``), reported the same way.

    Why it matters: every step backpropagates through all earlier batches: step time and
    memory grow with training, and without ``retain_graph=True`` it fails with "Trying to
    backward through the graph a second time".

    How to fix: truncate backprop through time at the batch boundary: ``h = h.detach()``
    (and ``c = c.detach()``) before feeding the state into the next batch; drop
    ``retain_graph=True``.
    """
    crash = _backward_twice(run)
    carried = run["carried_state"]
    reported: set[str] = set()
    for module, rows in (carried.groupby("module", sort=False) if not carried.empty else ()):
        first = rows.sort_values("step").iloc[0]
        reported.add(str(module))
        yield Found(
            title=f"'{module}' was given step {int(first['from_step'])}'s state with its graph at step {int(first['step'])}",
            explanation=(
                f"On {len(rows)} step(s) the initial state fed to '{module}' was the state an earlier step returned, "
                "not detached: the backward pass runs into the previous batches' graph." + crash
            ),
            evidence={"steps": int(len(rows)), "first_step": int(first["step"]), "from_step": int(first["from_step"]),
                      "crashed_backward_twice": bool(crash)},
            where={"module": str(module), "step": int(first["step"])},
            first_step=int(first["step"]),
        )
    tg = run["time_grad"]
    if tg.empty or "backward_step" not in tg:
        return
    late = tg[tg["backward_step"] > tg["step"]]
    for module, rows in late.groupby("module", sort=False):
        if str(module) in reported:
            continue
        reach = int((rows["backward_step"] - rows["step"]).max())
        first = rows.sort_values("backward_step").iloc[0]
        yield Found(
            title=f"Backward at step {int(first['backward_step'])} reached the input of step {int(first['step'])} through '{module}'",
            explanation=(
                f"Gradient flowed from later steps into earlier batches' inputs {len(rows)} times, up to {reach} steps back: "
                "the recurrent state is carried from batch to batch with its graph." + crash
            ),
            evidence={"reach_steps": reach, "occurrences": int(len(rows)), "crashed_backward_twice": bool(crash)},
            where={"module": module, "step": int(first["backward_step"])},
            first_step=int(first["backward_step"]),
        )


def _backward_twice(run: Run) -> str:
    """A sentence tying the run's crash to the carried graph, when that is how it ended."""
    exc = run.meta.get("exception") or {}
    if "backward through the graph a second time" in str(exc.get("message", "")):
        return " This is why the run crashed with \"Trying to backward through the graph a second time\"."
    return ""


@rule(
    "eval-in-train-mode",
    Severity.WARNING,
    signals=("eval_passes",),
    fix="Call model.eval() before evaluating and model.train() afterwards.",
    plots=("loss",),
)
def eval_in_train_mode(run: Run) -> Iterator[Found]:
    """Evaluation passes run with dropout still active.

    What it detects: the model was called without gradient (an evaluation under
    ``torch.no_grad()``) while a Dropout module, or an RNN's inter-layer dropout, was in
    training mode — ``model.eval()`` was not called — or while its forward called
    ``F.dropout(x, p)`` with ``training`` left at its default True (no module to put in eval
    mode; ``training=self.training`` forgotten).

    Legitimate look-alikes: Monte Carlo dropout (dropout left on at evaluation on purpose,
    for uncertainty), and no-grad forward passes that are not evaluations (a state burn-in
    before truncated BPTT, pseudo-labels or targets computed with the training model).
    Dropouts with p = 0 are ignored. Not told apart: the rule reads only that a watched
    model was called without gradient while a dropout with p > 0 was in training mode, so
    deliberate MC dropout and those passes are reported; and the dropouts of every watched
    model count, not only the called one's.

    Why it matters: evaluation predictions are then random draws of a thinned network:
    accuracy and loss fluctuate and read worse than the model is, and early stopping or
    model selection on them picks noise (seed 003's misspelled ``determistic=True`` did the
    same in Lasagne).

    How to fix: call ``model.eval()`` before evaluating and ``model.train()`` after (or use
    ``torch.inference_mode()`` together with ``model.eval()``).
    """
    ev = run["eval_passes"]
    if ev.empty:
        return
    bad = ev[ev["dropout_active"] == 1]
    if bad.empty:
        return
    first = bad.sort_values("step").iloc[0]
    modules = sorted({m for ms in bad["active_modules"] for m in ms})
    yield Found(
        title=f"{len(bad)} of {len(ev)} evaluation passes ran with dropout active ({', '.join(modules[:3])})",
        explanation=(
            f"'{first['module']}' was called without gradient (an evaluation) while {', '.join(modules)} "
            "were in training mode: its evaluation outputs are random draws of a thinned network."
        ),
        evidence={"eval_passes": int(len(ev)), "with_dropout_active": int(len(bad)), "dropout_modules": modules},
        where={"module": str(first["module"]), "dropout": ", ".join(modules[:4]), "step": int(first["step"])},
        first_step=int(first["step"]),
    )


#: where all-zero steps also occur inside sequences (bits: a zero step may be data), a
#: sequence counts as padded only when it ends (last non-zero step) by T / 2 — random bits
#: end in T/2 zeros with P = 2^-(T/2) (9 % for T = 7), uniformly drawn lengths half of the
#: time. Where zero steps occur only at the end (embeddings, real values), they are padding
#: and any sequence ending before T is padded.
PADDED_BEFORE = 0.5
#: the share of all-zero steps inside sequences above which a zero step may be data
ZERO_STEPS_ARE_DATA = 0.01


@rule(
    "padding-not-masked",
    Severity.WARNING,
    signals=("rnn_inputs|inputs", "time_grad"),
    fix="Pack the batch with pack_padded_sequence(..., enforce_sorted=False) and use h_n, or gather output at lengths - 1; or pre-pad.",
    plots=("time_grad",),
)
def padding_not_masked(run: Run, *, min_padded_share: float = 0.2, min_pad_grad: float = 0.05, min_sequences: int = 200) -> Iterator[Found]:
    """Padded variable-length sequences are fed whole and the answer is read after the padding.

    What it detects: in a padded (not packed) recurrent input (with no fused RNN, the
    model's own 3-D input that its loop slices), at least 20 % of the
    sequences end (last non-zero step) before the padded length (by half of it when
    all-zero steps also occur inside sequences, so that a zero step may be data), and at least 5 % of
    the input gradient lands on the trailing padding — the loss reads an output computed
    after the padding, typically ``output[:, -1]``.

    Legitimate look-alikes: inputs whose all-zero steps are data (a 0 bit, a silent frame);
    pre-padded or packed batches; padded batches whose answer is read at ``lengths - 1`` or
    under a mask. Told apart: packed inputs are skipped, pre-padded sequences reach T, and
    when all-zero steps also occur inside sequences (over 1 %) only sequences ending by T /
    2 count as padded; the finding also needs at least 5 % of the input gradient on the
    trailing zeros, which a gather at ``lengths - 1`` or a masked loss does not put there.
    Not told apart: fixed-length real signals that often end in exact zeros (trailing
    silence) while zeros are rare inside them, read through ``output[:, -1]`` as intended.

    Why it matters: the recurrence runs through up to T - 1 padding steps between the last
    real element and the answer, so the answer must survive a long, uninformative path
    (seed 001: post-padded parity stays at 50 % while pre-padded or packed learns).

    How to fix: pack the batch (``pack_padded_sequence(x, lengths, batch_first=True,
    enforce_sorted=False)``) and read ``h_n``, or gather the output at ``lengths - 1``;
    otherwise pre-pad so the real data ends at the last step.
    """
    tg = run["time_grad"]
    if tg.empty or "pad_grad_share" not in tg:
        return
    tg = tg[tg["packed"] == 0]
    ri = run["rnn_inputs"]
    if not ri.empty and "length_hist" in ri:
        ri = ri[(ri["packed"] == 0) & ri["length_hist"].notna()]
        for module, rows in ri.groupby("module", sort=False):
            yield from _padding_read_after(module, rows, "", tg[tg["module"] == module], min_padded_share,
                                           min_pad_grad, min_sequences)
    # a model without a fused RNN: its own 3-D input, sliced by its loop, read the way round
    # whose length matches the loop's (the gradient profile's, on the steps that have both)
    inputs = run["inputs"]
    if inputs.empty or "length_hist" not in inputs:
        return
    inputs = inputs[(inputs["mode"] == "train") & inputs["length_hist"].notna()]
    for module, rows in inputs.groupby("module", sort=False):
        grads = tg[tg["module"] == module]
        profile_len = {int(s): len(p) for s, p in zip(grads["step"], grads["grad_norm"])}
        both = rows[rows["step"].isin(profile_len)]
        lengths = both["step"].map(profile_len)
        as_bf, as_tb = int((both["seq_len"] == lengths).sum()), int((both["seq_len_tb"] == lengths).sum())
        if max(as_bf, as_tb):
            yield from _padding_read_after(module, rows, "" if as_bf >= as_tb else "_tb", grads, min_padded_share,
                                           min_pad_grad, min_sequences)


def _padding_read_after(module: str, rows: pd.DataFrame, suffix: str, grads: pd.DataFrame,
                        min_padded_share: float, min_pad_grad: float, min_sequences: int) -> Iterator[Found]:
    """The padding judgement for one module's padded inputs (``rows``' columns
    ``seq_len{suffix}``, ``length_hist{suffix}``, ``interior_zero{suffix}``; each batch at
    its own padded width) and its gradient profiles."""
    col = f"interior_zero{suffix}"
    interior = pd.to_numeric(rows[col], errors="coerce") if col in rows else pd.Series(dtype=float)
    zeros_are_data = interior.empty or not (interior.dropna() <= ZERO_STEPS_ARE_DATA).all()
    total = padded_n = 0.0
    widths = []
    for t, h in zip(rows[f"seq_len{suffix}"], rows[f"length_hist{suffix}"]):
        hist, t = np.asarray(h, float), int(t)
        if len(hist) != t + 1:
            continue
        end = int(PADDED_BEFORE * t) + 1 if zeros_are_data else t
        total += hist.sum()
        padded_n += hist[1:end].sum()  # sequences with trailing padding
        widths.append(t)
    if not widths:
        return
    t = int(pd.Series(widths).mode().iloc[0])  # the width the finding names
    padded = padded_n / total if total else 0.0
    shares = grads["pad_grad_share"].dropna()
    if total < min_sequences or padded < min_padded_share or shares.empty:
        return
    pad_grad = float(shares.mean())
    if pad_grad < min_pad_grad:
        return
    varied = len(set(widths)) > 1
    yield Found(
        title=f"'{module}' is fed padded sequences unpacked, and {pad_grad:.0%} of its input gradient lands on padding",
        explanation=(
            f"{padded:.0%} of the sequences end {'before half ' if zeros_are_data else 'before the end '}of their batch's "
            f"padded length ({'mostly ' if varied else ''}{t}), yet "
            f"{pad_grad:.0%} of ‖∂L/∂x‖ sits on their trailing padding: the answer is read after the padding "
            "(e.g. output[:, -1]), so the network must carry it across the padded steps."
        ),
        evidence={"padded_length": t, "padded_share": float(padded), "gradient_on_padding": pad_grad, "sequences": int(total)},
        where={"module": module},
        first_step=int(rows["step"].min()),
    )
