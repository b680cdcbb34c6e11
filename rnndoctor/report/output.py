"""Write every output of a diagnosis into the run directory."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Callable

from ..finding import Diagnosis
from ..run import Run
from ..text import printable_line
from ..rundir import FINDINGS_FILE, REPORT_FILE
from .json import write_json
from .terminal import print_summary


def write_outputs(run: Run, diagnosis: Diagnosis, run_dir: Path, *, summary: bool = True, html: bool = True) -> list[str]:
    """findings.json first (CI reads it), then report.html (unless ``html=False``: drawn
    elsewhere), then the summary. A file that cannot be written (disk full, read-only) costs
    that file only; the failures are returned (``could not write report.html: No space left
    on device``) for the caller to say."""
    problems: list[str] = []
    outputs: tuple[tuple[str, Callable[[Run, Diagnosis, Path], Path]], ...] = ((FINDINGS_FILE, write_json),)
    if html:
        from .html import write_html  # matplotlib and jinja2: imported only when a report is drawn

        outputs += ((REPORT_FILE, write_html),)
    for name, write in outputs:
        try:
            write(run, diagnosis, Path(run_dir) / name)
        except OSError as exc:
            problems.append(could_not_write(name, exc))
    if summary:
        print_summary(run, diagnosis)
    return problems


def draw_report(run: Run, diagnosis: Diagnosis, run_dir: Path) -> None:
    """Write report.html here and now; a failure is said in one line on stderr."""
    from .html import write_html

    try:
        write_html(run, diagnosis, Path(run_dir) / REPORT_FILE)
    except OSError as exc:
        sys.stderr.write(f"[rnndoctor] {could_not_write(REPORT_FILE, exc)}\n")


def could_not_write(name: str, exc: OSError) -> str:
    """``could not write report.html: No space left on device``: the one line a failed write is said in."""
    return f"could not write {name}: {printable_line(exc.strerror or exc)}"
