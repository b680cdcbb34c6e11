"""Plots for the HTML report: matplotlib ``Figure`` objects rendered to inline SVG text.

Why the Figure API and never pyplot: pyplot keeps global state (current figure, backend)
that would leak between reports and into the user's own process; a ``Figure`` is an
ordinary object that is garbage-collected when the function returns.

Why SVG: text stays sharp and selectable, prints well, and needs no external file. Long
series are binned to at most ``MAX_POINTS`` points (mean line plus a min-max band, so a
spike in a 20 000-step run is still visible); a figure whose SVG would still exceed
``SVG_LIMIT`` bytes is embedded as a base64 PNG instead.

Every plot function takes a ``Run`` and returns the markup, or ``None`` when the run has
no data for it. Adding a plot is one entry in ``PLOTS``; finding names that are not in
``PLOTS`` are ignored by the report.
"""

from __future__ import annotations

import base64
import functools
import io
import math
import re
from dataclasses import dataclass
from typing import Any, Callable, Iterable

import matplotlib
import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from ..rules._common import CLASS_LOSSES, label_stats, loss_kind, target_moments, targets_are_labels
from ..run import Run

#: points per plotted series; longer series are binned (mean line + min/max band)
MAX_POINTS = 1000
#: an SVG larger than this (bytes) is replaced by a PNG of the same figure
SVG_LIMIT = 600_000
#: lines per plot before the rest are left out (named in the caption)
MAX_LINES = 10

FIGSIZE = (6.0, 2.9)
PALETTE = ("#2563eb", "#ea580c", "#16a34a", "#9333ea", "#0891b2", "#ca8a04", "#db2777", "#4b5563", "#65a30d", "#7c3aed")
BAD = "#dc2626"
BASE = "#111827"
_RC: dict[str, Any] = {
    "svg.fonttype": "none",  # text as <text>: smaller, selectable, no glyph outlines
    "svg.hashsalt": "rnndoctor",  # deterministic ids: the same run gives the same file
    "font.size": 9,
    "font.family": "sans-serif",
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "grid.color": "#e5e7eb",
    "grid.linewidth": 0.6,
    "axes.edgecolor": "#9ca3af",
    "axes.titlesize": 9,
    "axes.titleweight": "bold",
    "axes.titlelocation": "left",
    "legend.fontsize": 8,
    "legend.frameon": False,
}


# ----------------------------------------------------------------------------- helpers
def label(text: object, limit: int = 40) -> str:
    """User text made safe for matplotlib: no mathtext (``$``), not hidden by a leading ``_``."""
    s = str(text)
    s = s if len(s) <= limit else s[: limit - 1] + "…"
    s = s.replace("$", r"\$")
    return " " + s if s.startswith("_") else s


def _numeric(series: pd.Series) -> np.ndarray:
    return pd.to_numeric(series, errors="coerce").to_numpy(dtype=float)


def binned(x: np.ndarray, y: np.ndarray, max_points: int = MAX_POINTS) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``(x, mean, min, max)`` with at most ``max_points`` rows; NaN/Inf are ignored per bin."""
    x = np.asarray(x, dtype=float)
    y = np.where(np.isfinite(y), y, np.nan)
    if len(x) <= max_points:
        return x, y, y, y
    bins = (np.arange(len(x)) * max_points) // len(x)
    g = pd.DataFrame({"b": bins, "x": x, "y": y}).groupby("b")
    return (g["x"].mean().to_numpy(), g["y"].mean().to_numpy(), g["y"].min().to_numpy(), g["y"].max().to_numpy())


def _smooth(y: np.ndarray) -> np.ndarray | None:
    """A rolling mean for short, noisy series (None when too short to be worth it)."""
    if len(y) < 40:
        return None
    return pd.Series(y).rolling(max(5, len(y) // 40), min_periods=1, center=True).mean().to_numpy()


def _series(ax: Axes, x: np.ndarray, y: np.ndarray, color: str, name: str | None, *, smooth: bool = True, lw: float = 1.4) -> None:
    """One series: binned when long (with a min-max band if ``smooth``), else raw plus a rolling mean.

    Many-line plots pass ``smooth=False``: ten overlapping bands would hide each other and
    double the SVG; their spikes are shown by a separate max-per-bin line instead.
    """
    bx, mean, lo, hi = binned(x, y)
    if len(bx) < len(x):
        if smooth:
            ax.fill_between(bx, lo, hi, color=color, alpha=0.18, linewidth=0)
        ax.plot(bx, mean, color=color, lw=lw, label=name)
        return
    sm = _smooth(mean) if smooth else None
    if sm is None:
        ax.plot(bx, mean, color=color, lw=lw, label=name, marker="o" if len(bx) < 3 else None, ms=3)
    else:
        ax.plot(bx, mean, color=color, lw=0.7, alpha=0.35)
        ax.plot(bx, sm, color=color, lw=lw, label=name)


def _rug(ax: Axes, steps: Iterable[float], name: str) -> None:
    """Red ticks along the bottom at the given steps (binned so 20 000 NaNs stay small)."""
    s = np.unique(np.asarray(list(steps), dtype=float))
    if not len(s):
        return
    if len(s) > MAX_POINTS:
        s = s[:: math.ceil(len(s) / MAX_POINTS)]
    ax.plot(s, np.zeros_like(s), "|", color=BAD, ms=9, mew=1.2, transform=ax.get_xaxis_transform(), label=name, clip_on=False)


def _log_if_wide(ax: Axes, values: np.ndarray) -> None:
    v = values[np.isfinite(values)]
    if len(v) and v.min() > 0 and v.max() / v.min() > 100:
        ax.set_yscale("log")


def _figure() -> tuple[Figure, Axes]:
    fig = Figure(figsize=FIGSIZE, layout="constrained")
    return fig, fig.subplots()


def _legend(ax: Axes) -> None:
    """One legend above the axes, in as many columns as the names allow (the plot keeps its width)."""
    handles, names = ax.get_legend_handles_labels()
    if handles:
        cols = max(1, min(len(names), 5, 84 // (max(len(n) for n in names) + 6)))
        ax.figure.legend(handles, names, loc="outside upper left", ncols=cols, handlelength=1.6, columnspacing=1.2)


_SVG_META = re.compile(r"<metadata>.*?</metadata>\s*", re.S)
_SVG_SIZE = re.compile(r'\s(?:width|height)="[^"]*"')


def _styled(draw: Callable[[Run], "str | None"]) -> Callable[[Run], "str | None"]:
    """Run a plot function under the report's matplotlib style (rcParams are read at draw time)."""

    @functools.wraps(draw)
    def wrapper(run: Run) -> str | None:
        with matplotlib.rc_context(_RC):
            return draw(run)

    return wrapper


def to_markup(fig: Figure, alt: str) -> str:
    """The figure as inline SVG (size set by CSS), or as a PNG <img> when the SVG is huge."""
    buf = io.StringIO()
    fig.savefig(buf, format="svg", metadata={"Date": None})
    text = buf.getvalue()
    start = text.index("<svg")
    end = text.index(">", start)
    svg = _SVG_SIZE.sub("", text[start:end]) + _SVG_META.sub("", text[end:], count=1)
    if len(svg) <= SVG_LIMIT:
        return svg
    png = io.BytesIO()
    fig.savefig(png, format="png", dpi=130)
    data = base64.b64encode(png.getvalue()).decode("ascii")
    return f'<img alt="{alt}" src="data:image/png;base64,{data}">'


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
@_styled
def plot_loss(run: Run) -> str | None:
    """Training loss (eval points if any) against what ignoring the input would reach."""
    steps = run["steps"]
    if steps.empty or "loss" not in steps:
        return None
    train = run.train_steps()
    if train.empty:
        return None
    fig, ax = _figure()
    x, y = _numeric(train["step"]), _numeric(train["loss"])
    kind = loss_kind(run)
    finite = np.isfinite(y)
    if finite.any():
        _series(ax, x, y, PALETTE[0], "train loss")
        _log_if_wide(ax, y)
    else:
        ax.text(0.5, 0.5, "every loss value was NaN/Inf", transform=ax.transAxes, ha="center", va="center", color=BAD, fontsize=10)
        ax.set_yticks([])
    evals = steps[steps["mode"] == "eval"] if "mode" in steps else steps.iloc[0:0]
    ey = _numeric(evals["loss"]) if not evals.empty else np.array([])
    if np.isfinite(ey).any():
        ax.plot(_numeric(evals["step"]), ey, "o", color=PALETTE[1], ms=3, label="eval loss")
    ref = _reference_loss(run, kind)
    if ref is not None and finite.any():
        ax.axhline(ref[0], color=BASE, ls="--", lw=1, label=ref[1])
    _rug(ax, x[~finite], "non-finite loss")
    ax.set_xlabel("step")
    ax.set_ylabel(f"loss ({kind})" if kind else "loss")
    _legend(ax)
    return to_markup(fig, "loss over training steps")


def _reference_loss(run: Run, kind: str | None) -> tuple[float, str] | None:
    """The loss of the best input-independent predictor: label entropy, or target variance."""
    if kind in CLASS_LOSSES:
        stats = label_stats(run)
        if stats is not None and stats.total > 0:
            return stats.entropy, f"label entropy {stats.entropy:.3g}"
    elif kind == "mse":
        moments = target_moments(run)
        if moments is not None and moments[1] > 0:
            return moments[1], f"target variance {moments[1]:.3g}"
    return None


@_styled
def plot_accuracy(run: Run) -> str | None:
    """Accuracy (correct/total) against chance 1/K and the majority-class share."""
    train = run.train_steps()
    if train.empty or "correct" not in train or "total" not in train or not targets_are_labels(run):
        return None
    total = _numeric(train["total"])
    if not np.nansum(total) > 0:
        return None
    acc = _numeric(train["correct"]) / np.where(total > 0, total, np.nan)
    fig, ax = _figure()
    x = _numeric(train["step"])
    _series(ax, x, acc, PALETTE[0], "train accuracy")
    steps = run["steps"]
    evals = steps[(steps["mode"] == "eval") & (pd.to_numeric(steps["total"], errors="coerce") > 0)] if "mode" in steps else steps.iloc[0:0]
    if not evals.empty:
        ax.plot(_numeric(evals["step"]), _numeric(evals["correct"]) / _numeric(evals["total"]), "o", color=PALETTE[1], ms=3, label="eval accuracy")
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
    _legend(ax)
    return to_markup(fig, "accuracy over training steps")


@_styled
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
    fig, ax = _figure()
    x = p.index.to_numpy(dtype=float)
    for i, c in enumerate(sorted(classes, key=lambda c: float(c) if _isnum(c) else 0.0)):
        color = PALETTE[i % len(PALETTE)]
        _series(ax, x, p_share[c].to_numpy(float), color, f"class {label(c)}")
        bx, mean, _, _ = binned(x, l_share[c].to_numpy(float))
        sm = _smooth(mean) if len(bx) == len(x) else None
        ax.plot(bx, sm if sm is not None else mean, color=color, ls="--", lw=1.1)
    ax.plot([], [], color="#6b7280", ls="-", label="predicted share")
    ax.plot([], [], color="#6b7280", ls="--", label="label share")
    ax.set_ylim(-0.02, 1.02)
    ax.set_xlabel("step")
    ax.set_ylabel("share of the batch")
    _legend(ax)
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
    fig, ax = _figure()
    x = table.index.to_numpy(dtype=float)
    for i, c in enumerate(cols):
        y = table[c].to_numpy(float)
        _series(ax, x, np.where(y > 0, y, np.nan), PALETTE[i % len(PALETTE)], label(c, 32), smooth=False, lw=0.9)
    ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel(ylabel)
    if left_out:
        ax.set_title(f"the {len(cols)} largest of {len(cols) + left_out} parameters", fontweight="normal", fontsize=8)
    return fig, ax


@_styled
def plot_grad_norm(run: Run) -> str | None:
    """Gradient L2 norm per parameter (log scale), with the global norm and non-finite steps."""
    made = _per_param_log(run, "params", "grad_norm", "gradient norm", "gradient norms")
    if made is None:
        return None
    fig, ax = made
    train = run.train_steps()
    if "grad_norm" in train:
        x, g = _numeric(train["step"]), _numeric(train["grad_norm"])
        drawn = np.isfinite(g) & (g > 0)  # sampled after the dense start: a line through recorded steps
        if drawn.any():
            bx, mean, _, hi = binned(x[drawn], g[drawn])
            ax.plot(bx, hi if len(bx) < drawn.sum() else mean, color=BASE, lw=1.6, label="total (max per bin)" if len(bx) < drawn.sum() else "total")
        _rug(ax, x[np.isin(x, _grad_steps(run)) & ~np.isfinite(g)], "non-finite")
    _legend(ax)
    return to_markup(fig, "gradient norms per parameter")


def _grad_steps(run: Run) -> np.ndarray:
    """Steps whose gradient norms were recorded (they are sampled after the run's start;
    a missing value is not a non-finite one)."""
    params = run["params"]
    if params.empty or "step" not in params:
        return np.array([])
    if "grad_lost" in params:
        params = params[_numeric(params["grad_lost"]) != 1]
    return np.unique(_numeric(params["step"]))


@_styled
def plot_update_ratio(run: Run) -> str | None:
    """|Δw|/|w| per parameter (log scale) against the usual 1e-5…1e-1 range (target ~1e-3)."""
    made = _per_param_log(run, "updates", "update_ratio", "|Δw| / |w|", "update to weight ratios")
    if made is None:
        return None
    fig, ax = made
    ax.axhspan(1e-5, 1e-1, color="#16a34a", alpha=0.07, lw=0, label="usual range 1e-5…1e-1")
    ax.axhline(1e-3, color="#16a34a", ls=":", lw=1)
    _legend(ax)
    return to_markup(fig, "update to weight ratios per parameter")


def _bad_steps(run: Run) -> dict[str, np.ndarray]:
    """Row name -> steps where that quantity was non-finite (loss, gradients, weights, modules)."""
    rows: dict[str, np.ndarray] = {}
    train = run.train_steps()
    if "loss" in train:
        bad = ~np.isfinite(_numeric(train["loss"]))
        if "loss_finite" in train:
            bad |= _numeric(train["loss_finite"]) == 0
        rows["loss"] = _numeric(train["step"])[bad]
    for name, signal, column in (("gradients", "params", "grad_norm"), ("weights", "updates", "weight_norm")):
        df = run[signal]
        if not df.empty and column in df:
            v = _numeric(df[column])
            if signal == "params" and "grad_none" in df:
                v = np.where(_numeric(df["grad_none"]) == 1, 0.0, v)
            if signal == "params" and "grad_lost" in df:
                v = np.where(_numeric(df["grad_lost"]) == 1, 0.0, v)
            rows[name] = np.unique(_numeric(df["step"])[~np.isfinite(v)])
    nf = run["nonfinite"]
    if not nf.empty and "module" in nf:
        nf = nf[nf["module"].notna()]
        for module, group in list(nf.groupby(nf["module"].astype(str), sort=False))[:6]:
            rows[f"module {label(module, 28)}"] = _numeric(group["step"])
    return {k: v for k, v in rows.items() if len(v)}


def _runs(steps: np.ndarray, span: float) -> list[tuple[float, float]]:
    """Steps merged into (start, width) bars: at most MAX_POINTS, none thinner than span/250."""
    s = np.unique(steps)
    w = float(max(1, math.ceil(span / MAX_POINTS)))
    s = np.unique(np.floor(s / w) * w)
    groups = np.split(s, np.flatnonzero(np.diff(s) > w) + 1)
    least = max(0.8 * w, span / 250)
    return [(float(g[0]) - least / 2, max(float(g[-1] - g[0]) + 0.8 * w, least)) for g in groups]


@_styled
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


#: name (as used in ``Finding.plots``) -> plot; the order is the order of "All signals"
PLOTS: dict[str, PlotSpec] = {
    "loss": PlotSpec("Loss", plot_loss),
    "accuracy": PlotSpec("Accuracy", plot_accuracy),
    "balance": PlotSpec("Predicted vs label share per class", plot_balance),
    "grad_norm": PlotSpec("Gradient norm per parameter", plot_grad_norm),
    "update_ratio": PlotSpec("Update / weight ratio per parameter", plot_update_ratio),
    "nonfinite": PlotSpec("Non-finite values", plot_nonfinite),
}

from .plots_rnn import plot_activations, plot_cell_norm, plot_gates, plot_time_grad  # noqa: E402  (they use the helpers above)

PLOTS.update(
    gates=PlotSpec("Gate saturation (first half of the run)", plot_gates),
    cell_norm=PlotSpec("Cell state norm over time", plot_cell_norm),
    time_grad=PlotSpec("Gradient reaching each time step, horizon marked", plot_time_grad),
    activations=PlotSpec("Module outputs beyond sigmoid/tanh saturation (first sampled step)", plot_activations),
)


def render(name: str, run: Run) -> str | None:
    """Markup of plot ``name`` for ``run``; None for an unknown name or a run without the data."""
    spec = PLOTS.get(name)
    return spec.draw(run) if spec is not None else None
