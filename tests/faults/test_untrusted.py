"""Strings from the user's program are untrusted: nothing we print or write lets them drive a
terminal, and a shared run directory does not leak the machine's paths or secrets
(reliability issue, 13 and 15)."""

from __future__ import annotations

import json

import pytest
from harness import T_PY, Cli

EVIL = "evil\x1b]0;pwned\x07\x1b[2J\x9b31m"
#: a model whose module names carry terminal escapes, one of them never used (so the
#: dead-parameters finding names it), and a crash whose message carries them too
HOSTILE = f"""\
import torch, torch.nn as nn, torch.nn.functional as F
class M(nn.Module):
    def __init__(s):
        super().__init__(); s.rnn = nn.LSTM(3, 8, batch_first=True); s.f = nn.Linear(8, 2)
        s.add_module({EVIL!r}, nn.Linear(3, 3))
    def forward(s, x): return s.f(s.rnn(x)[0][:, -1])
m = M(); o = torch.optim.Adam(m.parameters())
for i in range(50):
    x = torch.randn(16, 5, 3); y = (x[:, 0, 0] > 0).long()
    l = F.cross_entropy(m(x), y); o.zero_grad(); l.backward(); o.step()
raise RuntimeError({("boom " + EVIL + chr(0)).__repr__()})
"""
RAW = ("\x1b", "\x07", "\x00", "\x9b")


def assert_no_raw_controls(text: str, where: str) -> None:
    found = [repr(c) for c in RAW if c in text]
    assert not found, f"{where} carries raw control characters {found}"


def test_terminal_output_escapes_names_and_messages(cli: Cli) -> None:
    """13. ``diagnose`` and ``report`` print module/parameter names and the exception message
    with control characters escaped (still readable: ``\\x1b``)."""
    cli.script(HOSTILE)
    r = cli.run("diagnose", "t.py", "--out", "run", "--quiet", "--fail-on", "never")
    assert r.returncode == 0, r.output
    assert_no_raw_controls(r.output, "diagnose's output")
    assert "dead-parameters" in r.stderr and "evil\\x1b]0;pwned" in r.stderr
    assert "boom evil\\x1b" in r.stderr
    again = cli.run("report", "run")
    assert_no_raw_controls(again.output, "report's output")
    assert "evil\\x1b" in again.stderr


def test_report_html_carries_no_raw_control_bytes(cli: Cli) -> None:
    """13. report.html shows the names escaped, and holds no ESC/NUL/BEL byte."""
    cli.script(HOSTILE)
    cli.run("diagnose", "t.py", "--out", "run", "--quiet", "--fail-on", "never")
    html = (cli.cwd / "run" / "report.html").read_text(encoding="utf-8")
    assert_no_raw_controls(html, "report.html")
    assert "evil\\x1b]0;pwned" in html


def test_pytest_assertion_message_escapes_names(cli: Cli) -> None:
    """13. (extra) ``run.assert_healthy()``'s message is printed by pytest to a terminal."""
    body = HOSTILE.replace("m = M()", "import rnndoctor\nm = M()").replace(
        "for i in range(50):", "with rnndoctor.watch(m, out='run', summary=False) as run:\n  for i in range(50):"
    ).replace("\n    x =", "\n      x =").replace("\n    l =", "\n      l =")
    body = body.rsplit("raise", 1)[0] + "try:\n    run.assert_healthy('warning')\nexcept AssertionError as e:\n    print(repr(str(e)))\n    import sys; sys.stdout.write(str(e))\n"
    cli.script(body)
    import subprocess, sys

    proc = subprocess.run([sys.executable, "t.py"], cwd=cli.cwd, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    message = proc.stdout.split("\n", 1)[1]
    assert "dead-parameters" in message
    assert_no_raw_controls(message, "the assertion message")


SECRET = "ghp_" + "a1B2c3D4e5F6g7H8i9J0k1L2m3N4o5P6q7R8"


@pytest.mark.parametrize("redact", [False, True], ids=["automatic", "redact-args"])
def test_shared_run_directory_leaks_no_secret_or_absolute_path(cli: Cli, redact: bool) -> None:
    """15. meta.json, findings.json and report.html: paths relative to the working directory,
    no frame of ours in the traceback, secret-looking arguments redacted (every argument
    with --redact-args)."""
    cli.script(T_PY + "raise ValueError('the script failed')\n")
    args = ["--token", "tok-123456", f"--auth={SECRET}", "--lr", "0.1", "HF_TOKEN=xyz987", SECRET]
    r = cli.run("diagnose", "t.py", "--out", "run", "--quiet", *(["--redact-args"] if redact else []), "--", *args)
    assert r.returncode in (0, 1), r.output
    files = {name: (cli.cwd / "run" / name).read_text(encoding="utf-8") for name in ("meta.json", "findings.json", "report.html")}
    for name, text in files.items():
        assert str(cli.cwd) not in text, f"{name} carries the absolute working directory"
        for secret in ("tok-123456", SECRET, "xyz987"):
            assert secret not in text, f"{name} carries the secret {secret}"
        assert "rnndoctor/runner.py" not in text and "rnndoctor/watch.py" not in text, f"{name} shows our frames"
    meta = json.loads(files["meta.json"])
    assert meta["script"] == "t.py"
    tb = meta["exception"]["traceback"]
    assert 'File "t.py", line 6' in tb and "ValueError: the script failed" in tb
    if redact:
        assert meta["script_args"] == ["<redacted>"] * len(args)
    else:
        assert meta["script_args"] == ["--token", "<redacted>", "--auth=<redacted>", "--lr", "0.1", "HF_TOKEN=<redacted>", "<redacted>"]
        assert "--lr 0.1" in files["report.html"]
