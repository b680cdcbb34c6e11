"""report.html drawn in a process of its own, so leaving ``watch()`` does not wait for it.

Drawing the report (a dozen matplotlib figures as SVG) costs seconds; judging the record and
writing findings.json and the summary costs a fraction of one. ``watch()`` does the second
itself and hands the first to a detached child (``python -m rnndoctor.report.background
RUN_DIR``), so the user's program goes on at once. Why a process and not a thread: the
report's style is applied through matplotlib's global rcParams, which a thread would change
under the user's own plots.

Until the child is done, report.html is a short page that says it is being drawn and
reloads itself (no script: a meta refresh). The child re-judges the same record with the
same rules (deterministic) and replaces the page atomically; if it fails, the page says so
and names the command that draws it again (``rnndoctor report RUN_DIR``). The child outlives
the user's program: a script that ends right after ``watch()`` still gets its report.
"""

from __future__ import annotations

import html
import os
import subprocess
import sys
from pathlib import Path

from ..rundir import REPORT_FILE
from ..run import write_text_atomic
from ..privacy import shown_path
from ..text import printable_line

#: the placeholder reloads itself this often (seconds) until the report replaces it
REFRESH_S = 2


def _page(title: str, body: str, refresh: bool) -> str:
    meta = f'<meta http-equiv="refresh" content="{REFRESH_S}">' if refresh else ""
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">{meta}<title>{html.escape(title)}</title>'
            f'<style>body{{font:16px/1.5 system-ui,sans-serif;margin:3em auto;max-width:40em;color:#222}}'
            f'code{{background:#f3f3f3;padding:0 .3em}}</style></head><body><h1>{html.escape(title)}</h1>'
            f'{body}</body></html>\n')


def placeholder(run_dir: Path) -> str:
    again = html.escape(f"rnndoctor report {shown_path(run_dir)}")
    return _page("rnndoctor: the report is being drawn",
                 "<p>findings.json and the terminal summary are written; this page reloads itself until the "
                 f"report is drawn (a few seconds).</p><p>If it does not change, draw it with <code>{again}</code>.</p>",
                 refresh=True)


def start(run_dir: Path) -> subprocess.Popen[bytes] | None:
    """Write the placeholder page and start the child that draws the report; None (and the
    placeholder says how to draw it) when no process can be started."""
    run_dir = Path(run_dir)
    write_text_atomic(run_dir / REPORT_FILE, placeholder(run_dir))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (str(Path(__file__).resolve().parents[2]),
                                                                    os.environ.get("PYTHONPATH", "")) if p)}
    try:
        return subprocess.Popen([sys.executable, "-m", "rnndoctor.report.background", str(run_dir)],
                                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                start_new_session=True, env=env, cwd=str(run_dir))
    except OSError:
        return None


def draw(run_dir: Path) -> int:
    """The child: judge the record and write report.html (with the fix trials beside it, as
    ``rnndoctor report`` does); on failure, a page that says why. Exit 0 when drawn."""
    try:
        from dataclasses import replace

        from ..diagnose import diagnose
        from ..run import load_run
        from ..trials import read_trials
        from .html import write_html

        run = load_run(run_dir)
        write_html(run, replace(diagnose(run), trials=read_trials(run_dir)), run_dir / REPORT_FILE)
        return 0
    except Exception as exc:  # the page says so: a reader is never left with a page that reloads forever
        why = html.escape(printable_line(f"{type(exc).__name__}: {exc}"))
        again = html.escape(f"rnndoctor report {shown_path(run_dir)}")
        try:
            write_text_atomic(run_dir / REPORT_FILE, _page("rnndoctor: the report could not be drawn",
                                                           f"<p>{why}</p><p>findings.json holds the findings; "
                                                           f"<code>{again}</code> draws the report again.</p>", refresh=False))
        except OSError:
            pass
        sys.stderr.write(f"rnndoctor: could not draw report.html: {printable_line(str(exc))}\n")
        return 1


if __name__ == "__main__":
    sys.exit(draw(Path(sys.argv[1]).resolve()))
