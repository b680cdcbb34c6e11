"""Write every output of a diagnosis into the run directory."""

from __future__ import annotations

from pathlib import Path

from ..finding import Diagnosis
from ..run import Run
from .html import HTML_FILE, write_html
from .json import FINDINGS_FILE, write_json
from .terminal import print_summary


def write_outputs(run: Run, diagnosis: Diagnosis, run_dir: Path, *, summary: bool = True) -> None:
    write_json(run, diagnosis, Path(run_dir) / FINDINGS_FILE)
    write_html(run, diagnosis, Path(run_dir) / HTML_FILE)
    if summary:
        print_summary(run, diagnosis)
