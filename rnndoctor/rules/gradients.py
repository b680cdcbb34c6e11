"""Gradients and updates: too large, never there, or moving the weights too little or too much."""

from __future__ import annotations

from typing import Iterator

import numpy as np
import pandas as pd

from ..finding import Severity
from ..run import Run
from ._common import (WARMUP_MIN_STEPS, before_blow_up, blow_up_step, first_and_last_tenth, fmt, judgement_window,
                      loss_trend, reference_loss)
from .registry import Found, rule

#: optimizers whose step is sized by a line search and curvature, not by lr x gradient
QUASI_NEWTON = frozenset({"LBFGS"})


@rule(
    "exploding-gradients",
    Severity.WARNING,
    signals=("steps", "params"),
    fix="Clip the gradient norm (torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0) before opt.step()), lower the learning rate.",
    plots=("grad_norm",),
)
def exploding_gradients(
    run: Run,
    *,
    spike_factor: float = 10.0,  # Pascanu et al. 2013: 0.5-10x the average norm is tolerated
    huge_spike_factor: float = 100.0,  # research-notes §6: any single spike >= 100x
    min_spikes: int = 3,  # ... or at least 3 spikes > 10x
    median_window: int = 100,  # running median over the last 100 steps
    min_history: int = 5,
    growth_factor: float = 2.0,  # TDC: median grows >= 2x at each of 5 consecutive windows
    growth_windows: int = 5,
    harm_window: int = 10,  # a spike counts when the mean loss of the 10 steps from it ...
    harm_rise: float = 0.1,  # ... is > 10 % above the mean of the 10 steps before it
    severe_rise: float = 0.5,  # one spike that sets the loss back by half again is enough
    floor_share: float = 0.1,  # setbacks are measured from at least a tenth of the starting loss
    recover_steps: int = 50,  # a setback the loss has undone within 50 steps was shrugged off
) -> Iterator[Found]:
    """Gradient norm spikes far above its running median, or grows steadily.

    What it detects: the global gradient norm (before any clipping done by the optimizer)
    exceeds 10 x its running median (from 5 steps of history; before that, 100 x the median
    of the steps so far) at least 3 times with the
    loss set back after each (mean loss over the 10 steps after it > 10 % above the 10
    before it), or once with the loss set back by half again (> 50 %: the spike threw the weights
    out, as an unclipped word-language model at lr 20 does in its first steps), or 100 x
    once; or its median doubles in each of 5 consecutive windows. Setbacks are measured from
    the loss before the spike, or from a tenth of the starting loss when it is lower, and
    must exceed the noise of the two 10-step means (95 %). Without a recorded loss no
    setback can be read, and only spikes of 100 x and the growth test count.

    Legitimate look-alikes: the isolated spikes of healthy LSTM training, which the run
    shrugs off; a loop that already clips; a norm that grows because the task does (a
    curriculum to longer sequences, a model leaving a small-initialisation plateau). Spikes
    of 10-100 x count only when the mean loss over the next 10 steps is more than 10 % above
    that of the 10 before (one spike is enough at 50 %), and the norm is read in the
    optimizer's step pre-hook, after a ``clip_grad_norm_`` in the loop, so clipped spikes
    are capped at its max_norm. Near convergence the loss is tiny and a spike that doubles
    it is still far below where the run started: setbacks are measured from at least a tenth
    of the starting loss; and a setback is a warning only when the loss has not undone it within 50
    steps (a 10-step mean back at or below the one before the spike) and the run ends more
    than 10 % below that level, still learning past it (a setback in the run's last 50
    steps, which the record cannot show undone or not, is information too): a healthy run's
    transient setback on a hard batch (an LSTM on packed signals spiking 73 x at step 74 on
    its way to a loss of 0.002) is not the explosion that throws weights out for good. Not
    told apart: one spike of 100 x or more counts whatever the loss
    does — except, after the first tenth of the run, one no larger than 10 x the median norm
    of that first tenth: near convergence the median norm is tiny and a hard batch's ordinary
    gradient is 100s of times it (a sentiment LSTM at loss 1e-4, 333 x its median, the size of
    its first steps' norms); the growth test (the median doubling in 5 windows) does not read
    the loss.

    Why it matters: recurrent weight matrices with spectral radius above 1 amplify
    gradients exponentially in sequence length; one huge step can throw the weights into a
    region the network never recovers from.

    How to fix: clip the gradient norm (torch.nn.utils.clip_grad_norm_(params, 1.0) between
    backward() and step()), lower the learning rate, shorten truncated-BPTT windows.
    """
    steps = run.train_steps()
    if steps.empty or "grad_norm" not in steps:
        return
    g = pd.to_numeric(steps["grad_norm"], errors="coerce")
    ok = np.isfinite(g) & (g > 0)
    g, step_ids = g[ok].reset_index(drop=True), steps["step"][ok].reset_index(drop=True)
    if len(g) <= min_history:
        return
    median = g.rolling(median_window, min_periods=min_history).median().shift(1)
    # before 5 steps of history, the steps so far are the median, and only a 100x spike counts
    # (a ReLU RNN without clipping can blow up at its second step)
    young = median.isna()
    median = median.fillna(g.expanding().median().shift(1))
    ratio = g / median
    ratio[young & (ratio < huge_spike_factor)] = np.nan
    loss = pd.to_numeric(steps["loss"], errors="coerce")[ok].reset_index(drop=True) if "loss" in steps else None
    spikes = ratio[ratio > spike_factor]
    severe = spikes.iloc[:0]
    if loss is not None and len(spikes):
        # A spike the run shrugs off (the loss keeps falling) is the normal texture of LSTM
        # training; count spikes that set the loss back, and every spike >= 100x.
        before = loss.rolling(harm_window, min_periods=1).mean().shift(1)
        # the steps after the spike's update: its own loss was computed before it (a batch of
        # one's hard sample gives a large loss and a large gradient in the same step)
        after = loss[::-1].rolling(harm_window, min_periods=1).mean()[::-1].shift(-1)
        # a setback is judged against the loss where it is, but never against less than a
        # tenth of where the run started: near convergence (0.001) a doubling is no harm
        start = float(loss.iloc[:harm_window].mean())
        if np.isfinite(start) and start > 0:
            before = before.clip(lower=floor_share * start)
        # ... and beyond the noise of a 10-step mean (a batch of one's losses scatter by 100x)
        var_before = loss.rolling(harm_window, min_periods=2).var().shift(1)
        var_after = loss[::-1].rolling(harm_window, min_periods=2).var()[::-1].shift(-1)
        noise = 1.96 * np.sqrt((var_before + var_after) / harm_window)
        beyond_noise = (after - before > noise) | noise.isna()
        harmful = ((after > before * (1 + harm_rise)) & beyond_noise) | ~np.isfinite(after)
        # ... and not undone for good: undone within recover_steps, and the run ends below where
        # the spike found it (a transient setback on a hard batch is texture; a run that
        # recovers and is thrown back again by its later spikes is not)
        trailing = loss.rolling(harm_window, min_periods=1).mean()
        ahead = trailing[::-1].rolling(recover_steps, min_periods=1).min()[::-1].shift(-harm_window)
        final = float(loss.iloc[-max(harm_window, len(loss) // 10):].mean())
        lasting = ~((ahead <= before) & (final < before * (1 - harm_rise))) | ~np.isfinite(after)
        severe = spikes[(((after > before * (1 + severe_rise)) & beyond_noise) | ~np.isfinite(after))[spikes.index]]
        spikes = spikes[harmful[spikes.index] | (spikes >= huge_spike_factor)]
    else:  # no loss recorded: no setback to read, only the huge spikes count
        spikes = spikes[spikes >= huge_spike_factor]
        lasting = None
    growth = None
    win = max(10, len(g) // (growth_windows + 1))
    medians = [float(g.iloc[i : i + win].median()) for i in range(0, len(g) - win + 1, win)]
    for i in range(len(medians) - growth_windows):
        chunk = medians[i : i + growth_windows + 1]
        if all(b >= growth_factor * a for a, b in zip(chunk, chunk[1:])):
            growth = (i * win, chunk)
            break
    # a 100x spike over a converged run's tiny median that is no larger than the gradients the
    # run started with is a hard batch, not an explosion (a sentiment LSTM at loss 1e-4
    # meeting a misclassified review: 333x its median, the size of its first steps' norms)
    early = float(g.iloc[: max(min_history, len(g) // 10)].median())
    spikes = spikes[(spikes < huge_spike_factor) | (g[spikes.index] >= spike_factor * early) | (spikes.index < len(g) // 10)]
    if len(spikes) < min_spikes and not (len(spikes) and spikes.max() >= huge_spike_factor) and severe.empty and growth is None:
        return
    if len(spikes):
        worst = int(spikes.idxmax())
        first = int(step_ids[spikes.index[0]])
        ev = {
            "spikes": int(len(spikes)),
            "worst_ratio_to_median": float(spikes.max()),
            "worst_step": int(step_ids[worst]),
            "worst_grad_norm": float(g[worst]),
            "median_before": float(median[worst]),
        }
        title = f"Gradient norm spiked to {fmt(ev['worst_ratio_to_median'])}x its running median ({len(spikes)} spikes)"
    else:
        first = int(step_ids[growth[0]])
        ev = {"window_medians": growth[1], "window_steps": win}
        title = f"Gradient norm doubled in each of {growth_windows} consecutive windows"
    # every counted setback undone within recover_steps, and the run ended well below each
    # (no 100x spike, no growth): the run shrugged them off after all; information
    counted = spikes.index.union(severe.index)
    transient = lasting is not None and len(counted) > 0 and growth is None \
        and not (spikes >= huge_spike_factor).any() and not bool(lasting[counted].any())
    # setbacks in the run's last recover_steps steps: whether the run undoes them is not
    # recorded (too early to tell), which is information, not a warning
    late = lasting is not None and len(counted) > 0 and growth is None and not transient \
        and not (spikes >= huge_spike_factor).any() and bool((counted >= len(g) - recover_steps).all())
    if transient:
        ev["recovered"] = True
    if late:
        ev["too_late_to_tell"] = True
    where: dict = {"step": ev.get("worst_step", first)}
    params = run["params"]
    if not params.empty:
        at = params[params["step"] == where["step"]]
        gn = pd.to_numeric(at["grad_norm"], errors="coerce")
        if gn.notna().any():
            where["param"] = at.loc[gn.idxmax(), "param"]
    yield Found(
        title=title,
        explanation=(
            "The global gradient norm jumped far above its recent typical value. Recurrent networks amplify "
            "gradients through time when their recurrent weights have spectral radius above 1."
            + (" The run undid each setback within a few dozen steps and ended well below it: clipping would "
               "smooth these, but they did not stop training." if transient else "")
            + (f" The setback came in the run's last {recover_steps} steps: whether training would have undone it "
               "is not recorded." if late else "")
        ),
        severity=Severity.INFO if transient or late else None,
        evidence=ev,
        where=where,
        first_step=first,
    )


@rule(
    "dead-parameters",
    Severity.WARNING,
    signals=("params",),
    fix="Use the module in the forward pass, or freeze it (requires_grad=False); look for detach()/.data/numpy round-trips before the loss.",
    plots=("grad_norm",),
)
def dead_parameters(run: Run, *, min_steps: int = 5) -> Iterator[Found]:
    """Trainable parameters that never receive a gradient.

    What it detects: parameters with requires_grad=True whose gradient was None or exactly
    zero at every recorded optimizer step (at least 5 steps) before the loss blew up (if it
    did: the gradients of saturated units are then exactly zero, connected or not).

    Legitimate look-alikes: a module kept trainable but unused in this run (a head used only
    at evaluation or in a later training stage, the head of an auxiliary loss switched off);
    parameters behind a zero-initialised gate (ReZero-style) that get exact zeros until the
    gate moves; the exact-zero gradients of saturated units after a blow-up. The last two
    are told apart: one recorded step with a nonzero gradient makes a parameter alive, only
    steps before the loss blew up are read, and a NaN gradient does not count as dead. Not
    told apart: a module deliberately left unused with requires_grad=True; freezing it
    silences the finding.

    Why it matters: they are not connected to the loss — a layer built but never used, an
    output taken from the wrong tensor, a detach() in the wrong place — so they never learn.

    How to fix: check the forward pass uses the module; remove it or set
    requires_grad=False if it is intentionally frozen; look for .detach() / .data / numpy
    round-trips between it and the loss.
    """
    params = before_blow_up(run, run["params"])  # a blown-up run's saturated units get exact zeros
    if params.empty:
        return
    n_steps = params["step"].nunique()
    if n_steps < min_steps:
        return
    g = pd.to_numeric(params["grad_norm"], errors="coerce")
    # a NaN gradient is a broken gradient, not a missing one: only exact zeros and None are dead
    alive = params.assign(alive=(g != 0) & (params["grad_none"] != 1)).groupby("param")["alive"].any()
    dead = sorted(alive[~alive].index)
    if not dead:
        return
    never = params[params["param"].isin(dead)].groupby("param")["grad_none"].min()
    yield Found(
        title=f"{len(dead)} parameter(s) never received a gradient: {', '.join(dead[:4])}{'…' if len(dead) > 4 else ''}",
        explanation=(
            f"Over {n_steps} optimizer steps these parameters had a None or all-zero gradient every time; "
            "they are not connected to the loss and never change."
        ),
        evidence={"params": dead, "grad_none_always": [p for p in dead if never.get(p, 0) == 1], "steps": int(n_steps)},
        where={"params": ", ".join(dead[:8])},
        first_step=int(params["step"].min()) + min_steps - 1,
    )


def _gradient_vanished(run: Run, warmup_steps: int, factor: float = 1e-3) -> list[str]:
    """Parameters whose median gradient norm after warm-up is below ``factor`` times the
    median of their first 10 recorded steps."""
    g = run["params"]
    if g.empty or "grad_norm" not in g:
        return []
    g = g.assign(norm=pd.to_numeric(g["grad_norm"], errors="coerce"))
    cut = min(warmup_steps, int(g["step"].max()) // 2)
    first = sorted(g["step"].unique())[:10]
    early = g[g["step"].isin(first)].groupby("param")["norm"].median()
    late = g[g["step"] >= cut].groupby("param")["norm"].median()
    both = pd.concat([early, late], axis=1, keys=["early", "late"]).dropna()
    return sorted(both.index[both["late"] < factor * both["early"]])


#: a learning rate below this fraction of its peak has, for practical purposes, stopped
DECAYED_FRACTION = 1e-4
#: ... for at least this share of the run's steps, through its end
DECAYED_SHARE = 0.5


def _schedule_decayed(run: Run, updates: pd.DataFrame, too_small_log10: float) -> Found | None:
    """The learning rate fell below 1e-4 of its peak for the last half (or more) of the run,
    the updates there moved the weights by less than 10^-5 of their size, and the loss did
    not fall there: a scheduler stepped far more often than meant (per batch or micro-batch
    instead of per epoch), or a gamma far too small. A schedule that anneals to zero in its
    last steps, or that decays a thousandfold in steps, does not stay 10^4 below its peak
    for half of the run."""
    steps = run.train_steps()
    if "lr" not in steps:
        return None
    lr = pd.to_numeric(steps["lr"], errors="coerce")
    known = steps.loc[lr.notna() & np.isfinite(lr), "step"]
    lr = lr[lr.notna() & np.isfinite(lr)]
    if len(lr) < 20 or not (peak := float(lr.max())) > 0:
        return None
    low = (lr < peak * DECAYED_FRACTION).to_numpy()
    high_after = np.flatnonzero(~low)
    start_i = int(high_after[-1]) + 1 if len(high_after) else 0
    if start_i >= len(lr) or (len(lr) - start_i) < DECAYED_SHARE * len(lr):
        return None
    start = int(known.iloc[start_i])
    late = updates[(updates["ndim"] >= 2) & (updates["step"] >= start)]
    ratio = pd.to_numeric(late["update_ratio"], errors="coerce").dropna()
    if len(ratio) < 3 or float(ratio.median()) >= 10 ** too_small_log10:
        return None
    trend = loss_trend(steps.loc[steps["step"] >= start, "loss"]) if "loss" in steps else None
    if trend is None or trend.falling:
        return None
    final = float(lr.iloc[-1])
    return Found(
        title=f"The learning rate decayed to {fmt(final)}, {fmt(peak / max(final, 1e-300), 2)}x below its peak, from step {start} on",
        explanation=(
            f"The learning rate peaked at {fmt(peak)} and has been below {fmt(peak * DECAYED_FRACTION)} since step {start} "
            f"({len(lr) - start_i} of {len(lr)} steps). Updates there moved the weights by a median {fmt(float(ratio.median()))} "
            "of their size and the loss stopped falling: the schedule, not the gradient, stopped training. "
            "A scheduler meant per epoch but stepped per batch (or per micro-batch) does this."
        ),
        evidence={"side": "small", "peak_lr": peak, "final_lr": final, "decayed_from_step": start, "steps_decayed": int(len(lr) - start_i),
                  "median_update_ratio_after": float(ratio.median()), "loss_rel_decrease_after": round(trend.rel_decrease, 4)},
        where={"steps": f"{start}-{int(known.iloc[-1])}"},
        first_step=start,
        fix="Step the scheduler as often as its gamma/step size assume (once per epoch for an epoch schedule), or raise its floor (eta_min, a larger gamma).",
    )


@rule(
    "learning-rate-scale",
    Severity.WARNING,
    signals=("updates", "steps", "params"),
    fix="Scale the learning rate so that |Δw|/|w| ≈ 1e-3 per step.",  # each finding names the factor
    plots=("update_ratio",),
)
def learning_rate_scale(
    run: Run,
    *,
    too_small_log10: float = -5.0,  # research-notes §6: median log10(|dw|/|w|) < -5: nothing moves
    too_large_log10: float = -1.0,  # ... > -1: thrashing (CS231n target ~ -3; TDC band [-4, -1])
    slow_log10: float = -4.5,  # below TDC's -4 edge, with a known-flat loss: too slow to learn
    tdc_log10: float = -4.0,  # TDC's lower edge, with a final loss no better than ignoring the input
    warmup_steps: int = WARMUP_MIN_STEPS,
    min_updates: int = 5,  # a run that crashed after its first update says nothing about the rate
) -> Iterator[Found]:
    """Updates move the weights far too little or far too much per step.

    What it detects: for weight matrices (2-D and up), the median over steps after warm-up
    of log10(||w_after - w_before|| / ||w_before||) below -5 (nothing moves) or above -1
    (each step rewrites a tenth of the weights or more). The healthy band is about -4 to -2.
    Too large is judged per weight matrix; too small by the bulk of the weights: the median
    ratio weighted by element count must be below the band (one small matrix, a CRF's
    transitions, that a rate right for the rest barely moves is not a learning-rate problem);
    a bulk below -4.5 is too small too when the training loss is known flat (its 95 %
    interval within ±5 %: Adam at 1e-6 moves weights by ~1e-5 of their size and the loss
    does not move), and a bulk below -4 (TDC's edge) when the loss over the last window is
    still no better than the best input-independent predictor's (SGD at Adam's 1e-3: the
    loss creeps down but the model has not yet learned even the label frequencies). A weight whose gradient fell a thousandfold after warm-up (saturated
    units: Adam's update then shrinks with it) is not judged too slow: its rate is not what
    stopped it. "Too large" is not judged in a run whose loss fell to a tenth of where it
    started (the rate evidently works). A parameter needs at least 5 recorded finite updates (one update of a run that
    crashed at step 1 says nothing), taken before the loss blew up (NaN or overflowing weights
    measure the blow-up, not the rate; divergence and non-finite report it). A loss that
    blew up before 5 updates is read from the two or more it had: if those moved the bulk of
    the weights by more than a tenth of their size per step, the rate threw them out. "Too large" is not judged for LBFGS, whose steps are sized by its line
    search and curvature estimate.

    The warm-up steps are read for one thing: a step that moved the bulk of the weights by
    more than 3x their own size (10^0.5), in a run whose loss over the last window is no better than
    ignoring the input. Such a start throws the weights into saturation, where the gradient
    and an adaptive optimizer's update shrink with it, so the steps after warm-up look tame
    against the grown weights (RMSprop's first step at lr 0.5 moves every weight by ~5). A
    model initialised tiny, whose first updates are also larger than its weights, learns
    after, and is not reported; seed 000's Adagrad at lr 0.1, whose first step moves an
    LSTM's weights by about their own size (1.1x), is below the edge: parity, not the rate,
    holds that run (Adam at 1e-2 stays stuck too).

    Parameters that receive a gradient on every recorded step (at least 5) and are never
    changed by an optimizer step are reported too: no optimizer holds them (built before a
    layer was replaced), or their group's rate is 0.

    A schedule that stopped training is judged first, from the ``lr`` column: the rate below
    1e-4 of its peak for the last half of the run or more, the updates there below 10^-5 and
    the loss not falling there (a per-epoch scheduler stepped per batch or micro-batch). An
    annealing schedule reaches such a floor only in its last steps, a step schedule rarely
    goes 10^4 below its peak; neither holds it for half the run.

    Legitimate look-alikes: LBFGS, whose line-searched steps are large by design; one small
    matrix (a CRF's transition matrix) that a rate right for the rest barely moves; a
    converged or saturated model whose updates shrank with its gradient; a large embedding
    that plain SGD or SparseAdam updates only in its batch's rows. "Too large" is not judged
    for LBFGS; "too small" needs the bulk of the weights (the median by element count) below
    -5, or below -4.5 with a known-flat loss, and drops every weight whose gradient fell a
    thousandfold after warm-up. Not told apart: a model that converged early, or whose
    schedule decayed the rate for most of the run, while its gradient stayed above a
    thousandth of its start, where the decay is less deep or shorter than above (the median
    over all steps after warm-up is read as the rate, the flat loss counts as confirmation);
    and a sparsely
    updated embedding that holds most of the weights.

    Why it matters: too small and training looks stuck; too large and it thrashes or
    diverges. Works for adaptive optimizers too, because it measures the actual update.

    How to fix: scale the learning rate by the factor that brings the ratio to ~1e-3.
    """
    params = run["updates"]
    if params.empty or "update_ratio" not in params:
        return
    decayed = _schedule_decayed(run, params, too_small_log10)
    if decayed is not None:
        yield decayed
        return
    # a quasi-Newton step (LBFGS: up to max_iter line-searched iterations per step) is sized by
    # the curvature, not by lr x gradient: its ratio says nothing about the rate; a rate too
    # large for it shows as divergence
    judge_large = not (set(run.meta.get("optimizers") or ()) & QUASI_NEWTON)
    # the updates of a blown-up run (NaN or overflowing weights, the optimizer's state wrecked)
    # describe the blow-up, not the rate: the divergence and non-finite findings say that
    params = before_blow_up(run, params)
    if params.empty:
        return
    yield from _never_updated(run, params, min_updates)
    p = params[params["step"] >= min(warmup_steps, params["step"].max() // 2)]
    if judge_large:
        thrown = _thrown_out_early(run, params[params["step"] < warmup_steps])
        if thrown is not None:
            yield thrown
            return
    med, typical = _median_log_ratios(p, min_updates)
    if med.empty:
        if judge_large and blow_up_step(run) is not None:
            yield from _thrashed_into_blow_up(params, too_large_log10)
        return
    # too large on any weight thrashes it; too small is a learning-rate problem only when it
    # holds the bulk of the weights (the median by element count, ``typical``), not one small
    # matrix (a CRF's transitions) that a rate right for the rest barely moves
    # between the two published lower edges (TDC -4, ours -5) the loss decides: a bulk that
    # moves 10^-4.5 per step while the loss is known flat is a rate too small to learn
    small_edge = too_small_log10
    if typical < slow_log10 and (trend := loss_trend(run.train_steps().get("loss", pd.Series(dtype=float)))) is not None \
            and trend.known_flat:
        small_edge = slow_log10
    elif typical < tdc_log10 and _no_better_than_ignoring_input(run):
        small_edge = tdc_log10  # below TDC's edge and, at the end, no better than ignoring the input
    low = med[med < small_edge] if typical < small_edge else med.iloc[:0]
    low = low.drop(_gradient_vanished(run, warmup_steps), errors="ignore")
    # a run whose loss fell to a tenth of its start is not thrashing, whatever one small
    # matrix's ratio (an RMSprop head of 32 weights moving 10 % per step while the loss falls 95 %)
    high = med[med > too_large_log10] if judge_large and not _loss_fell_tenfold(run) else med.iloc[:0]
    for side, sel in (("small", low), ("large", high)):
        if sel.empty:
            continue
        worst = sel.idxmin() if side == "small" else sel.idxmax()
        value = float(sel[worst])
        factor = 10 ** (-3 - value)
        yield Found(
            title=(
                f"Updates barely move the weights: median |Δw|/|w| = {fmt(10 ** value)} for '{worst}'"
                if side == "small"
                else f"Updates thrash the weights: median |Δw|/|w| = {fmt(10 ** value)} for '{worst}'"
            ),
            explanation=(
                f"The update-to-weight ratio of {len(sel)} weight matrix(es) sits at 10^{value:.1f} per step; "
                "a healthy run is near 10^-3."
            ),
            evidence={"median_log10_update_ratio": {k: round(float(v), 3) for k, v in sel.items()}, "band": [too_small_log10, too_large_log10],
                      "side": side},
            where={"param": worst},
            first_step=int(p["step"].min()),
            fix=f"Multiply the learning rate by about {fmt(factor, 2)} (aim for |Δw|/|w| ≈ 1e-3).",
        )


def _median_log_ratios(updates: pd.DataFrame, min_updates: int) -> tuple[pd.Series, float]:
    """(per weight matrix with at least ``min_updates`` finite non-zero updates: the median
    log10 update ratio; the median of those weighted by element count, the bulk's)."""
    p = updates[updates["ndim"] >= 2]
    r = pd.to_numeric(p["update_ratio"], errors="coerce")
    p = p.assign(log_r=np.log10(r.where((r > 0) & np.isfinite(r)))).dropna(subset=["log_r"])
    by_param = p.groupby("param")["log_r"]
    med = by_param.median()[by_param.count() >= min_updates]
    if med.empty:
        return med, float("nan")
    numel = p.groupby("param")["numel"].max().reindex(med.index).fillna(1).to_numpy(float)
    order = np.argsort(med.to_numpy())
    cum = np.cumsum(numel[order]) / numel.sum()
    return med, float(med.to_numpy()[order][min(np.searchsorted(cum, 0.5), len(order) - 1)])


def _thrashed_into_blow_up(before: pd.DataFrame, edge: float, min_updates: int = 2) -> Iterator[Found]:
    """A loss that blew up within its first few updates, each of which moved the bulk of the
    weights by more than a tenth of their size: the rate threw them out. (One update before a
    crash says nothing, as ever; two or more that thrash before the blow-up do.)"""
    med, bulk = _median_log_ratios(before, min_updates)
    if med.empty or bulk <= edge:
        return
    worst = med.idxmax()
    steps = int(before.loc[before["param"].isin(med.index), "step"].nunique())
    yield Found(
        title=f"Updates thrash the weights before the loss blows up: median |Δw|/|w| = {fmt(10 ** float(med[worst]))} for '{worst}'",
        explanation=(
            f"In the {steps} update(s) before the loss blew up, the bulk of the weights moved by 10^{bulk:.1f} of "
            "their size per step (a healthy run is near 10^-3): the rate threw the weights out, and the blow-up "
            "followed."
        ),
        evidence={"median_log10_update_ratio": {k: round(float(v), 3) for k, v in med.items()}, "side": "large",
                  "before_blow_up": steps},
        where={"param": worst},
        first_step=int(before["step"].min()),
        fix=f"Multiply the learning rate by about {fmt(10 ** (-3 - bulk), 2)} (aim for |Δw|/|w| ≈ 1e-3), and clip gradients.",
    )


def _thrown_out_early(run: Run, early: pd.DataFrame, edge: float = 0.5) -> Found | None:
    """A warm-up step that moved the bulk of the weights by over 3x their own size, in a
    run that learned nothing after: the first updates threw the weights out (into saturation,
    where the gradient and with it an adaptive optimizer's update shrank, so the steps after
    warm-up look tame). RMSprop's first step at lr 0.5 moves every weight by ~5."""
    if early.empty:
        return None
    bulk = {int(s): _median_log_ratios(u, 1)[1] for s, u in early.groupby("step")}
    bulk = {s: b for s, b in bulk.items() if np.isfinite(b)}
    if not bulk or max(bulk.values()) <= edge or not _no_better_than_ignoring_input(run):
        return None
    worst = max(bulk, key=bulk.__getitem__)
    typical = float(np.median(list(bulk.values())))
    return Found(
        title=f"The first updates threw the weights out: step {worst} moved them by {fmt(10 ** bulk[worst])}x their size",
        explanation=(
            f"At step {worst} the bulk of the weights moved by 10^{bulk[worst]:.1f} of their own size (a healthy "
            f"step is near 10^-3; over the first {len(bulk)} steps the median was 10^{typical:.1f}), and the run "
            "never got better than ignoring its input: the weights were thrown far from where they can learn, and "
            "the later updates look small only against the grown weights."
        ),
        evidence={"early_bulk_log10_update_ratio": {str(k): round(float(v), 3) for k, v in bulk.items()}, "side": "large",
                  "worst_step": worst},
        where={"step": worst},
        first_step=worst,
        fix=f"Multiply the learning rate by about {fmt(10 ** (-3 - typical), 2)} (aim for |Δw|/|w| ≈ 1e-3).",
    )


def _never_updated(run: Run, updates: pd.DataFrame, min_updates: int) -> Iterator[Found]:
    """Parameters that receive a gradient on every recorded step and are never changed by
    a step: no optimizer holds them (one built before the layer was replaced), or their
    group's rate is 0."""
    grads = run["params"]
    if grads.empty or "grad_norm" not in grads:
        return
    ratio = pd.to_numeric(updates["update_ratio"], errors="coerce")
    still = updates.assign(r=ratio).groupby("param")["r"].agg(lambda r: len(r) >= min_updates and bool((r == 0).all()))
    g = grads.assign(g=pd.to_numeric(grads["grad_norm"], errors="coerce"))
    fed = g.groupby("param")["g"].agg(lambda v: len(v) >= min_updates and bool((np.isfinite(v) & (v > 0)).all()))
    stuck = sorted((name for name in still.index[still] if bool(fed.get(name, False))), key=lambda n: n.endswith("bias"))
    if not stuck:
        return
    first = updates[updates["param"].isin(stuck)]["step"]
    yield Found(
        title=f"'{stuck[0]}' gets a gradient at every step but is never updated"
              + (f" (and {len(stuck) - 1} more)" if len(stuck) > 1 else ""),
        explanation=(
            f"{len(stuck)} parameter(s) received a non-zero gradient on every recorded step, yet no optimizer step "
            "changed them: they are not in any optimizer's parameter groups (an optimizer built before the layer "
            "was replaced holds the old one's tensors), or their group's learning rate is 0."
        ),
        evidence={"never_updated": stuck, "side": "none"},
        where={"param": stuck[0]},
        first_step=int(first.min()),
        fix="Build the optimizer after the model is final (or add the new parameters: optimizer.add_param_group).",
    )


def _loss_fell_tenfold(run: Run) -> bool:
    """The loss over the last tenth of the run is at most a tenth of the first tenth's."""
    ends = first_and_last_tenth(run)
    return ends is not None and ends[0] > 0 and ends[1] <= 0.1 * ends[0]


def _no_better_than_ignoring_input(run: Run) -> bool:
    """Over the last window the loss is still at or above what the best input-independent
    predictor scores (the label entropy, the targets' variance): nothing learned yet."""
    w = judgement_window(len(run.train_steps()))
    ref = reference_loss(run, w) if w is not None else None
    return ref is not None and ref.loss > 0 and ref.run_loss >= ref.loss


def rate_too_small(run: Run) -> bool:
    """learning-rate-scale's reading that the weights barely moved (too small a rate, or a
    schedule that decayed it away): the run's gradient profiles are its initial weights'."""
    return any(f.evidence.get("side") == "small" for f in learning_rate_scale(run))
