"""Score rnndoctor on the zoo: public RNN programs, healthy and with injected bugs.

    python bench/zoo.py                     # every program in zoo/, 2 at a time
    python bench/zoo.py zoo/char_rnn.py     # some programs
    python bench/zoo.py --steps 1000 --healthy-only
    python bench/zoo.py --bare zoo/x.py     # the variants under plain python (no rnndoctor)
    python bench/zoo.py --list
    python bench/zoo.py --keep runs/ ...; python bench/zoo.py --rescore runs/   # rules changed only

Each variant (the healthy file, and each ``Bug:`` of its docstring applied as a patch) runs
through ``python -m rnndoctor diagnose`` in its own folder; findings.json is compared with
the variant's ``Expect:``/``Allow:`` ids (format: zoo/README.md). Not a test: the table goes
into the README and the issue notes.
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ZOO = ROOT / "zoo"
JUDGED = ("warning", "error")


@dataclass
class Variant:
    program: str
    bug: str  # "healthy" for the unpatched file
    expect: list[str]
    allow: list[str]
    steps: int
    source: str
    why: str = ""


@dataclass
class Outcome:
    variant: Variant
    seconds: float
    returncode: int
    reported: dict[str, str] = field(default_factory=dict)  # id -> severity
    error: str = ""

    @property
    def found(self) -> list[str]:
        return [i for i in self.variant.expect if i in self.reported]

    @property
    def missed(self) -> list[str]:
        return [i for i in self.variant.expect if i not in self.reported]

    @property
    def false(self) -> list[str]:
        ok = set(self.variant.expect) | set(self.variant.allow)
        return [i for i, sev in self.reported.items() if sev in JUDGED and i not in ok]

    @property
    def errors(self) -> list[str]:
        return [i for i, sev in self.reported.items() if sev == "error"]


def _ids(line: str) -> list[str]:
    return [t.strip() for t in line.split(",") if t.strip()]


def variants(path: Path, steps: int | None = None) -> list[Variant]:
    """The healthy program and one variant per ``Bug:`` of its docstring."""
    source = path.read_text(encoding="utf-8")
    doc = ast.get_docstring(ast.parse(source), clean=True) or ""
    m = re.search(r"^Steps:\s*(\d+)", doc, re.M)
    n = steps or (int(m.group(1)) if m else 300)
    head, *bugs = re.split(r"^Bug:\s*", doc, flags=re.M)
    allow = re.search(r"^Allow:(.*)$", head, re.M)
    # what the healthy program is allowed (its data has duplicates, its labels are skewed)
    # stays true of every variant: a one-line bug does not change the program's data
    program_allows = _ids(allow.group(1)) if allow else []
    out = [Variant(path.stem, "healthy", [], program_allows, n, source)]
    for block in bugs:
        name, _, body = block.partition("\n")
        fields = {k: v for k, v in re.findall(r"^(Expect|Allow|Why):(.*)$", body, re.M)}
        patched = source
        pairs = re.findall(r"^- (.*)\n\+ (.*)$", body, re.M)
        if not pairs:
            raise SystemExit(f"{path}: bug {name.strip()!r} has no '- old' / '+ new' patch")
        for old, new in pairs:
            patched = _patch(patched, old.strip(), new.strip(), f"{path}: bug {name.strip()!r}")
        out.append(Variant(path.stem, name.strip(), _ids(fields.get("Expect", "")),
                           program_allows + _ids(fields.get("Allow", "")), n,
                           patched, fields.get("Why", "").strip()))
    return out


def _patch(source: str, old: str, new: str, where: str) -> str:
    lines = source.split("\n")
    hits = [i for i, line in enumerate(lines) if line.strip() == old]
    if len(hits) != 1:
        hits = [i for i, line in enumerate(lines) if old in line]
        if len(hits) != 1:
            raise SystemExit(f"{where}: {old!r} occurs {len(hits)} times (must be once)")
        i = hits[0]
        lines[i] = lines[i].replace(old, new)
        return "\n".join(lines)
    i = hits[0]
    indent = lines[i][: len(lines[i]) - len(lines[i].lstrip())]
    lines[i] = indent + new
    return "\n".join(lines)


def run(v: Variant, workdir: Path, bare: bool, timeout: float, threads: int = 1) -> Outcome:
    folder = workdir / f"{v.program}-{v.bug}"
    folder.mkdir(parents=True, exist_ok=True)
    script = folder / f"{v.program}.py"
    script.write_text(v.source, encoding="utf-8")
    cmd = [sys.executable, script.name] if bare else [
        sys.executable, "-m", "rnndoctor", "diagnose", script.name, "--max-steps", str(v.steps), "--out", "run", "--quiet"]
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(cmd, cwd=folder, capture_output=True, text=True, timeout=timeout,
                              env={**os.environ, "NO_COLOR": "1", "OMP_NUM_THREADS": str(threads)})
    except subprocess.TimeoutExpired:
        return Outcome(v, time.perf_counter() - t0, -1, error=f"timed out after {timeout:g} s")
    seconds = time.perf_counter() - t0
    outcome = Outcome(v, seconds, proc.returncode)
    if bare:
        outcome.error = (proc.stdout + proc.stderr)[-600:]
        return outcome
    try:
        data = json.loads((folder / "run" / "findings.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        outcome.error = f"no findings.json ({exc}); stderr: {proc.stderr[-400:]}"
        return outcome
    for f in data.get("findings", []):
        outcome.reported[f["id"]] = f["severity"]
    return outcome


def rescore(v: Variant, workdir: Path) -> Outcome:
    """The variant's kept record diagnosed by the rules as they are now (no run)."""
    from rnndoctor.diagnose import diagnose
    from rnndoctor.run import load_run

    outcome = Outcome(v, 0.0, 0)
    try:
        for f in diagnose(load_run(workdir / f"{v.program}-{v.bug}" / "run")).findings:
            outcome.reported[f.id] = f.severity.value
    except Exception as exc:  # a missing or unreadable record
        outcome.error = f"{type(exc).__name__}: {exc}"
    return outcome


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("programs", nargs="*", type=Path)
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--threads", type=int, default=1, help="torch threads per variant (OMP_NUM_THREADS); 2 jobs x 1 thread fill 2 cores")
    ap.add_argument("--steps", type=int, help="override every program's Steps:")
    ap.add_argument("--healthy-only", action="store_true")
    ap.add_argument("--bugs-only", action="store_true")
    ap.add_argument("--bare", action="store_true", help="plain python, no rnndoctor: does the bug really fail?")
    ap.add_argument("--list", action="store_true")
    ap.add_argument("--timeout", type=float, default=600)
    ap.add_argument("--keep", type=Path, help="folder for the runs (default: a temporary one)")
    ap.add_argument("--json", type=Path, help="write the outcomes here")
    ap.add_argument("--rescore", type=Path, metavar="DIR",
                    help="no runs: diagnose again the records an earlier --keep DIR left (after a change to the rules only)")
    args = ap.parse_args(argv)
    paths = args.programs or sorted(p for p in ZOO.glob("*.py") if not p.name.startswith("_"))
    todo = [v for p in paths for v in variants(p, args.steps)]
    if args.healthy_only:
        todo = [v for v in todo if v.bug == "healthy"]
    if args.bugs_only:
        todo = [v for v in todo if v.bug != "healthy"]
    if args.list:
        for v in todo:
            print(f"{v.program:24} {v.bug:24} expect={','.join(v.expect) or '-'} allow={','.join(v.allow) or '-'} steps={v.steps}")
        return 0
    if args.rescore:
        return _print([rescore(v, args.rescore) for v in todo], False, args.json)
    with tempfile.TemporaryDirectory(prefix="zoo-") as tmp:
        workdir = args.keep or Path(tmp)
        with ThreadPoolExecutor(max_workers=args.jobs) as pool:
            outcomes = list(pool.map(lambda v: run(v, workdir, args.bare, args.timeout, args.threads), todo))
    return _print(outcomes, args.bare, args.json)


def _print(outcomes: list[Outcome], bare: bool, json_path: Path | None) -> int:
    if bare:
        for o in outcomes:
            print(f"== {o.variant.program} / {o.variant.bug}: exit {o.returncode}, {o.seconds:.1f} s\n{o.error.strip()}\n")
        return 0
    print(f"{'program':22} {'variant':22} {'s':>6}  found / missed / false (warning+error ids not expected)")
    for o in outcomes:
        v = o.variant
        mark = "ok" if not o.missed and not o.false and not (v.bug == "healthy" and o.errors) else "XX"
        print(f"{v.program:22} {v.bug:22} {o.seconds:6.1f}  {mark} found={','.join(o.found) or '-'} "
              f"missed={','.join(o.missed) or '-'} false={','.join(o.false) or '-'}" + (f"  [{o.error}]" if o.error else ""))
    expected = sum(len(o.variant.expect) for o in outcomes)
    found = sum(len(o.found) for o in outcomes)
    judged = [i for o in outcomes for i, s in o.reported.items() if s in JUDGED]
    false = sum(len(o.false) for o in outcomes)
    healthy = [o for o in outcomes if o.variant.bug == "healthy"]
    clean = sum(1 for o in healthy if not o.errors and not o.error)
    bugs = [o for o in outcomes if o.variant.bug != "healthy"]
    covered = sorted({i for o in bugs for i in o.variant.expect})
    secs = [o.seconds for o in outcomes]
    print()
    print(f"programs {len({o.variant.program for o in outcomes})}, bugs {len(bugs)} covering {len(covered)} ids")
    if expected:
        print(f"recall    {found}/{expected} = {found / expected:.2f}")
    if judged:
        print(f"precision {len(judged) - false}/{len(judged)} = {(len(judged) - false) / len(judged):.2f}")
    if healthy:
        print(f"healthy programs without an error finding: {clean}/{len(healthy)}")
    print(f"seconds per variant: median {statistics.median(secs):.1f}, max {max(secs):.1f}")
    if json_path:
        json_path.write_text(json.dumps([{
            "program": o.variant.program, "bug": o.variant.bug, "expect": o.variant.expect, "allow": o.variant.allow,
            "reported": o.reported, "seconds": round(o.seconds, 2), "error": o.error} for o in outcomes], indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
