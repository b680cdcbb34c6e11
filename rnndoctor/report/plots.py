"""Plots for the HTML report, and ``PLOTS``, the registry of every plot by name.

Every plot function takes a ``Run`` and returns the markup (inline SVG, see ``figure``), or
``None`` when the run has no data for it. The plots of training as a whole live here, those
of the recurrence in ``plots_rnn``, those of the data in ``plots_data``; all of them share the style and helpers of ``figure``.
Adding a plot is one entry in ``PLOTS``; finding names that are not in ``PLOTS`` are
ignored by the report.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from ..rules._common import label_stats, loss_kind, reference_loss, targets_are_labels
from ..run import Run
from .figure import (
    BAD,
    BASE,
    FIGSIZE,
    MAX_LINES,
    MAX_POINTS,
    PALETTE,
    binned,
    centered_note,
    label,
    legend,
    log_if_wide,
    new_figure,
    numeric,
    rug,
    series,
    smooth,
    styled,
    to_markup,
)
from .plots_data import plot_inputs, plot_lengths, plot_samples
from .plots_rnn import plot_activations, plot_cell_norm, plot_gates, plot_time_grad


# ----------------------------------------------------------------------------- helpers
def _wide(df: pd.DataFrame, column: str, key: str = "param") -> pd.DataFrame:
    """step x key table of one value column (the last value when a step repeats)."""
    df = df.assign(**{column: pd.to_numeric(df[column], errors="coerce")})
    return df.pivot_table(index="step", columns=key, values=column, aggfunc="last", dropna=False).sort_index()


def _pick(table: pd.DataFrame, order: list[str]) -> tuple[list[str], int]:
    """At most MAX_LINES columns, the largest typical values first when there are more."""
    cols = [c for c in order if c in table.columns and np.isfinite(table[c].to_numpy(float)).any()]
    if len(cols) <= MAX_LINES:
        return cols, 0
    med = {c: np.nanmedian(np.where(np.isfinite(table[c].to_numpy(float)), table[c].to_numpy(float), np.nan)) for c in cols}
    keep = sorted(cols, key=lambda c: -med[c])[:MAX_LINES]
    return [c for c in cols if c in keep], len(cols) - MAX_LINES


def _param_order(df: pd.DataFrame) -> list[str]:
    return [str(p) for p in dict.fromkeys(df["param"].astype(str))]


# ----------------------------------------------------------------------------- plots
@styled
def plot_loss(run: Run) -> str | None:
    """Training loss (eval points if any) against what ignoring the input would reach."""
    steps = run["steps"]
    if steps.empty or "loss" not in steps:
        return None
    train = run.train_steps()
    if train.empty:
        return None
    fig, ax = new_figure()
    x, y = numeric(train["step"]), numeric(train["loss"])
    kind = loss_kind(run)
    finite = np.isfinite(y)
    if finite.any():
        series(ax, x, y, PALETTE[0], "train loss")
        log_if_wide(ax, y)
    else:
        centered_note(ax, "every loss value was NaN/Inf")
        ax.set_yticks([])
    evals = steps[steps["mode"] == "eval"] if "mode" in steps else steps.iloc[0:0]
    ey = numeric(evals["loss"]) if not evals.empty else np.array([])
    if np.isfinite(ey).any():
        ax.plot(numeric(evals["step"]), ey, "o", color=PALETTE[1], ms=3, label="eval loss")
    ref = _reference_loss(run, kind)
    if ref is not None and finite.any():
        ax.axhline(ref[0], color=BASE, ls="--", lw=1, label=ref[1])
    rug(ax, x[~finite], "non-finite loss")
    ax.set_xlabel("step")
    ax.set_ylabel(f"loss ({kind})" if kind else "loss")
    legend(ax)
    return to_markup(fig, "loss over training steps")


def _reference_loss(run: Run, kind: str | None) -> tuple[float, str] | None:
    """The loss of the best input-independent predictor (the rules' ``reference_loss``)."""
    ref = reference_loss(run)
    if ref is None or not ref.loss > 0:
        return None
    return ref.loss, f"{ref.kind} {ref.loss:.3g}"


@styled
def plot_accuracy(run: Run) -> str | None:
    """Accuracy (correct/total) against chance 1/K and the majority-class share."""
    train = run.train_steps()
    if train.empty or "correct" not in train or "total" not in train or not targets_are_labels(run):
        return None
    total = numeric(train["total"])
    if not np.nansum(total) > 0:
        return None
    acc = numeric(train["correct"]) / np.where(total > 0, total, np.nan)
    fig, ax = new_figure()
    x = numeric(train["step"])
    series(ax, x, acc, PALETTE[0], "train accuracy")
    steps = run["steps"]
    evals = steps[(steps["mode"] == "eval") & (pd.to_numeric(steps["total"], errors="coerce") > 0)] if "mode" in steps else steps.iloc[0:0]
    if not evals.empty:
        ax.plot(numeric(evals["step"]), numeric(evals["correct"]) / numeric(evals["total"]), "o", color=PALETTE[1], ms=3, label="eval accuracy")
    stats = label_stats(run)
    if stats is not None and stats.total > 0:
        cls, share = stats.majority
        chance = 1.0 / stats.n_classes
        if abs(share - chance) >= 0.02:
            ax.axhline(share, color=BASE, ls="--", lw=1, label=f"majority class {label(cls)}: {share:.3f}")
            ax.axhline(chance, color="#6b7280", ls=":", lw=1, label=f"chance 1/{stats.n_classes}: {chance:.3f}")
        else:
            ax.axhline(chance, color=BASE, ls="--", lw=1, label=f"chance 1/{stats.n_classes}: {chance:.3f}")
    ax.set_ylim(-0.02, 1.02)
    ax.set_xlabel("step")
    ax.set_ylabel("accuracy")
    legend(ax)
    return to_markup(fig, "accuracy over training steps")


@styled
def plot_balance(run: Run) -> str | None:
    """Share of each class among predictions (solid) and labels (dashed) over time."""
    pred = run["predictions"]
    if pred.empty or not {"cls", "n_pred", "n_label"} <= set(pred.columns) or not targets_are_labels(run):
        return None
    pred = pred[pred["mode"] == "train"] if "mode" in pred else pred
    if pred.empty:
        return None
    p, lab = _wide(pred, "n_pred", "cls").fillna(0), _wide(pred, "n_label", "cls").fillna(0)
    counts = lab.sum() + p.sum()
    classes = [c for c in counts.sort_values(ascending=False).index if counts[c] > 0][:MAX_LINES]
    if not classes:
        return None
    p_share = p.div(p.sum(axis=1).replace(0, np.nan), axis=0)
    l_share = lab.div(lab.sum(axis=1).replace(0, np.nan), axis=0)
    fig, ax = new_figure()
    x = p.index.to_numpy(dtype=float)
    for i, c in enumerate(sorted(classes, key=lambda c: float(c) if _isnum(c) else 0.0)):
        color = PALETTE[i % len(PALETTE)]
        series(ax, x, p_share[c].to_numpy(float), color, f"class {label(c)}")
        bx, mean, _, _ = binned(x, l_share[c].to_numpy(float))
        sm = smooth(mean) if len(bx) == len(x) else None
        ax.plot(bx, sm if sm is not None else mean, color=color, ls="--", lw=1.1)
    ax.plot([], [], color="#6b7280", ls="-", label="predicted share")
    ax.plot([], [], color="#6b7280", ls="--", label="label share")
    ax.set_ylim(-0.02, 1.02)
    ax.set_xlabel("step")
    ax.set_ylabel("share of the batch")
    legend(ax)
    return to_markup(fig, "prediction and label shares per class")


def _isnum(value: object) -> bool:
    try:
        float(value)  # type: ignore[arg-type]
        return True
    except (TypeError, ValueError):
        return False


def _per_param_log(run: Run, signal: str, column: str, ylabel: str, alt: str) -> tuple[Figure, Axes] | None:
    df = run[signal]
    if df.empty or not {"param", column} <= set(df.columns):
        return None
    table = _wide(df, column)
    cols, left_out = _pick(table.where(table > 0), _param_order(df))
    if not cols:
        return None
    fig, ax = new_figure()
    x = table.index.to_numpy(dtype=float)
    for i, c in enumerate(cols):
        y = table[c].to_numpy(float)
        series(ax, x, np.where(y > 0, y, np.nan), PALETTE[i % len(PALETTE)], label(c, 32), smoothed=False, lw=0.9)
    ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel(ylabel)
    if left_out:
        ax.set_title(f"the {len(cols)} largest of {len(cols) + left_out} parameters", fontweight="normal", fontsize=8)
    return fig, ax


@styled
def plot_grad_norm(run: Run) -> str | None:
    """Gradient L2 norm per parameter (log scale), with the global norm and non-finite steps."""
    made = _per_param_log(run, "params", "grad_norm", "gradient norm", "gradient norms")
    if made is None:
        return None
    fig, ax = made
    train = run.train_steps()
    if "grad_norm" in train:
        x, g = numeric(train["step"]), numeric(train["grad_norm"])
        drawn = np.isfinite(g) & (g > 0)  # sampled after the dense start: a line through recorded steps
        if drawn.any():
            bx, mean, _, hi = binned(x[drawn], g[drawn])
            ax.plot(bx, hi if len(bx) < drawn.sum() else mean, color=BASE, lw=1.6, label="total (max per bin)" if len(bx) < drawn.sum() else "total")
        rug(ax, x[np.isin(x, _grad_steps(run)) & ~np.isfinite(g)], "non-finite")
    legend(ax)
    return to_markup(fig, "gradient norms per parameter")


def _grad_steps(run: Run) -> np.ndarray:
    """Steps whose gradient norms were recorded (they are sampled after the run's start;
    a missing value is not a non-finite one)."""
    params = run["params"]
    if params.empty or "step" not in params:
        return np.array([])
    if "grad_lost" in params:
        params = params[numeric(params["grad_lost"]) != 1]
    return np.unique(numeric(params["step"]))


@styled
def plot_update_ratio(run: Run) -> str | None:
    """|Δw|/|w| per parameter (log scale) against the usual 1e-5…1e-1 range (target ~1e-3)."""
    made = _per_param_log(run, "updates", "update_ratio", "|Δw| / |w|", "update to weight ratios")
    if made is None:
        return None
    fig, ax = made
    ax.axhspan(1e-5, 1e-1, color="#16a34a", alpha=0.07, lw=0, label="usual range 1e-5…1e-1")
    ax.axhline(1e-3, color="#16a34a", ls=":", lw=1)
    legend(ax)
    return to_markup(fig, "update to weight ratios per parameter")


def _bad_steps(run: Run) -> dict[str, np.ndarray]:
    """Row name -> steps where that quantity was non-finite (loss, gradients, weights, modules)."""
    rows: dict[str, np.ndarray] = {}
    train = run.train_steps()
    if "loss" in train:
        bad = ~np.isfinite(numeric(train["loss"]))
        if "loss_finite" in train:
            bad |= numeric(train["loss_finite"]) == 0
        rows["loss"] = numeric(train["step"])[bad]
    for name, signal, column in (("gradients", "params", "grad_norm"), ("weights", "updates", "weight_norm")):
        df = run[signal]
        if not df.empty and column in df:
            v = numeric(df[column])
            if signal == "params" and "grad_none" in df:
                v = np.where(numeric(df["grad_none"]) == 1, 0.0, v)
            if signal == "params" and "grad_lost" in df:
                v = np.where(numeric(df["grad_lost"]) == 1, 0.0, v)
            rows[name] = np.unique(numeric(df["step"])[~np.isfinite(v)])
    nf = run["nonfinite"]
    if not nf.empty and "module" in nf:
        nf = nf[nf["module"].notna()]
        for module, group in list(nf.groupby(nf["module"].astype(str), sort=False))[:6]:
            rows[f"module {label(module, 28)}"] = numeric(group["step"])
    return {k: v for k, v in rows.items() if len(v)}


def _runs(steps: np.ndarray, span: float) -> list[tuple[float, float]]:
    """Steps merged into (start, width) bars: at most MAX_POINTS, none thinner than span/250."""
    s = np.unique(steps)
    w = float(max(1, math.ceil(span / MAX_POINTS)))
    s = np.unique(np.floor(s / w) * w)
    groups = np.split(s, np.flatnonzero(np.diff(s) > w) + 1)
    least = max(0.8 * w, span / 250)
    return [(float(g[0]) - least / 2, max(float(g[-1] - g[0]) + 0.8 * w, least)) for g in groups]


@styled
def plot_nonfinite(run: Run) -> str | None:
    """Timeline of where NaN/Inf appeared: loss, gradients, weights, the module that made it."""
    rows = _bad_steps(run)
    if not rows:
        return None
    fig = Figure(figsize=(FIGSIZE[0], max(1.6, 0.9 + 0.32 * len(rows))), layout="constrained")
    ax = fig.subplots()
    names = list(rows)
    train = run.train_steps()
    last = float(train["step"].max()) if "step" in train and len(train) else max(float(v.max()) for v in rows.values())
    span = max(last, max(float(v.max()) for v in rows.values())) + 1
    for i, name in enumerate(names):
        ax.broken_barh(_runs(rows[name], span), (i - 0.3, 0.6), color=BAD if name.startswith("module") else "#f97316")
    first = min(float(v.min()) for v in rows.values())
    firsts = [n for n, v in rows.items() if float(v.min()) == first]
    source = [n for n in firsts if n.startswith("module")] or firsts
    ax.axvline(first, color=BASE, lw=1.2, ls="--")
    ax.set_title(f"first non-finite at step {first:g}: {', '.join(source)}", color=BAD)
    ax.set_yticks(range(len(names)), names)
    ax.set_ylim(-0.6, len(names) - 0.1)
    ax.invert_yaxis()
    ax.set_xlim(min(first, 0.0) - 0.5, max(span - 1, first) + 0.5)
    ax.set_xlabel("step")
    ax.grid(axis="y", visible=False)
    return to_markup(fig, "non-finite timeline")


# ----------------------------------------------------------------------------- registry
@dataclass(frozen=True)
class PlotSpec:
    """A plot the report knows by name: its caption and the function that draws it."""

    title: str
    draw: Callable[[Run], "str | None"]


#: name (as used in ``Finding.plots``) -> plot; the order is the order of "All signals".
#: The one registry: the plot modules define functions, this names them.
PLOTS: dict[str, PlotSpec] = {
    "loss": PlotSpec("Loss", plot_loss),
    "accuracy": PlotSpec("Accuracy", plot_accuracy),
    "balance": PlotSpec("Predicted vs label share per class", plot_balance),
    "grad_norm": PlotSpec("Gradient norm per parameter", plot_grad_norm),
    "update_ratio": PlotSpec("Update / weight ratio per parameter", plot_update_ratio),
    "nonfinite": PlotSpec("Non-finite values", plot_nonfinite),
    "gates": PlotSpec("Gate saturation (first half of the run)", plot_gates),
    "cell_norm": PlotSpec("Cell state norm over time", plot_cell_norm),
    "time_grad": PlotSpec("Gradient reaching each time step, horizon marked", plot_time_grad),
    "activations": PlotSpec("Module outputs beyond sigmoid/tanh saturation (first sampled step)", plot_activations),
    "inputs": PlotSpec("Input scale over training (recurrent layers' and model's input)", plot_inputs),
    "lengths": PlotSpec("Sequence lengths fed to the recurrent layers, padded length marked", plot_lengths),
    "samples": PlotSpec("Training inputs by fingerprint: repeats pile up, colour is the target", plot_samples),
}


def render(name: str, run: Run) -> str | None:
    """Markup of plot ``name`` for ``run``; None for an unknown name or a run without the data."""
    spec = PLOTS.get(name)
    return spec.draw(run) if spec is not None else None
