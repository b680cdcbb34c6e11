"""The assertion API of a finished watch (CI, pytest): ``assert_found``, ``assert_not_found``,
``assert_healthy``. Each failure explains itself with the whole diagnosis
(``report/assertion.py``)."""

from __future__ import annotations

from pathlib import Path

from .finding import Diagnosis, Finding, Severity
from .run import Run


class Verdict:
    """Mixed into ``Watch``: reads ``diagnosis``, ``record`` and ``run_dir``."""

    diagnosis: Diagnosis | None
    record: Run | None
    run_dir: Path

    @property
    def findings(self) -> list[Finding]:
        """Findings in verdict order: the primary cause first, what it explains after it (empty
        until the ``with`` block has exited)."""
        return list(self.diagnosis.findings) if self.diagnosis else []

    def assert_found(self, rule_id: str, severity: "str | None" = None) -> Finding:
        """Fail unless finding ``rule_id`` (at least ``severity``) was reported; return it."""
        __tracebackhide__ = True  # pytest: show the user's line, not this one
        same = [f for f in self.findings if f.id == rule_id]
        for f in same:
            if severity is None or f.severity >= severity:
                return f
        if same:
            headline = (
                f"expected finding {rule_id!r} at severity >= {Severity.parse(severity).value}, "  # type: ignore[arg-type]
                f"but it was reported as {same[0].severity.value}"
            )
        else:
            at_least = f" (at severity >= {Severity.parse(severity).value})" if severity is not None else ""
            headline = f"expected finding {rule_id!r}{at_least} was not reported"
        raise self._explain_failure(headline, marked=[rule_id], rule_id=rule_id)

    def assert_not_found(self, rule_id: str) -> None:
        """Fail if finding ``rule_id`` was reported (or the watch has not finished)."""
        __tracebackhide__ = True
        same = [f for f in self.findings if f.id == rule_id]
        if same:
            f = same[0]
            headline = f"forbidden finding {rule_id!r} was reported ({f.severity.value}): {f.title}"
            raise self._explain_failure(headline, marked=[rule_id])
        if self.diagnosis is None:
            raise self._explain_failure(f"cannot check that {rule_id!r} was not reported")

    def assert_healthy(self, fail_on: str = "error") -> None:
        """Fail if any finding at or above ``fail_on`` (default: error) was reported, or the
        run could not be judged (a skipped rule is never "healthy")."""
        __tracebackhide__ = True
        level = Severity.parse(fail_on)
        bad = [f.id for f in self.findings if f.severity >= level]
        if self.diagnosis is None:
            raise self._explain_failure("cannot judge the run's health")
        if not bad and self.diagnosis.unjudged:
            raise self._explain_failure(f"cannot call the run healthy: {'; '.join(self.diagnosis.unjudged)}")
        if bad:
            noun = "finding" if len(bad) == 1 else "findings"
            headline = f"run is not healthy: {len(bad)} {noun} at or above {level.value}: {', '.join(bad)}"
            raise self._explain_failure(headline, marked=bad)

    def _explain_failure(self, headline: str, *, marked: "list[str] | tuple[str, ...]" = (), rule_id: "str | None" = None) -> AssertionError:
        """The exception an ``assert_*`` raises: its text is the whole explanation."""
        from .report.assertion import FindingAssertionError, explain
        from .rules import all_rules

        notes = []
        if rule_id is not None and self.diagnosis is not None:
            known = [spec.id for spec in all_rules()]
            skipped = {s.rule_id: s.reason for s in self.diagnosis.skipped}
            if rule_id not in known:
                notes.append(f"{rule_id!r} is not a finding id rnndoctor reports; known ids: {', '.join(known)}")
            elif rule_id in skipped:
                notes.append(f"rule {rule_id!r} could not judge this run: {skipped[rule_id]}")
        message = explain(
            headline,
            diagnosis=self.diagnosis,
            meta=self.record.meta if self.record is not None else None,
            run_dir=self.run_dir,
            marked=marked,
            notes=notes,
        )
        return FindingAssertionError(message, run_dir=self.run_dir.resolve(), findings=self.findings)
