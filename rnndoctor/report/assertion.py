"""The text of a failed ``run.assert_found / assert_not_found / assert_healthy``.

A CI failure should read like the diagnosis, not like a bare ``AssertionError``: what was
expected or forbidden, every finding with its severity, title, where and evidence numbers,
and where the run directory and its report are.
"""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any, Iterable, Sequence

from ..finding import Diagnosis, Finding
from ..text import printable
from ..rundir import FINDINGS_FILE, REPORT_FILE
from .terminal import explains_text

#: one finding's evidence line is cut here (findings.json has all of it)
EVIDENCE_CHARS = 300


class FindingAssertionError(AssertionError):
    """Raised by ``Watch.assert_*``; ``str()`` is the whole explanation."""

    __module__ = "rnndoctor"  # pytest prints ``rnndoctor.FindingAssertionError: ...``

    def __init__(self, message: str, *, run_dir: Path | None = None, findings: Sequence[Finding] = ()) -> None:
        super().__init__(message)
        self.run_dir = run_dir
        self.findings = tuple(findings)


def _number(v: Any) -> str:
    if isinstance(v, bool):
        return str(v).lower()
    if isinstance(v, float):
        return f"{v:.4g}"
    if isinstance(v, dict):
        return "{" + ", ".join(f"{k}={_number(x)}" for k, x in v.items()) + "}"
    if isinstance(v, (list, tuple)):
        items = [_number(x) for x in v[:6]]
        return "[" + ", ".join(items) + (", …" if len(v) > 6 else "") + "]"
    return str(v)


def evidence_text(f: Finding, limit: int = EVIDENCE_CHARS) -> str:
    """``accuracy=0.4969 · baseline=0.5094 · …`` (floats to 4 significant digits)."""
    text = " · ".join(f"{k}={_number(v)}" for k, v in f.evidence.items())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _finding_lines(f: Finding, marked: bool, width: int) -> list[str]:
    indent = " " * 13
    lines = [f"{'>' if marked else ' '} {f.severity.value.upper():9}  {f.id} — {f.title}"]
    if f.explained_by:
        lines.append(f"{indent}explained by: {', '.join(f.explained_by)}")
    if f.where:
        lines.append(f"{indent}where: {f.where_text}")
    if f.evidence:
        lines.append(f"{indent}evidence: {evidence_text(f)}")  # one line: easy to grep in a CI log
    if f.fix:
        lines.extend(textwrap.wrap(f"fix: {f.fix}", width, initial_indent=indent, subsequent_indent=indent + "  "))
    return lines


def explain(
    headline: str,
    *,
    diagnosis: Diagnosis | None,
    meta: dict[str, Any] | None,
    run_dir: Path,
    marked: Iterable[str] = (),
    notes: Iterable[str] = (),
    width: int = 100,
) -> str:
    """The failure message: headline, notes, the findings (``>`` marks those that failed the
    assertion), then the run directory, report.html and findings.json."""
    run_dir = Path(run_dir).resolve()
    lines = [headline]
    lines.extend(f"  {n}" for n in notes)
    if diagnosis is None:
        lines.append("  the watch has not finished: call run.assert_*() after the `with` block")
    else:
        meta = meta or {}
        n = len(diagnosis.findings)
        counts = ", ".join(f"{c} {s}" for s, c in diagnosis.counts().items() if c)
        run = f"{meta.get('steps', '?')} steps, {meta.get('status', '?')}"
        lines.append(f"findings ({run}): " + (f"{n} — {counts}" if n else "none"))
        for i in diagnosis.causes():
            cause = diagnosis.findings[i]
            lines.append(f"  cause: {cause.id} — {cause.title}; which explains {explains_text(diagnosis, diagnosis.consequences(i))}")
            lines.extend(textwrap.wrap(f"fix: {cause.fix}", width, initial_indent="    ", subsequent_indent="      "))
        marks = set(marked)
        for f in diagnosis.findings:
            lines.extend(_finding_lines(f, f.id in marks, width))
        lines.extend(f"  withdrawn: {s.finding.id}, because {s.reason} ({s.cause})" for s in diagnosis.suppressed)
        lines.extend(f"  note: {note}" for note in diagnosis.notes)
        errors = meta.get("internal_errors")
        if errors:
            lines.append(f"  note: rnndoctor's own hooks failed {len(errors)}× (first: {errors[0]}); the record may be partial")
    lines.append(f"run directory: {run_dir}")
    lines.append(f"report: {run_dir / REPORT_FILE}")
    lines.append(f"findings: {run_dir / FINDINGS_FILE}")
    return "\n".join(printable(line) for line in lines)
