"""Wiring and training loop: is the loss the right one, is the start sane?"""

from __future__ import annotations

from typing import Iterator
import math

import numpy as np
import pandas as pd

from ..finding import Severity
from ..run import Run
from ._common import CLASS_LOSSES, detail_rows, fmt, label_stats, loss_kind, mixed_losses, target_moments
from .registry import Found, rule

#: autograd ops whose outputs are bounded to [0, 1] (or [-1, 1]): not an unbounded linear output
BOUNDED_OPS = frozenset({"SigmoidBackward0", "SoftmaxBackward0", "TanhBackward0", "HardsigmoidBackward0", "ClampBackward1", "ClampBackward0"})
#: ops whose outputs are probabilities over the class dim
PROB_OPS = frozenset({"SoftmaxBackward0"})


@rule(
    "poor-initial-loss",
    Severity.INFO,
    signals=("steps", "predictions"),
    fix="Initialise the output layer small (bias = class prior), check the loss reduction and that targets match outputs.",
    plots=("loss",),
)
def poor_initial_loss(
    run: Run,
    *,
    first_steps: int = 3,  # Karpathy's recipe: "verify loss @ init" on the first batches
    info_deviation: float = 0.5,  # research-notes §6: |L0 - L*| / L* > 0.5 -> info
    warn_deviation: float = 1.0,  # L0 > (1 + 1.0) L* (TDC dev_ratio) -> warning
) -> Iterator[Found]:
    """The first loss is far from what an untrained model should give.

    What it detects: the loss of the first step L0 — taken before any update; the mean of the
    first 3 steps when step 0 saw fewer than 16 targets — against the expected
    L* = ln K for K output classes (a uniform guess; ln 2 = 0.693 for binary) or, for MSE,
    the mean square of the targets (outputs near 0). Info beyond 50 % off; warning when L0
    is more than twice L* (a badly scaled start); a lower L0 stays info.

    Legitimate look-alikes: a pretrained or resumed model; an output bias set to the class
    prior (this rule's own advice) on a skewed task; a noisy first batch of one; a loss
    summed over elements (``reduction='sum'``, a per-sequence sum over time steps) or
    weighted (``pos_weight``); a main loss and an auxiliary one computed in the same step
    (their mean is no one loss's), which is not judged. The first two are told apart in severity (a first loss below
    the expected one stays info), the third by averaging the first 3 steps when step 0 saw
    fewer than 16 targets. Under MSE the first step's outputs tell a badly scaled start (outputs beyond
    unit scale and the targets' range) from targets away from zero (a depth scaled into
    [0, 1] against default-initialised outputs of -0.2): the latter stays info. Not told
    apart: the expected loss is ln K (or the targets' mean square) whatever the reduction and weights, so a summed or weighted loss reads as a
    badly scaled start, a warning once it is more than twice that.

    Why it matters: a badly scaled output layer or initialisation starts training far from
    a neutral guess and wastes the first phase undoing it (or hides a loss bug when L0 is
    suspiciously low).

    How to fix: initialise the last layer small (and its bias to the class prior), check the
    reduction of the loss, check the targets match the outputs.
    """
    train = run.train_steps()
    if train.empty or "loss" not in train or mixed_losses(train.head(first_steps)):
        return  # a main and an auxiliary loss averaged: no one loss's expected start
    losses = pd.to_numeric(train["loss"], errors="coerce")
    first = train.iloc[0]
    seen = pd.to_numeric(pd.Series([first.get("total"), first.get("tgt_n")]), errors="coerce").max()
    head = losses.head(1) if seen >= 16 else losses.head(first_steps)
    if head.empty or not np.isfinite(head).all():
        return
    l0 = float(head.mean())
    kind = loss_kind(run)
    if kind in CLASS_LOSSES:
        k = pd.to_numeric(train.get("n_classes", pd.Series(dtype=float)), errors="coerce").dropna()
        if k.empty or k.iloc[0] < 2:
            return
        n = int(k.iloc[0])
        expected, basis = math.log(n), f"ln K, a uniform guess over {n} classes"
    elif kind == "mse":
        m = target_moments(run)
        if m is None:
            return
        expected, basis = m[1] + m[0] ** 2, "mean square of the targets (outputs ≈ 0 at init)"
    else:
        return
    if expected <= 0:
        return
    dev = abs(l0 - expected) / expected
    if dev <= info_deviation:
        return
    badly_scaled = l0 > (1 + warn_deviation) * expected
    if badly_scaled and kind == "mse" and _outputs_within_target_scale(train.iloc[0]):
        badly_scaled = False  # small outputs off a non-zero target mean: the start is not the problem
    yield Found(
        title=f"Initial loss {fmt(l0)} is {dev:.0%} away from the expected {fmt(expected)}",
        explanation=f"The first {len(head)} steps averaged loss {fmt(l0)}; an untrained model should give about {fmt(expected)} ({basis}).",
        evidence={"initial_loss": l0, "expected": expected, "basis": basis, "relative_deviation": dev},
        where={"steps": f"0-{len(head) - 1}"},
        first_step=0,
        severity=Severity.WARNING if badly_scaled else Severity.INFO,
    )


def _outputs_within_target_scale(first: pd.Series) -> bool:
    """The first step's outputs are no larger than unit scale or the targets' own: an MSE
    start that is far from the targets' mean square is then a matter of where the targets
    sit (targets in [0, 1] against outputs of -0.2 give twice their mean square), not of a
    badly scaled output layer. False when the ranges were not recorded."""
    vals = pd.to_numeric(pd.Series([first.get(c) for c in ("out_min", "out_max", "tgt_min", "tgt_max")]), errors="coerce")
    if vals.isna().any():
        return False
    out_abs, tgt_abs = max(abs(vals[0]), abs(vals[1])), max(abs(vals[2]), abs(vals[3]))
    return bool(out_abs <= max(1.0, tgt_abs))


@rule(
    "loss-output-mismatch",
    Severity.ERROR,
    signals=("steps",),
    fix="Return raw logits and use CrossEntropyLoss (K classes) or BCEWithLogitsLoss (binary); use NLLLoss only after log_softmax.",  # each case gives its own
    plots=("loss",),
)
def loss_output_mismatch(run: Run, *, min_checks: int = 3, share: float = 0.9) -> Iterator[Found]:
    """The loss function does not fit what the model outputs or what the targets are.

    What it detects (each on at least 90 % of at least 3 sampled steps):
    a regression loss (MSE/L1) on 0/1 class labels — an error when the output is an
    unbounded linear layer (seed 002), a warning when it is already squashed to [0, 1];
    CrossEntropyLoss fed probabilities (softmax applied before a loss that applies its own);
    NLLLoss fed something other than log-probabilities; BCEWithLogitsLoss fed values that
    already lie in [0, 1] (a sigmoid applied twice).

    Legitimate look-alikes: MSE on 0/1 values that are regression targets by intent
    (reconstructing binary inputs, a fraction that happens to be 0 or 1) or on labels
    through a sigmoid; ``nll_loss`` used to pick the target's entry of scores that are not
    log-probabilities (a policy-gradient loss on ``log_prob * advantage``). Told apart only
    in severity: MSE on 0/1 labels from an output already squashed to [0, 1] is a warning,
    from an unbounded linear output an error. Not told apart: intended regression on 0/1
    values through a linear output, and ``nll_loss`` on advantage-weighted
    log-probabilities, both errors. A softmax fed to CrossEntropyLoss and a sigmoid fed to
    BCEWithLogitsLoss have no common correct use.

    Why it matters: MSE on labels gives tiny, badly shaped gradients near the majority
    class and the model settles on the class prior (75 % for OR of two bits); a double
    softmax/sigmoid flattens the gradient so learning stalls.

    How to fix: return raw logits and use CrossEntropyLoss (K classes) or
    BCEWithLogitsLoss (binary / multi-label); use NLLLoss only after log_softmax.
    """
    d = detail_rows(run)
    kind = loss_kind(run)
    if d.empty or kind is None or len(d) < min_checks:
        return
    d = d[d["loss_kind"] == kind]

    def mostly(mask: pd.Series) -> bool:
        return len(mask) >= min_checks and float(mask.mean()) >= share

    out_lo, out_hi = float(d["out_min"].min()), float(d["out_max"].max())
    ops = d["out_op"].dropna() if "out_op" in d else pd.Series(dtype=str)
    out_op = str(ops.mode().iloc[0]) if not ops.empty else "none"
    found = None
    if kind in ("mse", "l1", "smooth_l1", "huber"):
        binary = (d["tgt_integral"] == 1) & (d["tgt_min"] >= 0) & (d["tgt_max"] <= 1)
        if mostly(binary) and bool((d["tgt_integral"] == 1).all()):
            bounded = out_op in BOUNDED_OPS or (out_op == "none" and out_lo >= 0 and out_hi <= 1)
            found = (
                Severity.WARNING if bounded else Severity.ERROR,
                f"{kind.upper()} loss on 0/1 class labels from {'a squashed' if bounded else 'an unbounded linear'} output",
                f"Every sampled step trained a regression loss ({kind}) on targets that are class labels "
                f"(0/1); the output came from {out_op} and ranged {fmt(out_lo)}…{fmt(out_hi)}. Regression on labels pulls every output "
                "toward the class mean and gives weak gradients near it, so the model settles on the majority class.",
                "Output one logit per position and use nn.BCEWithLogitsLoss (or 2 logits with nn.CrossEntropyLoss); "
                "read predictions as logit > 0.",
            )
    elif kind == "cross_entropy" and (out_op in PROB_OPS or ("out_is_prob" in d and mostly(d["out_is_prob"] == 1))):
        found = (
            Severity.ERROR,
            "CrossEntropyLoss is fed probabilities (softmax applied twice)",
            "The inputs to cross_entropy lie in [0, 1] and sum to 1 over the classes: a softmax was applied "
            "before a loss that applies log_softmax itself, which flattens the gradient.",
            "Remove the softmax from the model's output (keep it for inference only), or use NLLLoss after log_softmax.",
        )
    elif kind == "nll" and "out_is_logprob" in d and mostly(d["out_is_logprob"] == 0):
        found = (
            Severity.ERROR,
            "NLLLoss is fed something other than log-probabilities",
            f"NLLLoss expects log_softmax outputs (≤ 0, logsumexp 0); the outputs ranged {fmt(out_lo)}…{fmt(out_hi)}.",
            "Apply log_softmax before NLLLoss, or use CrossEntropyLoss on raw logits.",
        )
    elif kind == "bce_logits" and (out_op == "SigmoidBackward0" or (out_op == "none" and mostly((d["out_min"] >= 0) & (d["out_max"] <= 1)))):
        found = (
            Severity.WARNING,
            "BCEWithLogitsLoss is fed values already in [0, 1] (sigmoid applied twice?)",
            "BCEWithLogitsLoss applies a sigmoid itself; inputs confined to [0, 1] suggest the model already did.",
            "Feed raw logits to BCEWithLogitsLoss, or use BCELoss on probabilities.",
        )
    if found is None:
        return
    severity, title, expl, fix = found
    yield Found(
        title=title,
        explanation=expl,
        evidence={
            "loss": kind,
            "output_range": [out_lo, out_hi],
            "target_range": [float(d["tgt_min"].min()), float(d["tgt_max"].max())],
            "output_op": out_op,
            "steps_checked": int(len(d)),
        },
        where={"loss": kind},
        first_step=int(d["step"].min()),
        severity=severity,
        fix=fix,
    )


@rule(
    "gradients-not-zeroed",
    Severity.WARNING,
    signals=("stale_grads",),
    fix="Call optimizer.zero_grad() before each loss.backward() (or right after optimizer.step()).",
    plots=("grad_norm",),
)
def gradients_not_zeroed(run: Run, *, min_steps: int = 5, share: float = 0.5, relative: float = 1e-6) -> Iterator[Found]:
    """Each optimizer step adds this batch's gradient to every earlier one's.

    What it detects: just before the first backward pass of a step, the gradients of the
    parameters the optimizer updates still hold a value (their norm above 1e-6 of the step's
    final gradient norm) on at least half of at least 5 observed steps: ``zero_grad()`` is
    called once per epoch, before the loop, or never.

    Legitimate look-alikes: gradient accumulation over micro-batches steps the optimizer once
    per several backward passes and zeroes after the step, so each step's first backward
    starts from nothing, as does ``zero_grad(set_to_none=False)`` (zeros, not a value).
    Parameters no optimizer updates (a frozen embedding left with ``requires_grad``) are not
    read. Not told apart: a deliberate "momentum by hand" that keeps part of the last
    gradient is read the same.

    Why it matters: ``backward()`` adds to ``.grad``. Without zeroing, step k moves along the
    sum of the last k batches' gradients: a step size that grows with k under SGD (the loss
    rises and the weights blow up within an epoch) and stale directions under every optimizer.

    How to fix: call ``optimizer.zero_grad()`` before each ``loss.backward()`` (or right after
    ``optimizer.step()``); to accumulate on purpose, zero after each optimizer step.
    """
    stale = run["stale_grads"]
    if stale.empty or "stale_norm" not in stale:
        return
    norm = pd.to_numeric(stale["stale_norm"], errors="coerce").to_numpy()
    steps = run.train_steps()
    final = steps.set_index("step")["grad_norm"] if "grad_norm" in steps else pd.Series(dtype=float)
    final = pd.to_numeric(final[~final.index.duplicated()], errors="coerce").reindex(stale["step"]).to_numpy()
    scale = np.where(np.isfinite(final) & (final > 0), final, 0.0)
    held = (norm > relative * scale) & (norm > 0)
    observed = int(np.isfinite(norm).sum())
    if observed < min_steps or held.sum() < share * observed:
        return
    at = stale["step"][held]
    scaled = held & (scale > 0)  # the leftover as a share of the step's final norm, where that is known
    kept = float(np.median(norm[scaled] / scale[scaled])) if scaled.any() else float("nan")
    share_text = f"; the leftover was a median {fmt(kept * 100)} % of the step's final gradient norm" if np.isfinite(kept) else ""
    yield Found(
        title=f"Gradients are not zeroed between steps: {int(held.sum())} of {observed} observed steps began with last step's gradient",
        explanation=(
            f"At the first backward pass of {int(held.sum())} of {observed} observed steps the optimizer's parameters "
            f"still held a gradient{share_text}: each step moves along the sum of every batch's gradient since the last zero_grad()."
        ),
        evidence={"steps_observed": observed, "steps_with_leftover": int(held.sum()), "median_leftover_share": None if not np.isfinite(kept) else float(kept)},
        where={"step": int(at.iloc[0])},
        first_step=int(at.iloc[0]),
    )
