"""Score a held-out batch of check files: recall, precision and healthy programs with an error.

    rnndoctor check checks/heldout2 --jobs 2 --out /tmp/h2
    python bench/heldout_score.py checks/heldout2 /tmp/h2
    python bench/heldout_score.py checks/heldout2 /tmp/h2 --rescore   # current rules, kept records

Reads each entry's ``findings.json`` beside its check file's ``expect`` and the ``# fair:``
comment its author wrote before any tool ran (ids that are true consequences of the bug):
- recall: expected ids found (at their demanded severity) over expected ids;
- precision: ids reported at warning or error that are expected or fair, over all ids
  reported at warning or error;
- healthy: entries without ``expect`` that got no error-severity finding.
Not a test: the numbers go into the issue notes.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rnndoctor.checks import load_check  # noqa: E402
from rnndoctor.diagnose import diagnose  # noqa: E402
from rnndoctor.finding import Severity  # noqa: E402
from rnndoctor.run import load_run  # noqa: E402
from rnndoctor.rules import all_rules  # noqa: E402

RANK = {"info": 0, "warning": 1, "error": 2}
KNOWN_IDS = {spec.id for spec in all_rules()}


def fair_ids(path: Path) -> set[str]:
    """The finding ids named on the ``# fair:`` line; an author's remarks in parentheses
    (``dead-parameters (its gradient is exactly zero)``, commas included) and joining words
    (``inconsistent-labels and duplicate-samples``) are not ids."""
    m = re.search(r"^#\s*fair:(.*)$", path.read_text(), re.M)
    if not m:
        return set()
    named = re.findall(r"[a-z]+(?:-[a-z]+)*", re.sub(r"\([^)]*\)", " ", m.group(1)))
    return set(named) & KNOWN_IDS


def main(argv: list[str] | None = None) -> int:
    args = list(argv if argv is not None else sys.argv[1:])
    rescore = "--rescore" in args
    checks_dir, out_dir = (Path(a) for a in args if a != "--rescore")
    found_n = expected_n = right = reported = healthy = healthy_ok = 0
    for path in sorted(checks_dir.glob("*.toml")):
        entry = load_check(path)
        fj = out_dir / entry.name / "findings.json"
        if not fj.exists():
            print(f"{entry.name:45s} no findings.json")
            continue
        if rescore:
            found = [(f.id, f.severity.value) for f in diagnose(load_run(fj.parent)).findings]
        else:
            found = [(f["id"], f["severity"]) for f in json.loads(fj.read_text())["findings"]]
        sev: dict[str, int] = {}
        for fid, severity in found:
            sev[fid] = max(sev.get(fid, -1), RANK[severity])
        missed = []
        for e in entry.expect:
            need = RANK[e.min_severity.value] if e.min_severity is not None else 0
            expected_n += 1
            if sev.get(e.id, -1) >= need:
                found_n += 1
            else:
                missed.append(e.id)
        ok_ids = {e.id for e in entry.expect} | fair_ids(path)
        loud = sorted(i for i, s in sev.items() if s >= RANK[Severity.WARNING.value])
        wrong = [i for i in loud if i not in ok_ids]
        reported += len(loud)
        right += len(loud) - len(wrong)
        errs = [i for i, s in sev.items() if s == RANK["error"]]
        if not entry.expect:
            healthy += 1
            healthy_ok += not errs
        print(f"{entry.name:45s} loud={','.join(loud) or '-'} missed={','.join(missed) or '-'} wrong={','.join(wrong) or '-'}")
    print(f"recall    {found_n}/{expected_n} = {found_n / max(expected_n, 1):.2f}")
    print(f"precision {right}/{reported} = {right / max(reported, 1):.2f}")
    print(f"healthy without an error finding: {healthy_ok}/{healthy}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
