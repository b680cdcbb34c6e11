"""Judge kept check runs again with the current rules (a rule-only change, scored in seconds).

    rnndoctor check checks checks/pipelines --jobs 2 --out /tmp/chk     # records each entry's run
    python bench/rescore_checks.py /tmp/chk checks checks/pipelines     # current rules, same records

Each entry's run folder (``OUT/<entry name>``) is loaded, diagnosed and compared with its
check file, as ``rnndoctor check`` does; entries without a kept run are listed as such.
Probes are not re-run: a change to what is recorded needs ``rnndoctor check`` itself.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rnndoctor.checks import collect, evaluate  # noqa: E402
from rnndoctor.diagnose import diagnose  # noqa: E402
from rnndoctor.run import load_run  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    args = argv if argv is not None else sys.argv[1:]
    out, paths = Path(args[0]), args[1:] or ["checks"]
    failed = 0
    for entry in collect(paths):
        run_dir = out / entry.name
        if not (run_dir / "meta.json").exists():
            print(f"{entry.name:42s} NO RUN")
            continue
        result = evaluate(entry, diagnose(load_run(run_dir)).findings)
        failed += not result.passed
        print(f"{entry.name:42s} {'PASS' if result.passed else 'FAIL'}  {'; '.join(result.reasons) or ', '.join(result.found) or 'no findings'}")
    print(f"{failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
