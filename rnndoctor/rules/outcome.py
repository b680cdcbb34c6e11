"""Outcome: is the network learning at all?"""

from __future__ import annotations

import math
from typing import Iterator

import numpy as np
import pandas as pd

from ..finding import Severity
from ..run import Run
from ..schedule import DEFAULT_LOCALIZE
from ..signals import LARGE_PREACTIVATION
from ._common import (
    Window,
    finite,
    first_and_last_tenth,
    fmt,
    judgement_window,
    label_stats,
    loss_trend,
    reference_loss,
    stuck_evidence,
    targets_are_labels,
)
from .registry import Found, rule


@rule(
    "stuck-at-chance",
    Severity.ERROR,
    signals=("steps", "predictions"),
    fix=(
        "Make the task learnable before tuning: overfit one small batch; for long sequences use dense "
        "per-step targets or a short-to-long curriculum; verify the input reaches the RNN; use a "
        "classification loss (CrossEntropyLoss / BCEWithLogitsLoss) for class labels."
    ),
    plots=("loss", "accuracy"),
)
def stuck_at_chance(
    run: Run,
    *,
    acc_floor_tol: float = 0.02,  # research-notes §6: |acc - b| <= max(0.02, 3 sigma); AUTOTRAINER δ≈0.01
    loss_fraction: float = 0.9,  # loss >= 0.9 x label entropy (nats) or target variance
    min_rel_decrease: float = 0.01,  # < 1 % loss decrease across the window = no progress (TDC)
) -> Iterator[Found]:
    """Accuracy and loss sit at what an input-independent predictor would reach.

    What it detects: over the last window after warm-up, accuracy is within noise of what
    an input-independent predictor scores (1/K for balanced labels; with skewed labels
    anywhere from the rarest class's share, guesses spread over the classes, to the
    majority share),
    the loss is at least 0.9 x the label entropy (or the target variance for MSE), and the
    loss is known not to fall: its second half is less than 1 % below its first, at 95 %
    confidence not 10 % below, and that interval is narrower than ±15 %. A rise is no
    progress either. A loss too noisy for its steps to say that (batch size 1, a young run)
    is too early to tell and is not called stuck. For regression: MSE at the variance of the
    targets (within each output channel), L1 at their mean absolute deviation from the median.

    Legitimate look-alikes: a young or noisy run (batch size 1) that has not yet moved; a
    model that did learn but whose accuracy is still near the majority share (weakly
    informative inputs, skewed labels); a run stopped on the long plateau that parity or
    copy tasks sit on before a late breakthrough; a task whose labels truly do not depend on
    the input (a shuffled-label control). The first two are told apart: the loss must be
    known not to fall (95 % interval below 10 % and narrower than ±15 %), class accuracy is judged over at least 200
    counted targets after warm-up, and a model that learned anything has a loss below 0.9 x
    the label entropy even where its argmax stays on the majority class. Not told apart: the
    plateau that longer training would leave and the input-independent control; the rule
    judges the run as recorded.

    Why it matters: the network has learned nothing about its input; more epochs or a
    different learning rate rarely change that. Typical causes: a task whose gradient is
    uninformative (parity of long strings), an input the model cannot see, a loss that does
    not fit the output, or labels that do not depend on the input.

    How to fix: make the problem learnable first. Overfit one small batch; give dense
    targets (e.g. running parity at every step) or a curriculum from short to long
    sequences; check that the input reaches the recurrent layer; use a classification loss
    for class labels.
    """
    train = run.train_steps()
    w = judgement_window(len(train))
    if w is None:
        return
    ev = stuck_evidence(run, w, acc_floor_tol=acc_floor_tol, loss_fraction=loss_fraction, min_rel_decrease=min_rel_decrease)
    if ev is None:
        return
    first = w.start
    for start in range(w.start - w.steps // 2, -1, -max(1, w.steps // 2)):  # earliest window that also held
        if start < 0 or stuck_evidence(
            run, Window(start, start + w.steps - 1), acc_floor_tol=acc_floor_tol, loss_fraction=loss_fraction, min_rel_decrease=min_rel_decrease
        ) is None:
            break
        first = start
    if ev.get("baseline") is not None:
        title = f"Accuracy {ev['accuracy']:.3f} is stuck at the {ev['baseline_kind']} {ev['baseline']:.3f}"
        expl = (
            f"Over steps {w.start}-{w.end} accuracy was {ev['accuracy']:.3f} against an input-independent "
            f"baseline of {ev['baseline']:.3f} ({ev['baseline_kind']}, {ev['classes']} classes), and the loss "
            f"{fmt(ev['loss'])} stayed at the {ev['reference_loss_kind'] or 'baseline'} {fmt(ev['reference_loss'])}. "
            "The model predicts no better than ignoring its input."
        )
    else:
        mse = ev.get("loss_kind", "mse") == "mse"
        title = (f"MSE {fmt(ev['loss'])} is stuck at the target variance {fmt(ev['reference_loss'])}" if mse else
                 f"L1 loss {fmt(ev['loss'])} is stuck at the targets' mean absolute deviation {fmt(ev['reference_loss'])}")
        expl = (
            f"Over steps {w.start}-{w.end} the loss stayed at "
            + ("the variance of the targets: the model predicts their mean and nothing else." if mse else
               "the targets' mean absolute deviation: the model predicts their median and nothing else.")
        )
    yield Found(title=title, explanation=expl, evidence=ev, where={"steps": f"{w.start}-{w.end}"}, first_step=first)


@rule(
    "prediction-collapse",
    Severity.ERROR,
    signals=("predictions",),
    fix=(
        "Train on logits with CrossEntropyLoss / BCEWithLogitsLoss instead of MSE on labels; check the "
        "output layer; weight or rebalance classes; lower the learning rate if outputs saturate."
    ),
    plots=("balance",),
)
def prediction_collapse(
    run: Run,
    *,
    top_share: float = 0.95,  # failure-modes.md: predictions concentrated (> 95 %) on one class
    max_label_share: float = 0.8,  # ... while that class is at most 80 % of the labels (gap >= 0.15)
) -> Iterator[Found]:
    """Nearly every prediction is the same class, though the labels are mixed.

    What it detects: over the last window, one class takes at least 95 % of the predictions
    while it is at most 80 % of the labels, and the loss is not falling beyond noise (a
    young model that still learns its way out of predicting the majority class is not
    collapsed).

    Legitimate look-alikes: a young model still predicting the majority class on its way to
    learning the rest; a task whose dominant class is above 80 % of the labels (an 'O' tag,
    a rare event); a calibrated model on a skewed task whose inputs are too weakly
    informative for another class ever to be the more likely one, so its argmax is the
    majority class nearly always. The first is told apart by the loss trend (a loss falling
    beyond noise over the window defers the finding), the second by the 80 % cap on the
    class's share of the labels. Not told apart: the third; the rule does not compare the
    loss with the label entropy, so a converged model that is right to predict the majority
    is reported as collapsed, as an error. Two things void the excuses: a loss below zero
    under a loss that cannot be negative (NLL fed raw logits) is not a loss that is
    learning; and per-class loss weights that favour the predicted majority class (class
    frequencies passed where their inverses were meant) make the model no longer calibrated,
    so the 80 % cap gives way to "the predictions are more concentrated than the labels, by
    at least half of the rest".

    Why it matters: the model has fallen back on the majority (or an arbitrary) class; its
    accuracy equals that class's share and says nothing about what it learned.

    How to fix: use a classification loss on logits (not MSE on 0/1 targets), check the
    output layer and its bias, rebalance or weight the classes, lower a learning rate that
    throws the output into one region.
    """
    if not targets_are_labels(run):
        return
    w = judgement_window(len(run.train_steps()))
    if w is None:
        return
    labels = label_stats(run, w)
    if labels is None or labels.total <= 0:
        return
    train = w.select(run.train_steps())
    trend = loss_trend(train["loss"]) if "loss" in train else None
    if trend is not None and trend.falling and not _impossible_loss(train):
        return  # still learning its way out (a young run): not yet
    top = int(np.argmax(labels.pred_counts))
    cls = labels.class_at(top)
    pshare, lshare = float(labels.pred_shares[top]), float(labels.shares[top])
    weights = _class_weights(run.train_steps())
    favoured = weights is not None and cls < len(weights) and lshare == float(labels.shares.max()) \
        and weights[cls] > max(np.delete(weights, cls), default=np.inf)
    if favoured:  # the loss pushes toward the majority: its share no longer excuses the collapse
        if lshare > 0.99 or pshare < max(top_share, lshare + (1 - lshare) / 2):
            return
    elif pshare < top_share or lshare > max_label_share:
        return
    note = (f" The loss weights class {cls} most ({', '.join(f'{x:.3g}' for x in weights[:8])}): weights that grow "
            "with a class's frequency push predictions further onto the majority; inverse frequencies balance them.") \
        if favoured else ""
    yield Found(
        title=f"{pshare:.0%} of predictions are class {cls}, which is {lshare:.0%} of the labels",
        explanation=(
            f"Over steps {w.start}-{w.end} the model predicted class {cls} for {pshare:.1%} of targets; "
            f"the labels are {lshare:.1%} class {cls}. Its accuracy is just that class's share.{note}"
        ),
        evidence={
            "class": cls,
            "prediction_share": pshare,
            "label_share": lshare,
            "prediction_shares": [round(float(x), 4) for x in labels.pred_shares],
            "label_shares": [round(float(x), 4) for x in labels.shares],
            "window": [w.start, w.end],
            **({"class_weights": [round(float(x), 4) for x in weights]} if favoured else {}),
        },
        where={"class": cls, "steps": f"{w.start}-{w.end}"},
        first_step=w.start,
        **({"fix": "Weight classes by inverse frequency (weight = total / (K * count)), not by frequency."} if favoured else {}),
    )


def _impossible_loss(train: pd.DataFrame) -> bool:
    """The loss went below zero under a loss kind that cannot be negative (NLL on raw
    logits): its fall says nothing about learning."""
    if "loss" not in train or "loss_kind" not in train:
        return False
    kinds = set(train["loss_kind"].dropna())
    loss = pd.to_numeric(train["loss"], errors="coerce")
    return bool(kinds) and "logged" not in kinds and bool((loss < 0).any())


def _class_weights(steps: pd.DataFrame) -> np.ndarray | None:
    """The per-class weights of the run's classification loss, when it had any."""
    if "class_weight" not in steps:
        return None
    for value in reversed(steps["class_weight"].dropna().tolist()):
        arr = np.asarray(value, dtype=float)
        if arr.ndim == 1 and arr.size >= 2 and np.isfinite(arr).all():
            return arr
    return None


@rule(
    "label-imbalance",
    Severity.INFO,
    signals=("predictions",),
    fix="Read accuracy against the majority share; report per-class recall; weight or resample classes.",
    plots=("balance",),
)
def label_imbalance(
    run: Run,
    *,
    majority_ratio: float = 1.4,  # majority share >= 1.4 / K (binary: 70 %) reads as skewed
    min_labels: int = 100,
) -> Iterator[Found]:
    """The labels are skewed: read accuracy against the majority share.

    What it detects: the most frequent label is at least 1.4 / K of all labels seen in
    training (70 % for two classes).

    Legitimate look-alikes: every naturally skewed task (rare events, the 'O' tag of a
    tagger, OR of two bits) and every model over a large vocabulary, whose most frequent
    token is far above 1.4 / K. Not told apart, and not meant to be: the rule reads only the
    label shares, says nothing about whether the skew is a bug, and never rises above info;
    it is a reminder to read accuracy against the majority share.

    Why it matters: "75 % accuracy" is no achievement when 75 % of the labels are one class
    (seed 002: OR of two bits is 1 three times out of four).

    How to fix: compare accuracy with the majority share; prefer balanced metrics (per-class
    recall, F1); weight the loss or resample if the minority class matters.
    """
    if not targets_are_labels(run):
        return
    labels = label_stats(run)
    if labels is None or labels.total < min_labels:
        return
    cls, share = labels.majority
    k = labels.n_classes
    if share < majority_ratio / k:
        return
    yield Found(
        title=f"Labels are skewed: class {cls} is {share:.1%} of them",
        explanation=(
            f"Across training, {share:.1%} of the {int(labels.total)} labels were class {cls} ({k} classes). "
            f"Always predicting it scores {share:.1%} accuracy."
        ),
        evidence={"majority_class": cls, "majority_share": share, "label_shares": [round(float(x), 4) for x in labels.shares], "classes": k},
        where={"class": cls},
        first_step=0,
    )


def _first_nonfinite_param(params: pd.DataFrame, column: str, first_bad_loss: int | None = None) -> pd.Series | None:
    """The first row whose ``column`` norm is non-finite. A norm of +inf at step s with the
    loss finite through step s + 1 is not a non-finite value: a float32 norm overflows for
    finite elements beyond ~1e19 (the forward on those weights, or on weights updated with
    that gradient, stayed finite), and the values are merely huge (divergence says so)."""
    if params.empty or column not in params:
        return None
    values = pd.to_numeric(params[column], errors="coerce")
    bad = params[~np.isfinite(values) & ~values.isna()] if column == "grad_norm" else params[~np.isfinite(values)]
    if column == "grad_norm" and "grad_none" in params:
        bad = bad[bad["grad_none"] != 1]
    if not bad.empty:
        v = pd.to_numeric(bad[column], errors="coerce")
        overflow = (v == np.inf) & ((bad["step"] + 1 < first_bad_loss) if first_bad_loss is not None else True)
        bad = bad[~overflow]
    if bad.empty:
        return None
    return bad.sort_values("step").iloc[0]


@rule(
    "non-finite",
    Severity.ERROR,
    signals=("steps",),
    fix=(
        "Bound what grows: use saturating activations (tanh) for cell input/output, moderate gate biases "
        "(forget bias ~1, not ±10), clip gradients (torch.nn.utils.clip_grad_norm_), lower the learning "
        "rate, normalise inputs, check the data for NaN."
    ),
    plots=("loss", "nonfinite", "activations"),  # activations: only when a saturated submodule is named
)
def non_finite(run: Run) -> Iterator[Found]:
    """A NaN or Inf appeared in the loss, an activation, a gradient or a parameter.

    What it detects: the first step at which anything recorded became non-finite, and its
    source: the first module (in call order) whose inputs were finite and whose output was
    not, with the time step for recurrent outputs and the call number for cells called in
    a loop; or the parameter that an optimizer step made non-finite.

    Legitimate look-alikes: a module that returns -inf by design (attention scores masked
    with ``masked_fill(mask, float('-inf'))``, the softmax applied outside it), and a loop
    that notices a NaN loss, skips that batch and trains on. Non-finite values already in
    the data are told apart from a module that produced them (a module is named only when
    its inputs were finite). A gradient or weight norm of +inf followed by a finite loss is
    a float32 norm that overflowed on huge finite values (beyond ~1e19 per element), not a
    non-finite value (with no later non-finite loss, or one more than a step later). Not
    told apart: both look-alikes; one non-finite module output,
    loss, gradient or parameter is an error whether or not the loss ever saw it and whether
    or not the run recovered.

    Why it matters: once a NaN reaches the weights every later step is wasted.

    How to fix: bound what grows: saturating activations (tanh) on the cell, moderate gate
    biases (forget bias ~1, not +-10), gradient clipping, a lower learning rate, input
    normalisation; check the data for NaN.
    """
    train = run.train_steps()
    nf = run["nonfinite"]
    params = run["params"]
    candidates: list[tuple[int, str]] = []
    first_loss = None
    if not train.empty and "loss" in train:
        loss = pd.to_numeric(train["loss"], errors="coerce")
        bad = train[(~np.isfinite(loss) & loss.notna()) | (train.get("loss_finite", 1) == 0)]
        if not bad.empty:
            first_loss = int(bad["step"].min())
            candidates.append((first_loss, "loss"))
    grad = _first_nonfinite_param(params, "grad_norm", first_loss)
    updates = run["updates"]
    weight = _first_nonfinite_param(updates, "weight_norm", first_loss)
    if grad is not None:
        candidates.append((int(grad["step"]), "gradient"))
    if weight is not None:
        candidates.append((int(weight["step"]), "parameter"))
    module_row = None
    if not nf.empty and "module" in nf:
        located = nf[nf["module"].notna()].sort_values("step")
        if not located.empty:
            module_row = located.iloc[0]
            candidates.append((int(module_row["step"]), "module"))
        data_bad = nf[(nf.get("outputs_bad", 0) == 1) & nf["module"].isna()]
    else:
        data_bad = pd.DataFrame()
    if not candidates:
        return
    first_step = min(s for s, _ in candidates)
    ev: dict = {"first_step": first_step, "first_nonfinite_loss_step": first_loss}
    if grad is not None:
        ev["first_nonfinite_gradient"] = {"param": grad["param"], "step": int(grad["step"])}
    if weight is not None:
        ev["first_nonfinite_parameter"] = {"param": weight["param"], "step": int(weight["step"])}
    if module_row is not None and int(module_row["step"]) <= first_step:
        where = {"module": module_row["module"], "call": int(module_row["call"]), "step": int(module_row["step"])}
        t = module_row.get("t")
        if t is not None and not (isinstance(t, float) and math.isnan(t)):
            where["t"] = int(t)
        ev["source"] = "module"
        title = f"NaN/Inf first produced by module '{module_row['module']}' at step {int(module_row['step'])}"
        when = f"time step {where['t']}" if "t" in where else f"call {where['call']} of the step"
        expl = (
            f"At step {where['step']} module '{where['module']}' received finite inputs and returned non-finite "
            f"values ({when}; for a cell called once per time step the call number is the time step). "
            "Everything downstream — loss, gradients, weights — became non-finite from there."
        )
        pinned = _saturated_submodules(run, str(module_row["module"]), int(module_row["step"]))
        if pinned:
            ev["saturated_inside"] = pinned
            expl += (
                " Inside it, " + ", ".join(f"'{m}'" for m in pinned)
                + f" produced |output| > {LARGE_PREACTIVATION:g} on at least {SATURATED_INSIDE_SHARE:.0%} of their "
                "finite outputs in that step: fed to a sigmoid or tanh, those are pinned gates (seed 003's ±10 biases)."
            )
    elif weight is not None and (first_loss is None or int(weight["step"]) < first_loss):
        where = {"param": weight["param"], "step": int(weight["step"])}
        prev = updates[(updates["param"] == weight["param"]) & (updates["step"] == int(weight["step"]))]
        grads_at = params[(params["param"] == weight["param"]) & (params["step"] == int(weight["step"]))] if not params.empty else params
        ev["source"] = "optimizer-step"
        if not prev.empty:
            ev["update_ratio"] = prev.iloc[0].get("update_ratio")
        if not grads_at.empty:
            ev["grad_norm"] = grads_at.iloc[0].get("grad_norm")
        title = f"Parameter '{weight['param']}' became non-finite at optimizer step {int(weight['step'])}"
        expl = "The optimizer step wrote NaN/Inf into the weights; every later forward pass is non-finite."
    elif not data_bad.empty and module_row is None:
        step = int(data_bad["step"].min())
        where = {"step": step, "source": "inputs"}
        ev["source"] = "inputs"
        title = f"Non-finite values already in the model's inputs at step {step}"
        expl = "Every module's output was non-finite but none received finite inputs: the data itself holds NaN/Inf."
    else:
        kind = dict((s, k) for s, k in sorted(candidates, reverse=True))[first_step]
        where = {"step": first_step, "seen_in": kind}
        ev["source"] = kind
        title = f"Non-finite {kind} at step {first_step}"
        expl = (
            f"The {kind} became NaN/Inf at step {first_step}. Module outputs were not being checked at that "
            f"step (checks run on the {DEFAULT_LOCALIZE}, and always after a NaN), so the module is not named."
        )
    yield Found(
        title=title,
        explanation=expl,
        evidence=ev,
        where=where,
        first_step=first_step,
        plots=("loss", "nonfinite") + (("activations",) if ev.get("saturated_inside") else ()),
    )


@rule(
    "divergence",
    Severity.ERROR,
    signals=("steps",),
    fix="Lower the learning rate, clip gradients, average (not sum) the loss, bound activations.",
    plots=("loss",),
)
def divergence(
    run: Run,
    *,
    over_min: float = 10.0,  # research-notes §6: loss > 10 x min-so-far ...
    over_initial: float = 3.0,  # ... and > 3 x the initial loss ...
    consecutive: int = 3,  # ... for 3 checks in a row
    weight_rms_limit: float = 1e8,  # parameter mean magnitude > 1e8 (TDC)
    smooth: int = 20,  # runs of 100+ steps: the loss level is the mean of the last 20 steps
    smooth_from: int = 100,
) -> Iterator[Found]:
    """The loss climbs by orders of magnitude, or weights grow without bound.

    What it detects: finite training loss above 10 x its running minimum and 3 x its initial
    value for 3 consecutive steps, or a parameter whose RMS exceeds 1e8. In runs of 100 steps
    or more the loss is the mean of each step's last 20 (minimum and initial value too).

    Legitimate look-alikes: a brief rise (a spike, a learning-rate restart), the noise of a
    converged model whose running minimum is tiny, and a loss that grows by design: a
    curriculum that moves to longer or harder sequences, above all with a loss summed (not
    averaged) over a growing number of elements. The first two are told apart: the rise must
    last 3 consecutive steps, and it must also exceed 3 x the initial loss (the mean of the
    first 3), which a tiny minimum alone does not make. The per-step losses of a batch of
    one (a hard sample costs 100x an easy one) are judged as 20-step means. Not told apart: a curriculum whose
    later stages legitimately sit above 3 x the first stage's loss and 10 x the best; the
    weight-RMS bound (1e8) is not cross-checked against the loss either.

    Why it matters: divergence is the step before NaN; nothing learned survives it.

    How to fix: lower the learning rate, clip gradients, check that the loss is averaged
    (not summed) over a growing number of elements, bound activations.
    """
    train = run.train_steps()
    loss = pd.to_numeric(train["loss"], errors="coerce") if "loss" in train else pd.Series(np.nan, index=train.index)
    ok = np.isfinite(loss)
    steps = train["step"][ok].to_numpy() if not train.empty else np.array([])
    values = loss[ok].to_numpy()
    if len(values) >= smooth_from:
        # a batch of one scatters its per-step losses by 100x: three hard samples in a row are
        # no divergence; the level is judged on the mean of each step's last `smooth` losses
        values = pd.Series(values).rolling(smooth, min_periods=1).mean().to_numpy()
    hit = None
    if len(values) > consecutive:
        l0 = float(np.mean(values[: min(3, len(values))]))
        run_min = np.minimum.accumulate(values)
        bad = (values > over_min * np.maximum(run_min, 1e-12)) & (values > over_initial * abs(l0))
        streak = 0
        for i, b in enumerate(bad):
            streak = streak + 1 if b else 0
            if streak >= consecutive:
                hit = ("loss", int(steps[i - consecutive + 1]), {"loss": float(values[i]), "min_so_far": float(run_min[i]), "initial_loss": l0})
                break
    params = run["updates"]
    if hit is None and not params.empty:
        rms = pd.to_numeric(params["weight_norm"], errors="coerce") / np.sqrt(pd.to_numeric(params["numel"], errors="coerce"))
        big = params[np.isfinite(rms) & (rms > weight_rms_limit)]
        if not big.empty:
            r = big.sort_values("step").iloc[0]
            hit = ("weights", int(r["step"]), {"param": r["param"], "weight_rms": float(rms[big.index[0]])})
    if hit is None:
        return
    kind, step, ev = hit
    title = (
        f"Loss diverged: {fmt(ev['loss'])} against a minimum of {fmt(ev['min_so_far'])}"
        if kind == "loss"
        else f"Weights of '{ev['param']}' grew to RMS {fmt(ev['weight_rms'])}"
    )
    yield Found(
        title=title,
        explanation=f"From step {step} the training {'loss' if kind == 'loss' else 'weights'} grew by orders of magnitude.",
        evidence=ev,
        where={"step": step, **({"param": ev["param"]} if "param" in ev else {})},
        first_step=step,
    )


def not_learning(run: Run, *, min_rel_decrease: float = 0.1) -> bool:
    """The outcome is bad: stuck at the baseline, or the loss of the last tenth of the run is
    not at least 10 % below that of the first tenth. Rules about causes (gradient horizon)
    fire only then, as AUTOTRAINER gates its vanishing check on a bad outcome."""
    if next(iter(stuck_at_chance(run)), None) is not None:
        return True
    ends = first_and_last_tenth(run)
    return ends is not None and ends[0] > 0 and (ends[0] - ends[1]) / ends[0] < min_rel_decrease


def solved(run: Run, *, max_share: float = 0.05) -> bool:
    """The run solved its task: over the judgement window its loss is at most 5 % of the
    best input-independent predictor's (label entropy, target variance): R² >= 0.95 under
    MSE, near-perfect predictions under cross-entropy. A signal that would be a cause of
    failure (saturated gates) is then how the model works, not why it fails. Seed 003's
    pinned gates leave its loss at 67 % of the reference; a chrono-initialised LSTM that
    learns its task ends at 0.1 %."""
    w = judgement_window(len(run.train_steps()))
    ref = reference_loss(run, w) if w is not None else None
    return ref is not None and ref.loss > 0 and 0 <= ref.run_loss <= max_share * ref.loss


#: share of a submodule's finite outputs beyond LARGE_PREACTIVATION that names it in the
#: non-finite finding (the gate-saturation bound, applied to pre-activations)
SATURATED_INSIDE_SHARE = 0.9


def _saturated_submodules(run: Run, module: str, step: int) -> dict[str, float]:
    """Submodules of ``module`` whose outputs at ``step`` were almost all beyond
    ±LARGE_PREACTIVATION (the ``activations`` signal: what can be seen of a hand-written
    cell's gates)."""
    acts = run["activations"]
    if acts.empty or "frac_large" not in acts:
        return {}
    rows = acts[(acts["step"] == step) & acts["module"].astype(str).str.startswith(module + ".")]
    share = pd.to_numeric(rows["frac_large"], errors="coerce")
    return {str(m): float(v) for m, v in zip(rows["module"], share) if v >= SATURATED_INSIDE_SHARE}
