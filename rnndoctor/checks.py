"""Expectation files (``checks/*.toml``): what a fixture run must and must not produce.

One file per entry::

    script = "fixtures/parity_stuck.py"   # absolute, or relative to the checks/ dir's parent (else to the file's dir)
    args = ["--seed", "1"]                # strings; numbers are passed as their str()
    max_steps = 400                       # a positive integer
    timeout = 120                         # seconds, a positive number
    expect = ["stuck-at-chance", "non-finite>=error"]   # ids that must be found (min. severity)
    forbid = ["non-finite", "duplicate-samples>=warning"] # ids that must not be found (at that severity or above)
    fail_on = "error"     # any finding this severe that is not expected fails the entry
    cause = "vanishing-gradient-through-time"   # the id the diagnosis must lead with (its primary cause)
    description = "..."   # for people

``load_check`` rejects a file with a wrongly typed field or an id no rule reports
(``CheckFileError``, one line), before any entry runs.
"""

from __future__ import annotations

import difflib
import math
import sys
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Sequence

from .finding import Finding, Severity
from .text import printable_line

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


@dataclass(frozen=True)
class CheckEntry:
    name: str
    path: Path
    script: Path
    args: tuple[str, ...] = ()
    max_steps: int | None = None
    timeout: float | None = None
    expect: tuple[Expectation, ...] = ()
    #: ids that must not be found; with a severity, not at that severity or above (a healthy
    #: online generator may be told about as information, never warned)
    forbid: tuple[Expectation, ...] = ()
    fail_on: str = "error"
    #: the id the diagnosis must lead with: its first finding, the primary cause
    cause: str | None = None


@dataclass
class CheckResult:
    entry: CheckEntry
    passed: bool
    reasons: list[str] = field(default_factory=list)
    found: list[str] = field(default_factory=list)


_KNOWN_KEYS = {"script", "args", "max_steps", "timeout", "expect", "forbid", "fail_on", "cause", "description"}
_FAIL_ON = ("info", "warning", "error", "never")
_TOML_TYPES = ((bool, "boolean"), (str, "string"), (int, "integer"), (float, "float"), (list, "array"), (dict, "table"))


class _Malformed(ValueError):
    """One field of a file is wrong; ``load_check`` prefixes the file's path."""


def load_check(path: str | Path) -> CheckEntry:
    """Read and validate one file: every field's type and range and every finding id, so a
    typo fails at once as the file's error instead of minutes later as a run's (or never)."""
    path = Path(path)
    data = _read_toml(path)
    try:
        return _entry(path, data)
    except _Malformed as exc:
        raise CheckFileError(f"{path}: {exc}") from None


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        text = path.read_bytes().decode("utf-8")
    except OSError as exc:
        raise CheckFileError(f"cannot read {path}: {exc.strerror}") from None
    except UnicodeDecodeError as exc:
        raise CheckFileError(f"{path}: not UTF-8 text (byte {exc.start})") from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise CheckFileError(f"{path}: invalid TOML: {exc}") from None


def _entry(path: Path, data: dict[str, Any]) -> CheckEntry:
    unknown = set(data) - _KNOWN_KEYS
    if unknown:
        raise _Malformed(f"unknown key(s) {', '.join(sorted(unknown))}")
    if "script" not in data:
        raise _Malformed("missing 'script'")
    if not isinstance(data.get("description", ""), str):
        raise _Malformed(f"description must be a string, got {_shown(data['description'])}")
    expect = _expectations(data.get("expect", []))
    forbid = _forbidden(data.get("forbid", []))
    both = sorted({e.id for e in expect} & {f.id for f in forbid})
    if both:
        raise _Malformed(f"{both[0]!r} is both expected and forbidden")
    return CheckEntry(
        name=path.stem,
        path=path,
        script=_script(data["script"], path),
        args=_args(data.get("args", [])),
        max_steps=_max_steps(data.get("max_steps")),
        timeout=_timeout(data.get("timeout")),
        expect=expect,
        forbid=forbid,
        fail_on=_fail_on(data.get("fail_on", "error")),
        cause=_cause(data.get("cause")),
    )


def _cause(value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise _Malformed(f"cause must be a finding id (a string), got {_shown(value)}")
    return _known(value.strip(), "cause")


def _shown(value: Any) -> str:
    """A value as the file spelt it, with its TOML type: ``the string '10'``, ``the boolean true``."""
    kind = next((name for t, name in _TOML_TYPES if isinstance(value, t)), type(value).__name__)
    if isinstance(value, bool):
        text = "true" if value else "false"
    else:
        text = repr(value) if isinstance(value, (str, list, dict)) else str(value)
    text = printable_line(text)
    return f"the {kind} {text if len(text) <= 60 else text[:57] + '...'}"


def _no_nul(text: str, what: str) -> str:
    """A NUL cannot be in a path or a command-line argument: say so here, not as a crash."""
    if "\x00" in text:
        raise _Malformed(f"{what} contains a NUL character")
    return text


def _script(value: Any, path: Path) -> Path:
    if not isinstance(value, str) or not value:
        raise _Malformed(f"script must be a non-empty path, got {_shown(value)}")
    script = Path(_no_nul(value, "script"))
    if script.is_absolute():
        return script
    # relative to the directory that holds the checks directory (``checks/x.toml`` names
    # ``fixtures/x.py``), or to any directory above it for checks kept in subdirectories
    # (``checks/cells/x.toml`` names ``fixtures/cells/x.py``); else beside the file
    for base in path.resolve().parents[1:]:
        if (base / script).exists():
            return base / script
    return path.parent / script


def _args(value: Any) -> tuple[str, ...]:
    """Strings, or numbers passed as their ``str()`` (``args = ["--seed", 1]`` is common)."""
    if not isinstance(value, list):
        raise _Malformed(f"args must be a list of strings, got {_shown(value)}")
    args = []
    for i, arg in enumerate(value):
        if isinstance(arg, bool) or not isinstance(arg, (str, int, float)):
            raise _Malformed(f"args[{i}] must be a string or a number, got {_shown(arg)}")
        args.append(_no_nul(str(arg), f"args[{i}]"))
    return tuple(args)


def _max_steps(value: Any) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise _Malformed(f"max_steps must be a positive integer, got {_shown(value)}")
    return value


def _timeout(value: Any) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise _Malformed(f"timeout must be a positive number of seconds, got {_shown(value)}")
    return float(value)


def _fail_on(value: Any) -> str:
    if not isinstance(value, str) or value.lower() not in _FAIL_ON:
        raise _Malformed(f"fail_on must be one of {', '.join(_FAIL_ON)}, got {_shown(value)}")
    return value.lower()


def _id_list(value: Any, field: str) -> list[str]:
    """A list of strings; a bare string would otherwise be read one character at a time."""
    if not isinstance(value, list):
        raise _Malformed(f"{field} must be a list of finding ids, got {_shown(value)}")
    for i, item in enumerate(value):
        if not isinstance(item, str):
            raise _Malformed(f"{field}[{i}] must be a finding id (a string), got {_shown(item)}")
    return [item.strip() for item in value]


def _expectations(value: Any, field: str = "expect") -> tuple[Expectation, ...]:
    out = []
    for text in _id_list(value, field):
        rule_id, _, sev = text.partition(">=")
        min_severity = None
        if sev:
            try:
                min_severity = Severity.parse(sev.strip())
            except ValueError:
                raise _Malformed(f"unknown severity {sev.strip()!r} in {field} {text!r}; use one of info, warning, error") from None
        out.append(Expectation(_known(rule_id.strip(), field), min_severity))
    return tuple(out)


def _forbidden(value: Any) -> tuple[Expectation, ...]:
    """Forbidden ids, each with the severity from which it is forbidden (None: any)."""
    return _expectations(value, "forbid")


@lru_cache(maxsize=1)
def _known_ids() -> tuple[str, ...]:
    from .rules import all_rules

    return tuple(spec.id for spec in all_rules())


def _known(rule_id: str, field: str) -> str:
    """``rule_id`` if a rule reports it; a misspelt id would otherwise pass (forbid) or fail
    with a misleading "not found" (expect)."""
    known = _known_ids()
    if rule_id in known:
        return rule_id
    close = difflib.get_close_matches(rule_id, known, n=1)
    hint = f"did you mean {close[0]!r}?" if close else "`rnndoctor rules` lists them"
    raise _Malformed(f"unknown finding id {rule_id!r} in {field} ({hint})")


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
    for e in entry.forbid:
        f = found.get(e.id)
        if f is not None and (e.min_severity is None or f.severity >= e.min_severity):
            at = f" at {f.severity.value}" if e.min_severity is not None else ""
            reasons.append(f"forbidden {e.id} was found{at}: {f.title}")
    if entry.cause is not None:
        lead = findings[0] if findings else None
        if lead is None:
            reasons.append(f"expected the diagnosis to lead with {entry.cause}, but there were no findings")
        elif lead.id != entry.cause:
            reasons.append(f"expected the diagnosis to lead with {entry.cause}, but it leads with {lead.id}: {lead.title}")
    if entry.fail_on != "never":
        expected_ids = {e.id for e in entry.expect}
        forbidden_ids = {e.id for e in entry.forbid}
        for f in findings:
            if f.severity >= entry.fail_on and f.id not in expected_ids and f.id not in forbidden_ids:
                reasons.append(f"unexpected {f.severity.value} {f.id}: {f.title}")
    return CheckResult(entry=entry, passed=not reasons, reasons=reasons, found=[f.id for f in findings])
