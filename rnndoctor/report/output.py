"""Write every output of a diagnosis into the run directory."""

from __future__ import annotations

from pathlib import Path

from ..finding import Diagnosis
from ..run import Run
from ..text import printable_line
from ..rundir import FINDINGS_FILE, REPORT_FILE
from .html import write_html
from .json import write_json
from .terminal import print_summary


def write_outputs(run: Run, diagnosis: Diagnosis, run_dir: Path, *, summary: bool = True) -> list[str]:
    """findings.json first (CI reads it), then report.html, then the summary. A file that
    cannot be written (disk full, read-only) costs that file only; the failures are returned
    (``could not write report.html: No space left on device``) for the caller to say."""
    problems: list[str] = []
    for name, write in ((FINDINGS_FILE, write_json), (REPORT_FILE, write_html)):
        try:
            write(run, diagnosis, Path(run_dir) / name)
        except OSError as exc:
            problems.append(f"could not write {name}: {printable_line(exc.strerror or exc)}")
    if summary:
        print_summary(run, diagnosis)
    return problems
