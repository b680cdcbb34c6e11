"""The terminal summary: the primary cause first with its fix and what it explains, then the
findings that stand alone."""

from __future__ import annotations

import os
import sys
import textwrap
from typing import Sequence, TextIO

from ..finding import Diagnosis, Severity
from ..privacy import shown_path
from ..run import Run
from ..text import printable, printable_line
from ..rundir import REPORT_FILE

_COLORS = {Severity.ERROR: "31", Severity.WARNING: "33", Severity.INFO: "36"}


def _use_color(stream: TextIO) -> bool:
    return hasattr(stream, "isatty") and stream.isatty() and "NO_COLOR" not in os.environ


def verdict(diagnosis: Diagnosis) -> str:
    """"2 errors, 1 warning — cause: <the leading cause's title>; which explains <ids>" (or
    the worst finding's title when nothing explains anything), a healthy verdict, or, when
    parts of the run could not be judged, a verdict that says so (never "healthy")."""
    c = diagnosis.counts()
    parts = [f"{n} {name}{'s' if n != 1 else ''}" for name, n in c.items() if n]
    if diagnosis.findings and all(f.severity == Severity.INFO for f in diagnosis.findings) and not diagnosis.unjudged:
        ids = ", ".join(dict.fromkeys(f.id for f in diagnosis.findings))
        return f"healthy: nothing at warning or error ({', '.join(parts)} for context: {ids})"
    if diagnosis.findings:
        lead = diagnosis.findings[0]
        below = diagnosis.consequences(0)
        if below:
            return f"{', '.join(parts)} — cause: {lead.title} ({lead.id}), which explains {explains_text(diagnosis, below)}"
        return f"{', '.join(parts)} — {lead.title}"
    if diagnosis.unjudged:
        return f"no findings, but the run could not be fully judged: {'; '.join(diagnosis.unjudged)}"
    return "no findings — nothing in this run looks wrong"


def explains_text(diagnosis: Diagnosis, indices: Sequence[int]) -> str:
    """``stuck-at-chance and prediction-collapse``: the ids, once each, in verdict order."""
    ids = list(dict.fromkeys(diagnosis.findings[i].id for i in indices))
    return ids[0] if len(ids) == 1 else f"{', '.join(ids[:-1])} and {ids[-1]}"


def run_line(run: Run) -> str:
    """"50 steps · completed · reports/run1": what was recorded, how it ended, where."""
    meta = run.meta
    steps = meta.get("steps")
    where = shown_path(run.path) if run.path else ""
    return f"{steps if isinstance(steps, int) else '?'} steps · {meta.get('status', '?')} · {where}"


def damage_note(notes: Sequence[str], shown: int | None = None) -> str:
    """One line that says the record was damaged and what loading left out (the first
    ``shown`` notes; findings.json has them all): a diagnosis of part of a record must say so."""
    text = "; ".join(notes[:shown])
    if shown is not None and len(notes) > shown:
        text += f"; {len(notes) - shown} more in findings.json (run.load_notes)"
    return f"damaged record, loaded in part: {text}"


def render(run: Run, diagnosis: Diagnosis, *, color: bool = False, width: int = 100) -> str:
    """The summary; every string from the run (names, messages, paths) is made printable."""
    meta = run.meta
    lines = [f"rnndoctor: {verdict(diagnosis)}", *worked_lines(diagnosis), f"  run: {run_line(run)}"]
    if run.notes:
        lines.append(f"  note: {printable_line(damage_note(run.notes, shown=3))}")
    exc = meta.get("exception")
    if isinstance(exc, dict) and meta.get("status") != "completed":
        lines.append(f"  the run stopped with {exc.get('type')}: {str(exc.get('message', ''))[:200]}")
    lines.extend(_finding_lines(diagnosis, width))
    for s in diagnosis.suppressed:
        lines.extend(textwrap.wrap(f"withdrawn: {s.finding.id} ({s.finding.severity.value}), because {s.reason} ({s.cause})",
                                   width=width, initial_indent="  ", subsequent_indent="        "))
    lines.extend(trial_lines(diagnosis, width))
    for note in diagnosis.notes:
        lines.extend(textwrap.wrap(f"note: {note}", width=width, initial_indent="  ", subsequent_indent="        "))
    if run.path and (run.path / REPORT_FILE).is_file():
        lines.append(f"  details: {shown_path(run.path / REPORT_FILE)}")
    text = "\n".join(printable(line) for line in lines)
    if color:  # after escaping: our own colour codes are the only escapes that get through
        for sev, code in _COLORS.items():
            for lead in ("  ", "↳ "):
                text = text.replace(f"{lead}{sev.value.upper():7} ", f"{lead}\x1b[{code}m{sev.value.upper():7}\x1b[0m ")
    return text


def _finding_lines(diagnosis: Diagnosis, width: int) -> list[str]:
    """Each cause with its fix, then "which explains:" and its consequences beneath it (their
    fix is the cause's); then the findings that stand alone, each with its own fix."""
    lines: list[str] = []
    indent = " " * 35
    shown: set[int] = set()
    for i, f in enumerate(diagnosis.findings):
        if f.explained_by:
            continue  # printed under its cause
        lines.append(f"  {f.severity.value.upper():7} {f.id:24} {f.title}")
        if f.where_text:
            lines.append(f"{indent}where: {f.where_text}")
        lines.extend(textwrap.wrap(f"fix: {f.fix}", width=width, initial_indent=indent, subsequent_indent=indent + "     "))
        below = diagnosis.consequences(i)
        new = [j for j in below if j not in shown]
        if new:
            lines.append("      which explains:")
        for j in new:
            e = diagnosis.findings[j]
            lines.append(f"      ↳ {e.severity.value.upper():7} {e.id:24} {e.title}")
            if e.where_text:
                lines.append(f"{'':41}where: {e.where_text}")
        if len(new) < len(below):
            lines.append(f"      also explains {explains_text(diagnosis, [j for j in below if j in shown])} (above)")
        shown.update(below)
    return lines


def worked_lines(diagnosis: Diagnosis) -> list[str]:
    """Right under the headline: each fix a trial showed to work (the details follow below)."""
    return [f"  fix that worked: {t.label} ({t.summary})" for t in diagnosis.trials if t.outcome == "worked"]


def trial_lines(diagnosis: Diagnosis, width: int = 100) -> list[str]:
    """``fixes tried:`` then one line per trial: what, for which finding, the outcome, the numbers."""
    if not diagnosis.trials:
        return []
    lines = ["  fixes tried (the same script re-run with one change each; trials/ holds their records):"]
    for t in diagnosis.trials:
        head = f"    {t.outcome.upper():14} {t.label} (for {', '.join(t.treats)}): {t.why}"
        lines.extend(textwrap.wrap(head, width=width, subsequent_indent=" " * 19))
        if t.summary:
            lines.append(f"{'':19}{t.summary} · {t.wall_s:.0f} s")
    return lines


def print_summary(run: Run, diagnosis: Diagnosis, stream: TextIO | None = None) -> None:
    """Print the summary; a closed or broken stream costs the summary, never the run (the
    record and the report are on disk already)."""
    stream = stream or sys.stderr
    try:
        print(render(run, diagnosis, color=_use_color(stream)), file=stream)
        stream.flush()
    except (OSError, ValueError):  # EPIPE, a closed file
        pass
