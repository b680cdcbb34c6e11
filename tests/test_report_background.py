"""Leaving watch() does not wait for report.html: findings.json and the summary are written at
once, the report is drawn by a detached child (matplotlib never enters the user's process),
and the page that stands in for it until then says so. The child outlives the program."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import rnndoctor
from rnndoctor.report import background
from rnndoctor.rundir import FINDINGS_FILE, REPORT_FILE

ROOT = Path(__file__).resolve().parent.parent

LOOP = textwrap.dedent("""
    import sys, torch, torch.nn as nn, torch.nn.functional as F
    import rnndoctor
    torch.manual_seed(0)
    lstm, head = nn.LSTM(2, 8, batch_first=True), nn.Linear(8, 2)
    model = nn.ModuleList([lstm, head])
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with rnndoctor.watch(model, out=sys.argv[1], summary=False) as run:
        for _ in range(30):
            x, y = torch.randn(16, 5, 2), torch.randint(0, 2, (16,))
            loss = F.cross_entropy(head(lstm(x)[0][:, -1]), y)
            opt.zero_grad(); loss.backward(); opt.step()
    print(sorted(m for m in ("matplotlib", "jinja2") if m in sys.modules))
    print(open(run.run_dir / "report.html").read().count('http-equiv="refresh"'))
""")


def _drawn(path: Path, timeout: float = 180.0) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        text = path.read_text(encoding="utf-8") if path.exists() else ""
        if text and 'http-equiv="refresh"' not in text:
            return text
        time.sleep(0.5)
    raise AssertionError(f"{path} was not drawn within {timeout} s")


def test_leaving_watch_writes_findings_and_a_placeholder_and_the_report_follows_after_the_program_ended(tmp_path):
    script = tmp_path / "loop.py"
    script.write_text(LOOP)
    proc = subprocess.run([sys.executable, str(script), str(tmp_path / "run")], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    imported, refreshing = proc.stdout.split("\n")[:2]
    assert imported == "[]"  # the user's process never imported the report's libraries
    assert refreshing == "1"  # right after the block: the stand-in page
    assert json.loads((tmp_path / "run" / FINDINGS_FILE).read_text())["findings"] is not None
    page = _drawn(tmp_path / "run" / REPORT_FILE)  # the program is over; its child drew the report
    assert "<svg" in page and "rnndoctor" in page


def _train(out: Path, **opts) -> rnndoctor.Watch:
    torch.manual_seed(0)
    lstm, head = nn.LSTM(2, 8, batch_first=True), nn.Linear(8, 2)
    model = nn.ModuleList([lstm, head])
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with rnndoctor.watch(model, out=out, summary=False, **opts) as run:
        for _ in range(20):
            x, y = torch.randn(16, 5, 2), torch.randint(0, 2, (16,))
            loss = F.cross_entropy(head(lstm(x)[0][:, -1]), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
    return run


def test_wait_report_returns_the_drawn_page_and_now_draws_before_leaving(tmp_path):
    run = _train(tmp_path / "bg")
    path = run.wait_report(timeout=180)
    assert path == run.run_dir / REPORT_FILE and 'http-equiv="refresh"' not in path.read_text()
    now = _train(tmp_path / "now", report="now")
    assert "<svg" in (now.run_dir / REPORT_FILE).read_text() and now.wait_report() == now.run_dir / REPORT_FILE
    none = _train(tmp_path / "none", report="none")
    assert not (none.run_dir / REPORT_FILE).exists() and (none.run_dir / FINDINGS_FILE).exists()
    with pytest.raises(ValueError, match="report must be one of"):
        rnndoctor.watch(report="later")


def test_a_draw_that_fails_leaves_a_page_that_says_so_and_how_to_draw_it_again(tmp_path, capsys):
    run = _train(tmp_path / "r", report="none")
    (run.run_dir / "meta.json").write_text("{ not json")  # the child cannot read the record
    child = background.start(run.run_dir)
    assert child is not None
    _, err = child.communicate(timeout=180)
    assert child.returncode == 1 and b"could not draw report.html" in err
    page = (run.run_dir / REPORT_FILE).read_text()
    assert "could not be drawn" in page and "rnndoctor report" in page and 'http-equiv="refresh"' not in page
