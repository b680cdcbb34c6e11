"""Plots of the data as it reaches the model: its scale over the run (``inputs``), the lengths
of the sequences fed to recurrent layers (``lengths``), and whether samples repeat, contradict
each other or change when fetched again (``samples``). The cards of the data rules
(``rules/data.py``) show them. Registered in ``plots.PLOTS``.

Run directories are edited by hand and written by crashing programs, so these read every
column defensively: a missing column, a NaN, a string or a list of the wrong length leaves
out that value, never the report.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from matplotlib.ticker import MaxNLocator

from ..signals import LARGE_INPUT
from ..rules import REGISTRY
from ..rules.data import _FP_DIGITS
from ..run import Run
from .figure import (
    BAD,
    BASE,
    FIGSIZE,
    MUTED,
    PALETTE,
    column,
    handles,
    is_wide,
    label,
    legend_rows,
    new_figure,
    series,
    styled,
    to_markup,
)

GOOD = "#16a34a"


def _threshold(rule_id: str, name: str) -> float | None:
    """A rule's default threshold, read from its signature (None if the rule or name is gone)."""
    spec = REGISTRY.get(rule_id)
    value = spec.thresholds().get(name) if spec is not None else None
    return float(value) if isinstance(value, (int, float)) else None


def _modules(df: pd.DataFrame) -> pd.Series:
    """The ``module`` column as text ("?" where a damaged row lacks it)."""
    if "module" not in df:
        return pd.Series("?", index=df.index)
    return df["module"].astype(object).where(df["module"].notna(), "?").astype(str)


def _title(ax: Axes, text: str, bad: bool, room: int = 84) -> None:
    """A verdict above the axes, red when a data rule would see a problem; a long one is set
    smaller, then on two lines, so that it is not cut at the figure's edge (``room``: the
    characters that fit at the normal size)."""
    size = 8.5
    if len(text) > room:
        size = max(7.0, size * room / len(text))
        fits = int(room * 8.5 / size)
        if len(text) > fits and "; " in text:
            cut = text.rfind("; ", 0, fits)
            cut = cut if cut > 0 else text.find("; ")
            text = text[:cut + 1] + "\n" + text[cut + 2:]
    ax.set_title(text, color=BAD if bad else BASE, fontweight="bold" if bad else "normal", fontsize=size)


# ----------------------------------------------------------------------------- inputs
#: (column, legend name, colour); the line style tells the sources apart
INPUT_STATS = (
    ("abs_max", "max |x|", PALETTE[0]),
    ("feature_std_max", "largest feature std", PALETTE[1]),
    ("std", "std (all values)", PALETTE[2]),
)
SOURCE_STYLES = ("-", "--", ":", "-.")


def _input_sources(run: Run) -> list[tuple[str, pd.DataFrame]]:
    """(name, step x statistic table, the largest per step) for each recurrent module's input,
    then each model input; a source identical to an earlier one is merged into its name."""
    found: list[tuple[str, pd.DataFrame]] = []
    for signal in ("rnn_inputs", "inputs"):
        df = run[signal]
        if df.empty or "step" not in df:
            continue
        if "mode" in df and (df["mode"] == "train").any():
            df = df[df["mode"] == "train"]
        stats = pd.DataFrame({"step": column(df, "step"), "module": _modules(df)})
        for col, _, _ in INPUT_STATS:
            stats[col] = column(df, col)
        stats = stats[np.isfinite(stats["step"])]
        groups = [(m, rows) for m, rows in stats.groupby("module", sort=False)]
        for module, rows in groups:
            table = rows.drop(columns="module").groupby("step").max().sort_index()
            if not np.isfinite(table.to_numpy(float)).any():
                continue
            if signal == "rnn_inputs":
                name = f"'{label(module, 24)}' input"
            else:
                name = "model input" if len(groups) == 1 else f"model input ({label(module, 20)})"
            found.append((name, table))
    merged: list[tuple[str, pd.DataFrame]] = []
    for name, table in found:
        for i, (other, seen) in enumerate(merged):
            if table.index.equals(seen.index) and np.allclose(table.to_numpy(float), seen.to_numpy(float), rtol=1e-6, equal_nan=True):
                merged[i] = (f"{other} = {name}", seen)
                break
        else:
            merged.append((name, table))
    return merged


def _finite(values: np.ndarray) -> np.ndarray:
    return values[np.isfinite(values)]


def _input_verdict(run: Run) -> tuple[str, bool]:
    """What the data rules would say about the recurrent inputs, as a title."""
    r = run["rnn_inputs"]
    if r.empty:
        return "", False
    large_share = _threshold("unnormalized-inputs", "large_share")
    std_limit = _threshold("unnormalized-inputs", "feature_std_limit")
    mods = _modules(r)
    for module in dict.fromkeys(mods):
        rows = r[mods == module]
        std = column(rows, "std")
        if len(std) and (std == 0).all():
            zero = (column(rows, "all_zero") == 1).all()
            return f"input of '{label(module, 24)}' is {'all zeros' if zero else 'constant'} (std 0) in every sampled call", True
    for module in dict.fromkeys(mods):
        rows = r[mods == module]
        frac, fstd = _finite(column(rows, "frac_large")), _finite(column(rows, "feature_std_max"))
        over_share = large_share is not None and len(frac) > 0 and frac.mean() > large_share
        over_std = std_limit is not None and len(fstd) > 0 and fstd.max() > std_limit
        if over_share or over_std:
            share = f"{frac.mean():.0%} of values |x| > {LARGE_INPUT:g}" if len(frac) else ""
            widest = f"widest feature std {fstd.max():.3g}" if len(fstd) else ""
            return f"input of '{label(module, 24)}' far from unit scale: " + ", ".join(t for t in (share, widest) if t), True
    return "", False


@styled
def plot_inputs(run: Run) -> str | None:
    """Scale of the data over the run: per step the largest |x|, the widest feature's standard
    deviation and the overall standard deviation, for the input of each recurrent module and of
    the model; the unit-scale limit the data rules use is marked when the data comes near it."""
    sources = _input_sources(run)
    if not sources:
        return None
    shown, left_out = sources[: len(SOURCE_STYLES)], len(sources) - len(SOURCE_STYLES)
    fig, ax = new_figure()
    drawn = _finite(np.concatenate([t.to_numpy(float).ravel() for _, t in shown]))
    log = is_wide(drawn)
    for (name, table), ls in zip(shown, SOURCE_STYLES):
        x = table.index.to_numpy(float)
        for col, _, color in INPUT_STATS:
            y = table[col].to_numpy(float)
            if np.isfinite(y).any():
                series(ax, x, np.where(y > 0, y, np.nan) if log else y, color, None, smoothed=False, lw=1.3, ls=ls)
    stats = [(Line2D([], [], color=color, lw=1.6), stat) for _, stat, color in INPUT_STATS]
    rows = [(Line2D([], [], color=MUTED, lw=1.2, ls=ls), name) for (name, _), ls in zip(shown, SOURCE_STYLES)]
    std_limit = _threshold("unnormalized-inputs", "feature_std_limit")
    limits = {LARGE_INPUT: f"|x| > {LARGE_INPUT:g}: far from unit scale"}
    if std_limit is not None and std_limit != LARGE_INPUT:
        limits[std_limit] = f"feature std limit {std_limit:g}"
    for value, name in limits.items():
        if len(drawn) and drawn.max() >= value / 3:
            rows.append((ax.axhline(value, color=BAD, ls=(0, (4, 3)), lw=1), name))
    if log:
        ax.set_yscale("log")
    elif len(drawn) and drawn.min() >= 0:
        ax.set_ylim(bottom=-0.03 * max(drawn.max(), 1e-12))  # a line at 0 stays clear of the axis
    text, bad = _input_verdict(run)
    if left_out > 0:
        text = (text + "; " if text else "") + f"{left_out} more inputs not shown"
    if text:
        _title(ax, text, bad)
    ax.set_xlabel("step")
    ax.set_ylabel("input scale (max per step)")
    legend_rows(fig, [stats, rows], 3)
    return to_markup(fig, "scale of the model's and the recurrent layers' inputs over training steps")


# ----------------------------------------------------------------------------- lengths
#: histograms longer than this are summed into about this many bins
MAX_LENGTH_BINS = 200
#: lengths drawn as separate bars up to this many, as one outline beyond
MAX_BARS = 60


def _histogram(value: Any) -> np.ndarray | None:
    """One ``length_hist`` entry as counts (None when it is not a flat list of numbers)."""
    if value is None or isinstance(value, (str, bytes, dict)):
        return None
    try:
        h = np.asarray(value, dtype=float)
    except (TypeError, ValueError):
        return None
    if h.ndim != 1 or not len(h):
        return None
    return np.where(np.isfinite(h) & (h > 0), h, 0.0)


def _lengths(run: Run) -> list[dict[str, Any]]:
    """Per recurrent module: the summed histogram, the sequences that fill their padded length
    T, the padded time steps, and the T values seen."""
    r = run["rnn_inputs"]
    if r.empty or "length_hist" not in r:
        return []
    seq_len, packed, mods = column(r, "seq_len"), column(r, "packed"), _modules(r)
    out: dict[str, dict[str, Any]] = {}
    for h_raw, t_raw, p, module in zip(r["length_hist"], seq_len, packed, mods):
        h = _histogram(h_raw)
        if h is None or not h.sum() > 0:
            continue
        # the histogram counts lengths 0..T: a seq_len it cannot hold is a damaged one
        t = int(t_raw) if np.isfinite(t_raw) and 0 <= t_raw < len(h) else len(h) - 1
        m = out.setdefault(module, {"hist": np.zeros(0), "full": np.zeros(0), "pad": 0.0, "steps": 0.0, "T": set(), "packed": 0, "rows": 0})
        n = max(len(m["hist"]), len(h))
        m["hist"] = np.pad(m["hist"], (0, n - len(m["hist"]))) + np.pad(h, (0, n - len(h)))
        full = np.zeros(n)
        if t < len(h):
            full[t] = h[t]
        m["full"] = np.pad(m["full"], (0, n - len(m["full"]))) + full
        m["rows"] += 1
        m["T"].add(t)
        if p == 1:
            m["packed"] += 1
        elif t > 0:
            lengths = np.minimum(np.arange(len(h)), t)
            m["pad"] += float(np.sum(h * (t - lengths)))
            m["steps"] += float(h.sum() * t)
    return [{"module": k, **v} for k, v in out.items()]


def _rebinned(counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(edges, counts) with one bin per length, or wider bins for very long sequences."""
    n = len(counts)
    width = max(1, -(-n // MAX_LENGTH_BINS))
    if width == 1:
        return np.arange(n + 1) - 0.5, counts
    padded = np.pad(counts, (0, (-n) % width))
    return np.arange(0, len(padded) + 1, width) - 0.5, padded.reshape(-1, width).sum(axis=1)


def _length_bars(ax: Axes, counts: np.ndarray, color: str, name: str, **style: Any) -> None:
    """A histogram over lengths 0..n-1: separate bars while they are few, one outline beyond."""
    if len(counts) <= MAX_BARS:
        ax.bar(np.arange(len(counts)), counts, width=0.82, color=color, label=name, **style)
    else:
        edges, binned = _rebinned(counts)
        ax.stairs(binned, edges, fill=True, color=color, label=name, **style)


@styled
def plot_lengths(run: Run) -> str | None:
    """How many sequences had each length (the last non-zero time step) in the input of each
    recurrent module, with the padded length T marked: sequences that stop short of T end in
    padding, and a histogram that never reaches T is an exclusive upper bound at work."""
    groups = _lengths(run)[: len(PALETTE)]
    if not groups:
        return None
    fig, ax = new_figure()
    first = groups[0]
    packed = first["packed"] == first["rows"]
    if packed:
        _length_bars(ax, first["hist"], PALETTE[0], "packed sequences")
    else:
        _length_bars(ax, first["hist"], PALETTE[1], "shorter than T: padded")
        if first["full"].sum() > 0:
            _length_bars(ax, first["full"], PALETTE[0], "exactly T long")
    for i, g in enumerate(groups[1:], start=1):
        edges, counts = _rebinned(g["hist"])
        ax.stairs(counts, edges, color=PALETTE[(i + 1) % len(PALETTE)], lw=1.3, label=f"'{label(g['module'], 24)}'")
    ts = sorted(first["T"])
    for t in ts[-3:]:
        ax.axvline(t, color=BASE, ls="--", lw=1)
    ax.plot([], [], color=BASE, ls="--", lw=1, label=f"padded length T = {', '.join(str(t) for t in ts[-3:])}" + (" …" if len(ts) > 3 else ""))
    total = first["hist"].sum()
    longest = int(np.flatnonzero(first["hist"]).max())
    zero = first["hist"][0] / total if total else 0.0
    bad = False
    if zero >= 0.5:
        text = f"{zero:.0%} of sequences are all zeros"
        bad = True
    elif first["steps"] > 0:
        text = f"{first['pad'] / first['steps']:.0%} of time steps are padding (trailing zeros)"
        if first["full"].sum() == 0 and longest > 0:
            text = f"none reaches T = {max(first['T'])} (longest {longest}); " + text.replace(" (trailing zeros)", "")
            bad = True
    else:
        text = "packed: padding is not fed to the recurrence" if packed else ""
    if text:
        _title(ax, f"'{label(first['module'], 24)}': {text}", bad)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlim(-0.7, max(len(first["hist"]) - 1, max(ts)) + 0.7)
    ax.set_xlabel("sequence length (last non-zero time step)")
    ax.set_ylabel("sequences")
    ax.grid(axis="x", visible=False)
    entries = handles(ax)
    legend_rows(fig, [[e for e in entries if not isinstance(e[0], Line2D)] + [e for e in entries if isinstance(e[0], Line2D)]], 4)
    return to_markup(fig, "histogram of sequence lengths fed to the recurrent layers, padded length marked")


# ----------------------------------------------------------------------------- samples
#: distinct inputs drawn in the scatter at most (the repeated ones first)
MAX_SCATTER = 1000
#: targets told apart by colour and named in the legend; more get a colour scale
MAX_TARGET_COLOURS = 8


def _fingerprint_key(a: np.ndarray, b: np.ndarray | None = None) -> list[str]:
    """Fingerprints as text rounded as the data rules round them (identical samples that went
    through differently blocked matmuls still match)."""
    if b is None:
        return [f"{v:.{_FP_DIGITS}g}" for v in a]
    return [f"{u:.{_FP_DIGITS}g}/{v:.{_FP_DIGITS}g}" for u, v in zip(a, b)]


def _samples(run: Run) -> tuple[pd.DataFrame, pd.DataFrame] | None:
    """(training samples, evaluation samples) with finite input fingerprints and their keys."""
    s = run["samples"]
    if s.empty or not {"x1", "x2"} <= set(s.columns):
        return None
    df = pd.DataFrame({"x1": column(s, "x1"), "x2": column(s, "x2"), "y": column(s, "y"),
                       "mode": s["mode"].astype(str).to_numpy() if "mode" in s else "train"})
    df = df[np.isfinite(df["x1"]) & np.isfinite(df["x2"])]
    if df.empty:
        return None
    df["xk"] = _fingerprint_key(df["x1"].to_numpy(), df["x2"].to_numpy())
    df["yk"] = _fingerprint_key(df["y"].to_numpy())
    train = df[df["mode"] == "train"] if (df["mode"] == "train").any() else df
    return train, df[df["mode"] == "eval"] if train is not df else df.iloc[0:0]


#: (times drawn at least, marker size, legend name): a pile of duplicates is a big point
DRAWN_BUCKETS = ((1, 3.0, "once"), (2, 4.5, "2-3 times"), (4, 6.5, "4-9 times"), (10, 9.0, "10-29 times"),
                 (30, 12.0, "30-99 times"), (100, 15.0, "100+ times"))
VIRIDIS = ("#440154", "#46327e", "#365c8d", "#277f8e", "#1fa187", "#4ac16d", "#a0da39", "#fde725")


Entries = list[tuple[Any, str]]


def _target_colours(y_of_input: pd.Series, shown: pd.DataFrame) -> tuple[np.ndarray, Entries]:
    """A colour per shown input from its target fingerprint, and the legend entries: a palette
    colour each when there are few targets, else eight steps of a colour scale by rank."""
    ys = np.sort(y_of_input.dropna().unique())
    y = shown["y"].to_numpy(float)
    if len(ys) <= MAX_TARGET_COLOURS:
        index = {v: i for i, v in enumerate(ys)}
        entries = [(_dot(PALETTE[i]), f"target {i + 1}" if len(ys) > 1 else "one target") for i in range(len(ys))]
        return np.array([PALETTE[index[v]] if v in index else MUTED for v in y], dtype=object), entries
    ranks = np.searchsorted(ys, y) / max(1, len(ys) - 1)  # by rank: one outlier does not flatten the scale
    entries = [(_dot(VIRIDIS[3]), f"colour: target value ({len(ys)} distinct)")]
    return np.array([VIRIDIS[min(7, int(r * 8))] if np.isfinite(v) else MUTED for r, v in zip(ranks, y)], dtype=object), entries


def _dot(color: str, ms: float = 5.0, **style: Any) -> Line2D:
    return Line2D([], [], ls="none", marker="o", ms=ms, color=color, **style)


def _whitened(per: pd.DataFrame, *others: pd.DataFrame) -> list[np.ndarray]:
    """(x1, x2) of each table on the principal axes of ``per``'s points, in units of their
    spread: two random projections of the same inputs are strongly correlated, and drawn
    as they are the points would line up on a diagonal."""
    pts = per[["x1", "x2"]].to_numpy(float)
    centre = pts.mean(axis=0)
    basis = np.eye(2)
    if len(pts) >= 3:
        values, vectors = np.linalg.eigh(np.cov((pts - centre).T))
        order = np.argsort(values)[::-1]
        scale = np.sqrt(np.clip(values[order], 0, None))
        if np.all(np.isfinite(vectors)) and np.all(scale > 0):
            basis = vectors[:, order] / scale
    return [(t[["x1", "x2"]].to_numpy(float) - centre) @ basis for t in (per, *others)]


def _draw_samples(ax: Axes, train: pd.DataFrame, evals: pd.DataFrame, dataset_size: float | None, compact: bool = False) -> list[Entries]:
    """The scatter of distinct training inputs; returns the legend rows."""
    per = train.groupby("xk", sort=False).agg(x1=("x1", "first"), x2=("x2", "first"), y=("y", "first"),
                                              n=("x1", "size"), targets=("yk", "nunique"))
    n, distinct = len(train), len(per)
    repeated = per[per["n"] >= 2]
    mixed = repeated[repeated["targets"] > 1]
    # what is drawn: every repeated input (most drawn first), then a spread of the others
    once = per[per["n"] < 2]
    room = max(0, MAX_SCATTER - len(repeated))
    if len(once) > room:
        once = once.iloc[np.linspace(0, len(once) - 1, room).astype(int)] if room else once.iloc[0:0]
    shown = pd.concat([repeated.sort_values("n", ascending=False).head(MAX_SCATTER), once])
    ev = evals.drop_duplicates("xk").head(MAX_SCATTER // 3)
    xy, ev_xy = _whitened(shown, ev)
    colour, targets = _target_colours(per["y"], shown)
    colour[(shown["targets"] > 1).to_numpy()] = BAD
    bucket = np.searchsorted([b for b, _, _ in DRAWN_BUCKETS], shown["n"].to_numpy(float), side="right") - 1
    # one marker line per (size, colour): the SVG holds one marker path and a <use> per point;
    # the biggest first, so that single draws stay visible on top of the piles
    for k in sorted(set(bucket), reverse=True):
        for c in dict.fromkeys(colour[bucket == k]):
            pick = (bucket == k) & (colour == c)
            ax.plot(xy[pick, 0], xy[pick, 1], "o", ms=DRAWN_BUCKETS[k][1], color=c, alpha=0.9 if c == BAD else 0.7,
                    mec="white" if c == BAD else "none", mew=0.5)
    marks: Entries = []
    if (colour == BAD).any():
        marks.append((_dot(BAD, mec="white"), "input seen with 2+ targets"))
    if len(ev):
        ax.plot(ev_xy[:, 0], ev_xy[:, 1], "o", ms=5, mfc="none", mec=BASE, mew=0.8)
        marks.append((_dot("none", mec=BASE, mew=0.8), "evaluation input"))
    if len(set(bucket)) > 1:
        for k in (min(bucket), max(bucket)):
            marks.append((_dot(MUTED, DRAWN_BUCKETS[k][1], alpha=0.7), f"drawn {DRAWN_BUCKETS[k][2]}"))
    pool = min(n, int(dataset_size)) if dataset_size else n
    unique_share = _threshold("duplicate-samples", "max_unique_share")
    min_drawn = _threshold("duplicate-samples", "min_drawn") or 0
    bad = unique_share is not None and n >= min_drawn and distinct < unique_share * pool
    text = f"{distinct} distinct of {n} inputs drawn ({distinct / n:.0%})"
    if len(mixed):
        text += f"; {len(mixed)} of {len(repeated)} repeated inputs came with 2+ targets"
        mixed_share = _threshold("inconsistent-labels", "min_share")
        bad |= mixed_share is not None and len(mixed) >= mixed_share * len(repeated)
    if len(ev):
        ev_keys = set(evals["xk"])
        text += f"; {len(ev_keys & set(per.index)) / len(ev_keys):.0%} of eval inputs in training"
    _title(ax, text, bad, room=60 if compact else 84)
    ax.set_xlabel("input fingerprint, principal axis 1" + (f" ({len(shown)} of {distinct} shown)" if len(shown) < distinct else ""))
    ax.set_ylabel("principal axis 2")
    return [targets, marks]


def _refetch(run: Run) -> tuple[int, int, int] | None:
    """(indices fetched twice, same input, same label)."""
    r = run["refetch"]
    if r.empty or "same_label" not in r:
        return None
    same_label, same_input = column(r, "same_label"), column(r, "same_input")
    ok = np.isfinite(same_label)
    if not ok.any():
        return None
    return int(ok.sum()), int(np.sum(same_input[ok] == 1)), int(np.sum(same_label[ok] == 1))


def _draw_refetch(ax: Axes, refetch: tuple[int, int, int]) -> Entries:
    """Bars of the indices whose second fetch gave the same input / label; returns the legend row."""
    n, inputs, labels = refetch
    rows = [("same label", labels), ("same input", inputs)]
    y = np.arange(len(rows))
    same = np.array([k / n for _, k in rows])
    ax.barh(y, same, color=GOOD, height=0.55)
    ax.barh(y, 1 - same, left=same, color=BAD, height=0.55)
    for i, (_, k) in enumerate(rows):
        ax.text(0.5, i, f"{k} of {n}", ha="center", va="center", color="white", fontsize=8, fontweight="bold")
    ax.set_yticks(y, [r for r, _ in rows])
    ax.set_xlim(0, 1)
    ax.set_xticks([0, 0.5, 1], ["0", "50%", "100%"])
    ax.grid(False)
    _title(ax, "indices fetched twice", labels < n, room=24)
    return [(Patch(color=GOOD), "index gave the same again"), (Patch(color=BAD), "changed")]


@styled
def plot_samples(run: Run) -> str | None:
    """What the fingerprinted training samples look like: each distinct input is a point at its
    two fingerprints (random projections, on their principal axes), sized by how often it was
    drawn and coloured by its target — duplicates pile up into big points, an input seen with
    different targets is red, evaluation inputs are ringed. Beside it, when a map-style Dataset
    was probed, how many indices gave the same input and label when fetched again."""
    samples, refetch = _samples(run), _refetch(run)
    if samples is None and refetch is None:
        return None
    sizes = column(run["datasets"], "size") if run.has("datasets") else np.array([])
    size = float(sizes[np.isfinite(sizes)].max()) if np.isfinite(sizes).any() else None
    if samples is not None and refetch is not None:
        fig = Figure(figsize=(FIGSIZE[0], FIGSIZE[1] + 0.3), layout="constrained")
        left, right = fig.subplots(1, 2, gridspec_kw={"width_ratios": [2.4, 1]})
        rows = _draw_samples(left, *samples, size, compact=True) + [_draw_refetch(right, refetch)]
    elif samples is not None:
        fig, ax = new_figure()
        rows = _draw_samples(ax, *samples, size)
    else:
        fig, ax = new_figure((FIGSIZE[0], 1.5))
        rows = [_draw_refetch(ax, refetch)]  # type: ignore[arg-type]
    legend_rows(fig, rows, 3)
    return to_markup(fig, "training inputs by fingerprint, sized by repeats and coloured by target; dataset re-fetch check")
