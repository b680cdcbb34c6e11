"""The fault matrix: every fault or bad input a user can cause, run through the real CLI.

Each cell writes a tiny script (usually ``T_PY``, the reproduction script of the reliability
issue) into the test's own folder and runs ``python -m rnndoctor ...`` in a subprocess, as a
user would. ``Cli.run`` checks, for every cell, the one thing no cell may break: stderr
never shows a traceback frame of ours (``rnndoctor/`` source files). Cells then assert what
the user must get: the exit code, the record, the report, the message.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import rnndoctor

PACKAGE_DIR = Path(rnndoctor.__file__).resolve().parent

#: the issue's reproduction: a 1-layer LSTM learning "is the first value positive", 50 steps
T_PY = """\
import torch,torch.nn as nn,torch.nn.functional as F
r=nn.LSTM(3,8,batch_first=True);f=nn.Linear(8,2);o=torch.optim.Adam([*r.parameters(),*f.parameters()])
for i in range(50):
    x=torch.randn(16,5,3);y=(x[:,0,0]>0).long()
    l=F.cross_entropy(f(r(x)[0][:,-1]),y);o.zero_grad();l.backward();o.step()
"""

_OUR_FRAME = re.compile(r'File "' + re.escape(str(PACKAGE_DIR)) + r"[/\\]")


def our_frames(text: str) -> list[str]:
    """Traceback lines that point into rnndoctor's own source."""
    return [line for line in text.splitlines() if _OUR_FRAME.search(line)]


@dataclass
class Result:
    args: list[str]
    returncode: int
    stdout: str
    stderr: str

    @property
    def output(self) -> str:
        return self.stdout + self.stderr


@dataclass
class Cli:
    """Runs ``python -m rnndoctor`` in ``cwd`` (the test's tmp_path by default)."""

    cwd: Path

    def script(self, body: str = T_PY, name: str = "t.py", *, prefix: str = "", encoding: str = "utf-8") -> Path:
        path = self.cwd / name
        path.write_bytes((textwrap.dedent(prefix) + body).encode(encoding))
        return path

    def run(self, *args: Any, cwd: Path | None = None, env: dict[str, str] | None = None, timeout: float = 300, frames_ok: bool = False) -> Result:
        argv = [str(a) for a in args]
        full_env = {**os.environ, "NO_COLOR": "1", **(env or {})}
        proc = subprocess.run(
            [sys.executable, "-m", "rnndoctor", *argv],
            capture_output=True, text=True, cwd=cwd or self.cwd, env=full_env, timeout=timeout,
            encoding="utf-8", errors="backslashreplace",
        )
        result = Result(argv, proc.returncode, proc.stdout, proc.stderr)
        if not frames_ok:
            assert not our_frames(result.output), f"rnndoctor's own traceback reached the user:\n{result.output}"
        return result

    def findings(self, run_dir: Path | str) -> dict[str, Any]:
        return json.loads((self.cwd / run_dir / "findings.json").read_text(encoding="utf-8"))

    def meta(self, run_dir: Path | str) -> dict[str, Any]:
        return json.loads((self.cwd / run_dir / "meta.json").read_text(encoding="utf-8"))


def steps_recorded(run_dir: Path) -> int:
    """Training-step rows in a run directory's steps signal."""
    path = Path(run_dir) / "signals" / "steps.jsonl"
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    return sum(1 for r in rows if r.get("mode") == "train")
