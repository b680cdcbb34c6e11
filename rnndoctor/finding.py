"""Severity, Finding and Diagnosis: what the rules say about a run.

A Finding keeps the *measured* numbers (``evidence``) apart from the verdict (``id``,
``severity``), so a reader can check the judgement against the data.
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass, field
from typing import Any


class Severity(str, enum.Enum):
    """How bad a finding is. Ordered: info < warning < error."""

    INFO = "info"
    WARNING = "warning"
    ERROR = "error"

    @property
    def rank(self) -> int:
        return _RANK[self]

    @classmethod
    def parse(cls, value: "str | Severity") -> "Severity":
        if isinstance(value, Severity):
            return value
        try:
            return cls(str(value).lower())
        except ValueError:
            raise ValueError(f"unknown severity {value!r}; use one of info, warning, error") from None

    def __ge__(self, other: object) -> bool:  # type: ignore[override]
        return self.rank >= Severity.parse(other).rank  # type: ignore[arg-type]

    def __gt__(self, other: object) -> bool:  # type: ignore[override]
        return self.rank > Severity.parse(other).rank  # type: ignore[arg-type]

    def __le__(self, other: object) -> bool:  # type: ignore[override]
        return self.rank <= Severity.parse(other).rank  # type: ignore[arg-type]

    def __lt__(self, other: object) -> bool:  # type: ignore[override]
        return self.rank < Severity.parse(other).rank  # type: ignore[arg-type]


_RANK = {Severity.INFO: 0, Severity.WARNING: 1, Severity.ERROR: 2}


@dataclass(frozen=True)
class Finding:
    """One diagnosis: a stable id, how bad, why, where, and what to change."""

    id: str
    severity: Severity
    title: str
    explanation: str
    fix: str
    evidence: dict[str, Any] = field(default_factory=dict, hash=False)
    where: dict[str, Any] = field(default_factory=dict, hash=False)
    first_step: int | None = None
    plots: tuple[str, ...] = ()
    #: ids of the findings that explain this one (``rules/causes.py``); empty for a cause
    #: or a finding that stands alone
    explained_by: tuple[str, ...] = ()

    @property
    def where_text(self) -> str:
        """``where`` as one readable line: ``module=cell · t=212 · step=1``."""
        return " · ".join(f"{k}={v}" for k, v in self.where.items())

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "severity": self.severity.value,
            "title": self.title,
            "explanation": self.explanation,
            "evidence": json_safe(self.evidence),
            "where": json_safe(self.where),
            "fix": self.fix,
            "first_step": self.first_step,
            "plots": list(self.plots),
            "explained_by": list(self.explained_by),
        }


def finding_from_dict(data: dict[str, Any]) -> Finding:
    """Rebuild a Finding from its findings.json form."""
    return Finding(
        id=data["id"],
        severity=Severity.parse(data["severity"]),
        title=data.get("title", ""),
        explanation=data.get("explanation", ""),
        fix=data.get("fix", ""),
        evidence=dict(data.get("evidence") or {}),
        where=dict(data.get("where") or {}),
        first_step=data.get("first_step"),
        plots=tuple(data.get("plots") or ()),
        explained_by=tuple(data.get("explained_by") or ()),
    )


@dataclass(frozen=True)
class Skipped:
    """A rule that could not judge this run, and why (missing signal, or it crashed)."""

    rule_id: str
    reason: str


@dataclass(frozen=True)
class Link:
    """Finding ``cause`` explains finding ``effect`` (indices into ``Diagnosis.findings``)."""

    cause: int
    effect: int
    why: str


@dataclass(frozen=True)
class Suppressed:
    """A finding withdrawn because its signal means nothing given another finding (its id
    is ``cause``): kept with the reason, never silently dropped."""

    finding: Finding
    cause: str
    reason: str


@dataclass(frozen=True)
class Trial:
    """One fix trial (``trials.py``): the script re-run with one treatment applied.

    ``outcome``: "worked", "did not work", "not applicable" (the treatment found nothing to act
    on) or "failed" (the trial itself could not run: a timeout, no record); ``why`` says why
    in one line; ``before``/``after``: first and last loss, last accuracy, steps."""

    treatment: str
    label: str
    treats: tuple[str, ...]
    outcome: str
    why: str
    before: dict[str, Any] = field(default_factory=dict, hash=False)
    after: dict[str, Any] = field(default_factory=dict, hash=False)
    found: tuple[str, ...] = ()
    summary: str = ""
    curve: tuple[tuple[int, float], ...] = field(default=(), hash=False)
    applied: int = 0
    wall_s: float = 0.0
    path: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"treatment": self.treatment, "label": self.label, "treats": list(self.treats), "outcome": self.outcome,
                "why": self.why, "summary": self.summary, "before": json_safe(self.before), "after": json_safe(self.after),
                "found": list(self.found), "applied": self.applied, "wall_s": round(self.wall_s, 2), "path": self.path,
                "curve": [[s, None if not math.isfinite(v) else v] for s, v in self.curve]}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Trial":
        return cls(treatment=d["treatment"], label=d.get("label", ""), treats=tuple(d.get("treats") or ()), outcome=d["outcome"],
                   why=d.get("why", ""), before=dict(d.get("before") or {}), after=dict(d.get("after") or {}),
                   found=tuple(d.get("found") or ()), summary=d.get("summary", ""),
                   curve=tuple((int(s), float("nan") if v is None else float(v)) for s, v in d.get("curve") or ()),
                   applied=int(d.get("applied", 0)), wall_s=float(d.get("wall_s", 0.0)), path=d.get("path", ""))


@dataclass(frozen=True)
class Diagnosis:
    """Findings in verdict order, plus the rules that were skipped.

    Verdict order: each primary cause (a finding nothing else explains) with the findings
    it explains right after it, worst chain first, then the findings that stand alone, worst
    first. ``links`` say which finding explains which; ``suppressed`` holds the findings
    withdrawn because their signal meant nothing given a cause.

    ``notes`` say what a reader must know to read the findings (the run was killed; no loss
    was captured; a rule crashed). ``unjudged`` names, in a few words each, why part of the
    run could not be judged: a diagnosis without findings but with ``unjudged`` reasons is
    not a healthy verdict, and is never presented as one."""

    findings: tuple[Finding, ...]
    skipped: tuple[Skipped, ...] = ()
    notes: tuple[str, ...] = ()
    unjudged: tuple[str, ...] = ()
    links: tuple[Link, ...] = ()
    suppressed: tuple[Suppressed, ...] = ()
    #: fix trials (``--try-fixes``), in the order they were planned
    trials: tuple[Trial, ...] = ()

    def consequences(self, index: int) -> list[int]:
        """Indices of every finding that finding ``index`` explains, directly or through
        another, in verdict order."""
        below: set[int] = set()
        todo = [index]
        while todo:
            i = todo.pop()
            for link in self.links:
                if link.cause == i and link.effect not in below:
                    below.add(link.effect)
                    todo.append(link.effect)
        return sorted(below)

    def alone(self) -> list[int]:
        """Indices of the findings in no link: neither explained nor explaining."""
        linked = {k for link in self.links for k in (link.cause, link.effect)}
        return [i for i in range(len(self.findings)) if i not in linked]

    def causes(self) -> list[int]:
        """Indices of the primary causes: findings that explain others and that nothing
        explains, leading one first."""
        explained = {link.effect for link in self.links}
        return sorted({link.cause for link in self.links if link.cause not in explained})

    def ids(self) -> list[str]:
        return [f.id for f in self.findings]

    def at_least(self, severity: "str | Severity") -> list[Finding]:
        level = Severity.parse(severity)
        return [f for f in self.findings if f.severity >= level]

    def counts(self) -> dict[str, int]:
        out = {s.value: 0 for s in (Severity.ERROR, Severity.WARNING, Severity.INFO)}
        for f in self.findings:
            out[f.severity.value] += 1
        return out


def worst_first(f: Finding) -> tuple[int, int, str]:
    """Sort key: worst first; ties by the step at which it became detectable, then id."""
    return (-f.severity.rank, f.first_step if f.first_step is not None else 1 << 60, f.id)


def sort_findings(findings: list[Finding]) -> tuple[Finding, ...]:
    """Worst first; ties by the step at which they became detectable, then id."""
    return tuple(sorted(findings, key=worst_first))


def json_safe(value: Any) -> Any:
    """Strict-JSON version of ``value``: NaN/Inf become strings, numpy scalars plain numbers."""
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):
        try:
            value = value.item()
        except (TypeError, ValueError):
            return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return value
    if value is None or isinstance(value, (bool, int, str)):
        return value
    return str(value)
