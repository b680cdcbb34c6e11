"""What every plot module shares: the report's matplotlib style, its palette, and the helpers
that turn a ``Figure`` into inline markup and keep long or damaged series small and drawable.

The plot modules (``plots``, ``plots_rnn``, ``plots_data``) import from here and never from
each other; ``plots.PLOTS`` is the one registry that names them all.

Why the Figure API and never pyplot: pyplot keeps global state (current figure, backend)
that would leak between reports and into the user's own process; a ``Figure`` is an
ordinary object that is garbage-collected when the function returns.

Why SVG: text stays sharp and selectable, prints well, and needs no external file. Long
series are binned to at most ``MAX_POINTS`` points (mean line plus a min-max band, so a
spike in a 20 000-step run is still visible); a figure whose SVG would still exceed
``SVG_LIMIT`` bytes is embedded as a base64 PNG instead.
"""

from __future__ import annotations

import base64
import functools
import html
import io
import math
import re
from typing import Any, Callable, Iterable

import matplotlib
import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from ..run import Run
from .tidy import tidy

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
MUTED = "#6b7280"
RC: dict[str, Any] = {
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


def label(text: object, limit: int = 40) -> str:
    """User text made safe for matplotlib: no mathtext (``$``), not hidden by a leading ``_``."""
    s = str(text)
    s = s if len(s) <= limit else s[: limit - 1] + "…"
    s = s.replace("$", r"\$")
    return " " + s if s.startswith("_") else s


def numeric(series: pd.Series) -> np.ndarray:
    """A column as floats; what is not a number becomes NaN."""
    return pd.to_numeric(series, errors="coerce").to_numpy(dtype=float)


def column(df: pd.DataFrame, name: str) -> np.ndarray:
    """``numeric(df[name])``, all NaN when a damaged record lacks the column."""
    return numeric(df[name]) if name in df else np.full(len(df), np.nan)


def binned(x: np.ndarray, y: np.ndarray, max_points: int = MAX_POINTS) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``(x, mean, min, max)`` with at most ``max_points`` rows; NaN/Inf are ignored per bin."""
    x = np.asarray(x, dtype=float)
    y = np.where(np.isfinite(y), y, np.nan)
    if len(x) <= max_points:
        return x, y, y, y
    bins = (np.arange(len(x)) * max_points) // len(x)
    g = pd.DataFrame({"b": bins, "x": x, "y": y}).groupby("b")
    return (g["x"].mean().to_numpy(), g["y"].mean().to_numpy(), g["y"].min().to_numpy(), g["y"].max().to_numpy())


def smooth(y: np.ndarray) -> np.ndarray | None:
    """A rolling mean for short, noisy series (None when too short to be worth it)."""
    if len(y) < 40:
        return None
    return pd.Series(y).rolling(max(5, len(y) // 40), min_periods=1, center=True).mean().to_numpy()


def series(ax: Axes, x: np.ndarray, y: np.ndarray, color: str, name: str | None, *, smoothed: bool = True, lw: float = 1.4, **style: Any) -> None:
    """One series: binned when long (with a min-max band if ``smoothed``), else raw plus a rolling mean.

    Many-line plots pass ``smoothed=False``: ten overlapping bands would hide each other and
    double the SVG; their spikes are shown by a separate max-per-bin line instead. ``style``
    (``ls``, ``alpha``) goes to the main line.
    """
    bx, mean, lo, hi = binned(x, y)
    if len(bx) < len(x):
        if smoothed:
            ax.fill_between(bx, lo, hi, color=color, alpha=0.18, linewidth=0)
        ax.plot(bx, mean, color=color, lw=lw, label=name, **style)
        return
    sm = smooth(mean) if smoothed else None
    if sm is None:
        ax.plot(bx, mean, color=color, lw=lw, label=name, marker="o" if len(bx) < 3 else None, ms=3, **style)
    else:
        ax.plot(bx, mean, color=color, lw=0.7, alpha=0.35)
        ax.plot(bx, sm, color=color, lw=lw, label=name, **style)


def rug(ax: Axes, steps: Iterable[float], name: str) -> None:
    """Red ticks along the bottom at the given steps (binned so 20 000 NaNs stay small)."""
    s = np.unique(np.asarray(list(steps), dtype=float))
    if not len(s):
        return
    if len(s) > MAX_POINTS:
        s = s[:: math.ceil(len(s) / MAX_POINTS)]
    ax.plot(s, np.zeros_like(s), "|", color=BAD, ms=9, mew=1.2, transform=ax.get_xaxis_transform(), label=name, clip_on=False)


def is_wide(values: np.ndarray) -> bool:
    """Positive values spanning more than two decades (drawn on a log scale)."""
    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v)]
    return bool(len(v) and v.min() > 0 and v.max() / v.min() > 100)


def log_if_wide(ax: Axes, values: np.ndarray) -> None:
    if is_wide(values):
        ax.set_yscale("log")


def new_figure(figsize: tuple[float, float] = FIGSIZE) -> tuple[Figure, Axes]:
    fig = Figure(figsize=figsize, layout="constrained")
    return fig, fig.subplots()


def legend(ax: Axes) -> None:
    """One legend above the axes, in as many columns as the names allow (the plot keeps its width)."""
    handles, names = ax.get_legend_handles_labels()
    if handles:
        cols = max(1, min(len(names), 5, 84 // (max(len(n) for n in names) + 6)))
        ax.figure.legend(handles, names, loc="outside upper left", ncols=cols, handlelength=1.6, columnspacing=1.2)


def legend_rows(fig: Figure, rows: list[list[tuple[Any, str]]], ncols: int) -> None:
    """A legend above the axes laid out row by row (matplotlib fills columns first): each
    inner list starts a new row, wrapped at ``ncols`` entries; empty rows are skipped."""
    lines = [row[i : i + ncols] for row in rows if row for i in range(0, len(row), ncols)]
    if not lines:
        return
    ncols = max(len(line) for line in lines)
    blank = (Line2D([], [], alpha=0), "")
    grid = [line + [blank] * (ncols - len(line)) for line in lines]
    entries = [grid[r][c] for c in range(ncols) for r in range(len(grid))]
    fig.legend([h for h, _ in entries], [n for _, n in entries], loc="outside upper left", ncols=ncols,
               handlelength=1.6, columnspacing=1.2)


def handles(*axes: Axes) -> list[tuple[Any, str]]:
    """(handle, name) of every labelled artist of the axes, in drawing order."""
    out: list[tuple[Any, str]] = []
    for ax in axes:
        h, n = ax.get_legend_handles_labels()
        out += list(zip(h, n))
    return out


def centered_note(ax: Axes, text: str, color: str = BAD) -> None:
    """A message in the middle of the axes (for a series with nothing drawable in it)."""
    ax.text(0.5, 0.5, text, transform=ax.transAxes, ha="center", va="center", color=color, fontsize=10)


def styled(draw: Callable[[Run], "str | None"]) -> Callable[[Run], "str | None"]:
    """Run a plot function under the report's matplotlib style (rcParams are read at draw time),
    on the tidied record (each column of one kind: see ``tidy``)."""

    @functools.wraps(draw)
    def wrapper(run: Run) -> str | None:
        with matplotlib.rc_context(RC):
            return draw(tidy(run))

    return wrapper


_SVG_META = re.compile(r"<metadata>.*?</metadata>\s*", re.S)
_SVG_SIZE = re.compile(r'\s(?:width|height)="[^"]*"')


def to_markup(fig: Figure, alt: str) -> str:
    """The figure as inline SVG (size set by CSS), or as a PNG <img> when the SVG is huge.

    ``alt`` describes the plot to a screen reader: the SVG's ``aria-label`` and ``<title>``
    (a tooltip too), the PNG's ``alt``; it is escaped here, so it may hold user text.
    """
    alt = html.escape(" ".join(str(alt).split()), quote=True)
    buf = io.StringIO()
    fig.savefig(buf, format="svg", metadata={"Date": None})
    text = buf.getvalue()
    start = text.index("<svg")
    end = text.index(">", start)
    body = _SVG_META.sub("", text[end + 1 :], count=1)
    svg = f'{_SVG_SIZE.sub("", text[start:end])} role="img" aria-label="{alt}">\n<title>{alt}</title>{body}'
    if len(svg) <= SVG_LIMIT:
        return svg
    png = io.BytesIO()
    fig.savefig(png, format="png", dpi=130)
    data = base64.b64encode(png.getvalue()).decode("ascii")
    return f'<img alt="{alt}" src="data:image/png;base64,{data}">'
