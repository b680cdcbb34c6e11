"""report.html: one self-contained page that makes the diagnosis obvious at a glance.

Why jinja2 with autoescape on: module names, script paths, argument values and exception
messages come from the user's program, so every one of them is escaped. The only markup
marked safe is the SVG that ``plots.py`` generated. The page also carries a
Content-Security-Policy that forbids scripts and fetches: even an escaping bug could
neither run code nor reach the network, and the file opens the same offline.
"""

from __future__ import annotations

import math
import re
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jinja2
from markupsafe import Markup

from .._version import __version__
from ..finding import Diagnosis, Finding
from ..privacy import shown_path
from ..run import Run, write_text_atomic
from ..rundir import REPORT_FILE
from ..text import printable
from . import plots
from .terminal import damage_note, verdict
from .plots_trials import trial_curves
from .tidy import tidy

TEMPLATES = Path(__file__).parent / "templates"

_ENV = jinja2.Environment(
    loader=jinja2.FileSystemLoader(TEMPLATES),
    autoescape=True,  # explicit: select_autoescape would not match a ".html.j2" name
    undefined=jinja2.StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)


@dataclass(frozen=True)
class PlotView:
    name: str
    title: str
    markup: Markup | None  # None: the run has no data for it (or drawing it failed: see note)
    note: str = ""


class _Plots:
    """Draws each plot once per page; every embedding gets its own SVG id prefix."""

    def __init__(self, run: Run) -> None:
        self.run = tidy(run)  # once per page, not once per plot
        self._cache: dict[str, tuple[str | None, str]] = {}
        self._uses = 0

    def view(self, name: str) -> PlotView:
        if name not in self._cache:
            try:
                self._cache[name] = (plots.render(name, self.run), "")
            except Exception as exc:  # a broken plot must not cost the report
                self._cache[name] = (None, f"could not draw: {type(exc).__name__}: {exc}")
        svg, note = self._cache[name]
        self._uses += 1
        markup = Markup(_scoped(svg, f"p{self._uses}-")) if svg is not None else None
        return PlotView(name, plots.PLOTS[name].title, markup, note)


_ID_REF = re.compile(r'(\bid="|url\(#|href="#)')


def _scoped(svg: str, prefix: str) -> str:
    """Prefix every id and id reference, so the same plot can appear twice on one page."""
    return _ID_REF.sub(lambda m: m.group(1) + prefix, svg)


def fmt_value(value: Any, depth: int = 0) -> str:
    """An evidence value as a person reads it: 4 significant digits, short lists."""
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):
        try:
            value = value.item()
        except (TypeError, ValueError):
            pass
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        if math.isnan(value):
            return "NaN"
        if math.isinf(value):
            return "Inf" if value > 0 else "-Inf"
        return f"{value:.4g}"
    if isinstance(value, dict) and depth < 2:
        return "; ".join(f"{k}={fmt_value(v, depth + 1)}" for k, v in value.items())
    if isinstance(value, (list, tuple)) and depth < 2:
        items = [fmt_value(v, depth + 1) for v in value[:12]]
        return ", ".join(items) + (f", … ({len(value)} in all)" if len(value) > 12 else "")
    text = "—" if value is None else str(value)
    return text if len(text) <= 400 else text[:399] + "…"


def _finding_view(f: Finding, plot_views: _Plots) -> dict[str, Any]:
    return {
        "id": f.id,
        "severity": f.severity.value,
        "title": f.title,
        "explanation": f.explanation,
        "fix": f.fix,
        "where": [(str(k), fmt_value(v)) for k, v in f.where.items()],
        "first_step": f.first_step,
        "evidence": [(str(k).replace("_", " "), fmt_value(v)) for k, v in f.evidence.items()],
        "plots": [v for v in (plot_views.view(n) for n in f.plots if n in plots.PLOTS) if v.markup is not None],
    }


def _relations(diagnosis: Diagnosis, views: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Mark each card with what explains it and what it explains (anchors, ids, reasons);
    return the chains (each cause and every finding it explains) and the findings that stand
    alone, for the first screen."""
    for i, v in enumerate(views):
        v["anchor"], v["explained_by"], v["explains"] = i + 1, [], []
    for link in diagnosis.links:
        cause, effect = views[link.cause], views[link.effect]
        effect["explained_by"].append({"anchor": link.cause + 1, "id": cause["id"], "why": link.why})
        cause["explains"].append({"anchor": link.effect + 1, "id": effect["id"]})
    chains = [{"cause": views[i], "below": [views[j] for j in diagnosis.consequences(i)]} for i in diagnosis.causes()]
    return chains, [views[i] for i in diagnosis.alone()]


def _trial_plot(run: Run, diagnosis: Diagnosis) -> Markup | None:
    if not diagnosis.trials:
        return None
    try:
        svg = trial_curves(run, diagnosis.trials)
    except Exception:  # a broken plot must not cost the report
        return None
    return Markup(_scoped(svg, "trials-")) if svg else None


def _meta_rows(run: Run, diagnosis: Diagnosis) -> list[tuple[str, str]]:
    meta = run.meta
    model = meta.get("model") or {}
    recorded = meta.get("rnndoctor")
    rows: list[tuple[str, Any]] = [
        ("script", meta.get("script") or "(watch() inside a Python program)"),
        ("arguments", shlex.join(str(a) for a in meta.get("script_args") or []) or "—"),
        ("status", meta.get("status", "unknown")),
        ("steps", meta.get("steps")),
        ("wall time", f"{meta['wall_s']:.1f} s" if isinstance(meta.get("wall_s"), (int, float)) else None),
        ("started", meta.get("started")),
        ("model", ", ".join(str(r) for r in model.get("roots") or []) or None),
        ("recurrent modules", ", ".join(f"{r.get('name')} ({r.get('type')})" for r in model.get("recurrent") or []) or "none found"),
        ("device", model.get("device")),
        ("torch", meta.get("torch")),
        ("python", meta.get("python")),
        ("rnndoctor", __version__ if recorded in (None, __version__) else f"{__version__} (recorded with {recorded})"),
        ("run directory", shown_path(run.path) if run.path else None),
    ]
    exc = meta.get("exception")
    if isinstance(exc, dict):
        rows.append(("exception", f"{exc.get('type', '?')}: {exc.get('message', '')}"))
    if diagnosis.skipped:
        rows.append(("rules skipped", "; ".join(f"{s.rule_id}: {s.reason}" for s in diagnosis.skipped)))
    return [(k, fmt_value(v)) for k, v in rows if v is not None]


def render_html(run: Run, diagnosis: Diagnosis) -> str:
    """The whole page as a string (no I/O: tests and ``write_html`` share it)."""
    views = _Plots(run)
    findings = [_finding_view(f, views) for f in diagnosis.findings]
    chains, alone = _relations(diagnosis, findings)
    signals = [views.view(name) for name in plots.PLOTS]
    exc = run.meta.get("exception")
    worst = max(diagnosis.findings, key=lambda f: f.severity.rank).severity.value if diagnosis.findings else ("unjudged" if diagnosis.unjudged else "ok")
    page = _ENV.get_template("report.html.j2").render(
        verdict=verdict(diagnosis),
        damage=damage_note(run.notes) if run.notes else "",
        worst=worst,
        counts=diagnosis.counts(),
        notes=list(diagnosis.notes),
        unjudged=list(diagnosis.unjudged),
        findings=findings,
        chains=chains,
        alone=alone,
        trials=[{"label": t.label, "name": t.treatment, "treats": ", ".join(t.treats), "outcome": t.outcome, "why": t.why,
                 "summary": t.summary, "wall": f"{t.wall_s:.0f} s", "path": shown_path(Path(t.path)) if t.path else ""} for t in diagnosis.trials],
        trial_plot=_trial_plot(run, diagnosis),
        suppressed=[{"id": x.finding.id, "severity": x.finding.severity.value, "title": x.finding.title,
                     "cause": x.cause, "reason": x.reason} for x in diagnosis.suppressed],
        signals=[v for v in signals if v.markup is not None],
        missing=[v for v in signals if v.markup is None],
        meta=_meta_rows(run, diagnosis),
        traceback=str(exc.get("traceback") or "") if isinstance(exc, dict) else "",
        script=run.meta.get("script") or "",
        status=run.status,
        steps=run.meta.get("steps"),
        version=__version__,
    )
    # autoescape leaves control characters alone: a module name with ESC or NUL in it must
    # not reach a terminal that `cat`s the file, nor a parser that rejects them
    return printable(page)


def write_html(run: Run, diagnosis: Diagnosis, path: Path) -> Path:
    """Write report.html atomically (a reader never sees half a page)."""
    return write_text_atomic(Path(path), render_html(run, diagnosis))
