"""Expectation files (``checks/*.toml``): what a fixture run must and must not produce.

One file per entry::

    script = "fixtures/parity_stuck.py"   # absolute, or relative to the checks/ dir's parent (else to the file's dir)
    args = ["--seed", "1"]
    max_steps = 400
    expect = ["stuck-at-chance", "non-finite>=error"]   # ids that must be found (min. severity)
    forbid = ["non-finite"]                              # ids that must not be found
    fail_on = "error"     # any finding this severe that is not expected fails the entry
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from .finding import Finding, Severity

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib


class CheckFileError(Exception):
    """An expectation file that cannot be read or is malformed (one-line message)."""


@dataclass(frozen=True)
class Expectation:
    id: str
    min_severity: Severity | None = None

    @classmethod
    def parse(cls, text: str) -> "Expectation":
        if ">=" in text:
            rule_id, sev = text.split(">=", 1)
            return cls(rule_id.strip(), Severity.parse(sev.strip()))
        return cls(text.strip())


@dataclass(frozen=True)
class CheckEntry:
    name: str
    path: Path
    script: Path
    args: tuple[str, ...] = ()
    max_steps: int | None = None
    timeout: float | None = None
    expect: tuple[Expectation, ...] = ()
    forbid: tuple[str, ...] = ()
    fail_on: str = "error"


@dataclass
class CheckResult:
    entry: CheckEntry
    passed: bool
    reasons: list[str] = field(default_factory=list)
    found: list[str] = field(default_factory=list)


_KNOWN_KEYS = {"script", "args", "max_steps", "timeout", "expect", "forbid", "fail_on", "description"}


def load_check(path: str | Path) -> CheckEntry:
    path = Path(path)
    try:
        data: dict[str, Any] = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise CheckFileError(f"cannot read {path}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise CheckFileError(f"{path}: invalid TOML: {exc}") from None
    unknown = set(data) - _KNOWN_KEYS
    if unknown:
        raise CheckFileError(f"{path}: unknown key(s) {', '.join(sorted(unknown))}")
    if "script" not in data:
        raise CheckFileError(f"{path}: missing 'script'")
    script = Path(data["script"])
    if not script.is_absolute():
        script = (path.parent.parent / script) if (path.parent.parent / script).exists() else (path.parent / script)
    try:
        expect = tuple(Expectation.parse(e) for e in data.get("expect", []))
        fail_on = str(data.get("fail_on", "error")).lower()
        if fail_on != "never":
            Severity.parse(fail_on)
    except ValueError as exc:
        raise CheckFileError(f"{path}: {exc}") from None
    return CheckEntry(
        name=path.stem,
        path=path,
        script=script,
        args=tuple(str(a) for a in data.get("args", [])),
        max_steps=data.get("max_steps"),
        timeout=data.get("timeout"),
        expect=expect,
        forbid=tuple(data.get("forbid", [])),
        fail_on=fail_on,
    )


def collect(paths: list[str | Path]) -> list[CheckEntry]:
    """Every ``*.toml`` under the given files/directories, sorted by path."""
    files: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            files.extend(sorted(p.glob("*.toml")))
        elif p.exists():
            files.append(p)
        else:
            raise CheckFileError(f"no such file or directory: {p}")
    return [load_check(f) for f in files]


def evaluate(entry: CheckEntry, findings: Sequence[Finding]) -> CheckResult:
    """Compare findings with an entry's expectations; every failed condition is a reason."""
    found = {f.id: f for f in findings}
    reasons: list[str] = []
    for e in entry.expect:
        f = found.get(e.id)
        if f is None:
            reasons.append(f"expected {e.id} was not found")
        elif e.min_severity is not None and not f.severity >= e.min_severity:
            reasons.append(f"expected {e.id} at least {e.min_severity.value}, got {f.severity.value}")
    for rule_id in entry.forbid:
        if rule_id in found:
            reasons.append(f"forbidden {rule_id} was found: {found[rule_id].title}")
    if entry.fail_on != "never":
        expected_ids = {e.id for e in entry.expect}
        for f in findings:
            if f.severity >= entry.fail_on and f.id not in expected_ids and f.id not in entry.forbid:
                reasons.append(f"unexpected {f.severity.value} {f.id}: {f.title}")
    return CheckResult(entry=entry, passed=not reasons, reasons=reasons, found=[f.id for f in findings])
