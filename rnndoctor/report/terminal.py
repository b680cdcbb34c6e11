"""The terminal summary: one line per finding, worst first, with its fix."""

from __future__ import annotations

import os
import sys
import textwrap
from typing import Sequence, TextIO

from ..finding import Diagnosis, Severity
from ..run import Run
from ..text import printable_line

_COLORS = {Severity.ERROR: "31", Severity.WARNING: "33", Severity.INFO: "36"}


def _use_color(stream: TextIO) -> bool:
    return hasattr(stream, "isatty") and stream.isatty() and "NO_COLOR" not in os.environ


def verdict(diagnosis: Diagnosis) -> str:
    """"2 errors, 1 warning — <the worst finding's title>" or a healthy verdict."""
    c = diagnosis.counts()
    parts = [f"{n} {name}{'s' if n != 1 else ''}" for name, n in c.items() if n]
    if not diagnosis.findings:
        return "no findings — nothing in this run looks wrong"
    return f"{', '.join(parts)} — {diagnosis.findings[0].title}"


def damage_note(notes: Sequence[str], shown: int | None = None) -> str:
    """One line that says the record was damaged and what loading left out (the first
    ``shown`` notes; findings.json has them all): a diagnosis of part of a record must say so."""
    text = "; ".join(notes[:shown])
    if shown is not None and len(notes) > shown:
        text += f"; {len(notes) - shown} more in findings.json (run.load_notes)"
    return f"damaged record, loaded in part: {text}"


def render(run: Run, diagnosis: Diagnosis, *, color: bool = False, width: int = 100) -> str:
    meta = run.meta
    lines = [
        f"rnndoctor: {verdict(diagnosis)}",
        f"  run: {meta.get('steps', '?')} steps · {meta.get('status', '?')} · {run.path or ''}",
    ]
    if run.notes:
        lines.append(f"  note: {printable_line(damage_note(run.notes, shown=3))}")
    exc = meta.get("exception")
    if exc and meta.get("status") != "completed":
        lines.append(f"  the run stopped with {exc.get('type')}: {str(exc.get('message', ''))[:200]}")
    for f in diagnosis.findings:
        tag = f"{f.severity.value.upper():7}"
        if color:
            tag = f"\x1b[{_COLORS[f.severity]}m{tag}\x1b[0m"
        lines.append(f"  {tag} {f.id:24} {f.title}")
        where = f.where_text
        if where:
            lines.append(f"{'':35}where: {where}")
        indent = " " * 35
        lines.extend(textwrap.wrap(f"fix: {f.fix}", width=width, initial_indent=indent, subsequent_indent=indent + "     "))
    if diagnosis.skipped and any("crashed" in s.reason for s in diagnosis.skipped):
        for s in diagnosis.skipped:
            if "crashed" in s.reason:
                lines.append(f"  (rule {s.rule_id} skipped: {s.reason})")
    if run.path:
        lines.append(f"  details: {run.path / 'report.html'}")
    return "\n".join(lines)


def print_summary(run: Run, diagnosis: Diagnosis, stream: TextIO | None = None) -> None:
    stream = stream or sys.stderr
    print(render(run, diagnosis, color=_use_color(stream)), file=stream)
