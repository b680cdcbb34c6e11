"""``rnndoctor check``: run expectation entries, each in its own process, in parallel.

Each entry runs ``python -m rnndoctor diagnose`` in a subprocess, so an entry that crashes,
hangs or exhausts memory cannot take the others down; its findings.json is then compared with
the entry's expectations (``checks.evaluate``).
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from .checks import CheckEntry, CheckResult, evaluate
from .finding import finding_from_dict
from .text import printable_line, xml_safe
from .rundir import FINDINGS_FILE, META_FILE

#: an entry without its own ``timeout`` is killed after this long (a hung script)
DEFAULT_ENTRY_TIMEOUT_S = 600.0


@dataclass
class EntryRun:
    result: CheckResult
    seconds: float
    run_dir: Path
    status: str  # completed / max-steps / crashed / ... / error (could not run) / timeout
    output: str = ""


def run_entry(entry: CheckEntry, out_root: Path) -> EntryRun:
    run_dir = (out_root / entry.name).resolve()
    json_path = run_dir / FINDINGS_FILE
    cmd = [sys.executable, "-m", "rnndoctor", "diagnose", str(entry.script), "--out", str(run_dir), "--quiet", "--fail-on", "never"]
    if entry.max_steps:
        cmd += ["--max-steps", str(entry.max_steps)]
    if entry.timeout:
        cmd += ["--timeout", str(entry.timeout)]
    cmd += ["--", *entry.args]
    json_path.unlink(missing_ok=True)  # a run that cannot start must not be judged by the last one's findings
    t0 = time.perf_counter()
    limit = (entry.timeout or DEFAULT_ENTRY_TIMEOUT_S) + 60
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=limit)
    except subprocess.TimeoutExpired:
        res = CheckResult(entry, False, [f"timed out after {limit:.0f} s"])
        return EntryRun(res, time.perf_counter() - t0, run_dir, "timeout")
    seconds = time.perf_counter() - t0
    output = (proc.stdout + proc.stderr)[-4000:]
    if not json_path.is_file():
        last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        res = CheckResult(entry, False, [f"could not run (exit {proc.returncode}): {last}"])
        return EntryRun(res, seconds, run_dir, "error", output)
    try:
        data = json.loads(json_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        res = CheckResult(entry, False, [f"could not read its findings.json: {exc}"])
        return EntryRun(res, seconds, run_dir, "error", output)
    findings = [finding_from_dict(f) for f in data.get("findings", [])]
    result = evaluate(entry, findings)
    status = str(data.get("run", {}).get("status", "unknown"))
    if status == "crashed":
        result.passed = False
        result.reasons.insert(0, _crash_reason(data, run_dir))
    return EntryRun(result, seconds, run_dir, status, output)


def _crash_reason(data: dict, run_dir: Path) -> str:
    """``the script crashed with KeyError: 'label'``: the type alone rarely says why; the
    message is in the record's meta.json (findings.json keeps only the type)."""
    exc_type = data.get("run", {}).get("exception") or "an exception"
    message = _exception_message(run_dir / META_FILE)
    return f"the script crashed with {exc_type}: {message}" if message else f"the script crashed with {exc_type}"


def _exception_message(meta_path: Path, limit: int = 200) -> str:
    """The first non-empty line of the recorded exception message ("" when there is none)."""
    try:
        exc = json.loads(meta_path.read_text(encoding="utf-8")).get("exception")
    except (OSError, ValueError, AttributeError):
        return ""
    message = str(exc.get("message") or "") if isinstance(exc, dict) else ""
    first = next((line.strip() for line in message.splitlines() if line.strip()), "")
    return first if len(first) <= limit else first[: limit - 3] + "..."


def run_all(entries: list[CheckEntry], out_root: Path, jobs: int = 1) -> list[EntryRun]:
    out_root.mkdir(parents=True, exist_ok=True)
    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        return list(pool.map(lambda e: run_entry(e, out_root), entries))


def table(runs: list[EntryRun]) -> str:
    """One line per entry; names, reasons and titles come from files and the user's script, so
    control characters are shown escaped (an ESC or OSC sequence would drive the terminal)."""
    names = [printable_line(r.result.entry.name) for r in runs]
    width = max([len(n) for n in names] + [5])
    lines = [f"{'entry':{width}}  result  time    found / reason"]
    for name, r in zip(names, runs):
        verdict = "PASS" if r.result.passed else "FAIL"
        detail = "; ".join(r.result.reasons) if not r.result.passed else (", ".join(r.result.found) or "no findings")
        lines.append(f"{name:{width}}  {verdict:6}  {r.seconds:5.1f}s  {printable_line(detail)}")
    failed = sum(not r.result.passed for r in runs)
    lines.append(f"{len(runs) - failed} passed, {failed} failed")
    return "\n".join(lines)


def write_junit(runs: list[EntryRun], path: Path) -> None:
    """JUnit XML as Jenkins, GitLab and GitHub test reporters read it. Every string from a file
    or a run passes ``xml_safe``: one NUL or ESC in a message makes the whole file unreadable."""
    failures = sum(1 for r in runs if not r.result.passed and r.status not in ("error", "timeout"))
    errors = sum(1 for r in runs if not r.result.passed and r.status in ("error", "timeout"))
    suites = ET.Element("testsuites")
    suite = ET.SubElement(
        suites,
        "testsuite",
        name="rnndoctor.check",
        tests=str(len(runs)),
        failures=str(failures),
        errors=str(errors),
        skipped="0",
        time=f"{sum(r.seconds for r in runs):.3f}",
    )
    for r in runs:
        case = ET.SubElement(suite, "testcase", classname="rnndoctor.check", name=xml_safe(r.result.entry.name), time=f"{r.seconds:.3f}")
        case.set("file", xml_safe(r.result.entry.path))
        if not r.result.passed:
            tag = "error" if r.status in ("error", "timeout") else "failure"
            el = ET.SubElement(case, tag, message=xml_safe("; ".join(r.result.reasons))[:1000], type=xml_safe(r.status))
            el.text = xml_safe("\n".join(r.result.reasons) + f"\nreport: {r.run_dir}\n")
        out = ET.SubElement(case, "system-out")
        out.text = xml_safe(f"findings: {', '.join(r.result.found) or 'none'}\nrun: {r.run_dir}\n")
    path.parent.mkdir(parents=True, exist_ok=True)
    ET.ElementTree(suites).write(path, encoding="utf-8", xml_declaration=True)
