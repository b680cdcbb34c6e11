"""Plots of what happens inside the recurrence: gate saturation, ‖c_t‖ over t, the
gradient profile through time with its horizon, and the per-module activation statistics
that stand in for the gates of hand-written cells. Registered in ``plots.PLOTS``."""

from __future__ import annotations

import numpy as np
import pandas as pd

from ..rules._common import first_half, horizon, mean_profile, second_half
from ..run import Run
from ..signals import LARGE_PREACTIVATION
from .figure import BAD, PALETTE, label, legend, new_figure, numeric, styled, to_markup

#: the horizon is marked at the rule's threshold: 1 % of the peak
HORIZON_EPS = 1e-2


def _profile(series: pd.Series) -> np.ndarray | None:
    """``mean_profile`` of the rows that hold a profile (a damaged record's others are None)."""
    rows = series[series.map(lambda v: isinstance(v, (list, tuple, np.ndarray)) and len(v) > 0)]
    return mean_profile(rows) if not rows.empty else None


def _keyed(df: pd.DataFrame, keys: tuple[str, ...], fill: object = 0) -> pd.DataFrame:
    """Group keys present in every row: a missing column or value becomes ``fill``."""
    return df.assign(**{k: df[k].astype(object).where(df[k].notna(), fill) if k in df else fill for k in keys})


def _int(value: object) -> int:
    try:
        return int(value)  # type: ignore[call-overload]
    except (TypeError, ValueError, OverflowError):
        return 0


@styled
def plot_time_grad(run: Run) -> str | None:
    """Mean ‖∂L/∂x_t‖ over t (log scale) for each recurrent module in the second half of the
    run (what vanishing-gradient-through-time judges), horizon marked."""
    tg = run["time_grad"]
    if tg.empty or "grad_norm" not in tg:
        return None
    own = _keyed(tg[tg["backward_step"] == tg["step"]] if "backward_step" in tg else tg, ("module",), "?")
    fig, ax = new_figure()
    drawn = False
    for i, (module, rows) in enumerate(own.groupby("module", sort=False)):
        prof = _profile(second_half(rows)["grad_norm"])  # the half vanishing-gradient judges
        if prof is None or not np.isfinite(prof).any() or np.nanmax(prof) <= 0:
            continue
        color = PALETTE[i % len(PALETTE)]
        t = np.arange(len(prof))
        ax.plot(t, np.where(prof > 0, prof, np.nan), color=color, lw=1.5, label=label(module, 32))
        h = horizon(prof, HORIZON_EPS)
        ax.axvline(len(prof) - h, color=color, ls="--", lw=1, label=f"horizon: {h} of {len(prof)} steps")
        drawn = True
    if not drawn:
        return None
    ax.set_yscale("log")
    ax.set_xlabel("time step t of the input")
    ax.set_ylabel("‖∂L/∂x_t‖")
    legend(ax)
    return to_markup(fig, "gradient reaching each time step")


@styled
def plot_cell_norm(run: Run) -> str | None:
    """Mean ‖c_t‖ over t per LSTM layer (sampled steps of the first half of the run)."""
    cell = run["cell"]
    if cell.empty or "c_norm" not in cell:
        return None
    cell = _keyed(cell, ("layer", "direction")).pipe(_keyed, ("module",), "?")
    fig, ax = new_figure()
    for i, ((module, layer, direction), rows) in enumerate(cell.groupby(["module", "layer", "direction"], sort=False)):
        prof = _profile(first_half(rows)["c_norm"])
        if prof is None:
            continue
        name = f"{label(module, 24)} l{_int(layer)}{' reverse' if direction else ''}"
        ax.plot(np.arange(len(prof)), prof, color=PALETTE[i % len(PALETTE)], lw=1.5, label=name)
    ax.set_xlabel("time step t")
    ax.set_ylabel("mean ‖c_t‖")
    legend(ax)
    return to_markup(fig, "cell state norm over time")


@styled
def plot_gates(run: Run) -> str | None:
    """Share of each gate's values in the flat ends (low / high), first half of the run."""
    g = run["gates"]
    if g.empty or not {"frac_low", "frac_high"} <= set(g.columns):
        return None
    g = _keyed(first_half(g), ("layer", "direction")).pipe(_keyed, ("module", "gate"), "?")
    g = g.assign(frac_low=numeric(g["frac_low"]), frac_high=numeric(g["frac_high"]))
    keys = [k for k, _ in g.groupby(["module", "layer", "direction", "gate"], sort=False)]
    means = g.groupby(["module", "layer", "direction", "gate"], sort=False)[["frac_low", "frac_high"]].mean()
    names = [f"{label(m, 14)} l{_int(layer)}{'r' if d else ''} {label(gate, 8)}" for m, layer, d, gate in keys]
    low = np.nan_to_num(means["frac_low"].to_numpy(float))
    high = np.nan_to_num(means["frac_high"].to_numpy(float))
    fig, ax = new_figure()
    x = np.arange(len(names))
    ax.bar(x, low, color=PALETTE[0], label="low end (σ < 0.05, tanh < -0.95)")
    ax.bar(x, high, bottom=low, color=PALETTE[1], label="high end (σ > 0.95, tanh > 0.95)")
    ax.set_xticks(x, names, rotation=45 if len(names) > 6 else 0, ha="right" if len(names) > 6 else "center", fontsize=7)
    ax.set_ylim(0, 1)
    ax.set_ylabel("share saturated")
    legend(ax)
    return to_markup(fig, "gate saturation")


#: modules shown in the activation plot (the most saturated first)
ACTIVATION_MODULES = 16


@styled
def plot_activations(run: Run) -> str | None:
    """Per module, at the first sampled step: share of finite outputs with |y| beyond
    LARGE_PREACTIVATION, and share of non-finite outputs."""
    acts = run["activations"]
    if acts.empty or "frac_large" not in acts:
        return None
    rows = _keyed(acts[acts["step"] == acts["step"].min()], ("module",), "?")
    rows["frac_large"] = np.nan_to_num(numeric(rows["frac_large"]))
    rows["frac_nonfinite"] = np.nan_to_num(numeric(rows["frac_nonfinite"])) if "frac_nonfinite" in rows else 0.0
    rows = rows.sort_values("frac_large", ascending=False).head(ACTIVATION_MODULES)[::-1]
    fig, ax = new_figure()
    y = np.arange(len(rows))
    ax.barh(y, rows["frac_large"], color=PALETTE[1], label=f"|output| > {LARGE_PREACTIVATION:g} (of finite)")
    ax.barh(y, rows["frac_nonfinite"], left=0, height=0.35, color=BAD, label="non-finite")
    ax.set_yticks(y, [label(str(m), 28) for m in rows["module"]], fontsize=7)
    ax.set_xlim(0, 1)
    ax.set_xlabel(f"share of outputs, step {int(rows['step'].iloc[0])}")
    legend(ax)
    return to_markup(fig, "activation statistics per module")
