"""diagnose(run): every rule in the catalogue over one recorded run."""

from __future__ import annotations

from typing import Any, Mapping

from .finding import Diagnosis, Finding, Skipped, sort_findings
from .rules import all_rules
from .run import Run


def diagnose(run: Run, *, strict: bool = False, options: Mapping[str, Mapping[str, Any]] | None = None) -> Diagnosis:
    """Judge ``run``. A rule whose signals are missing is skipped with the reason; a rule that
    crashes becomes a skipped entry too (``strict=True`` re-raises, as the tests do)."""
    findings: list[Finding] = []
    skipped: list[Skipped] = []
    options = options or {}
    for spec in all_rules():
        missing = [s for s in spec.signals if not run.has(s)]
        if missing:
            skipped.append(Skipped(spec.id, f"no {', '.join(missing)} recorded"))
            continue
        try:
            findings.extend(spec(run, **options.get(spec.id, {})))
        except Exception as exc:  # a broken rule must never lose the report
            if strict:
                raise
            skipped.append(Skipped(spec.id, f"rule crashed: {type(exc).__name__}: {exc}"))
    return Diagnosis(findings=sort_findings(findings), skipped=tuple(skipped))
