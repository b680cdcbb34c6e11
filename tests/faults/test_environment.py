"""Cells of our own: the program or its surroundings turn against the recording (a full disk,
a deleted run directory, a reader that went away, ``os._exit``, an exception that cannot be
printed). The user's program runs as it would; we keep what can be kept and say what not."""

from __future__ import annotations

import resource
import signal
import subprocess
import sys

from harness import T_PY, Cli, our_frames, steps_recorded


def test_os_exit_leaves_a_readable_record(cli: Cli) -> None:
    """``os._exit`` skips every cleanup: the record holds the flushed steps and says the run
    ended without closing."""
    cli.script(T_PY + "import os; os._exit(0)\n")
    r = cli.run("diagnose", "t.py", "--out", "run", "--quiet")
    assert r.returncode == 0
    again = cli.run("report", "run")
    assert again.returncode == 0, again.output
    data = cli.findings("run")
    assert data["run"]["status"] == "killed" and data["run"]["steps"] == steps_recorded(cli.cwd / "run") > 0


def test_program_deleting_the_run_directory(cli: Cli) -> None:
    """The script removes our directory mid-run: it finishes as it would; what came after is
    recorded and the loss of what came before is said."""
    cli.script("import shutil\n" + T_PY.replace("range(50)", "range(30)") + "shutil.rmtree('run')\n"
               + T_PY.replace("range(50)", "range(250)") + "print('user program finished')\n")
    # --fail-on never: T_PY's LSTM may sit at chance for its first ~200 steps (a true finding)
    r = cli.run("diagnose", "t.py", "--out", "run", "--quiet", "--fail-on", "never")
    assert r.returncode == 0, r.output
    assert "user program finished" in r.stdout
    assert "the run directory was removed while recording" in r.stderr.replace("\n        ", " ")
    assert 250 <= steps_recorded(cli.cwd / "run") < 280  # all after, and the unflushed rows of before
    assert (cli.cwd / "run" / "report.html").is_file()


def _small_file_limit() -> None:  # runs in the child: writes beyond 20 kB fail with EFBIG
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (20_000, 20_000))


def test_full_disk_costs_the_files_not_the_program(cli: Cli) -> None:
    """Every write beyond 20 kB fails (as on a full disk): the script completes, the summary
    and findings.json still come, report.html's failure is one line."""
    cli.script(T_PY + "print('user program finished')\n")
    proc = subprocess.run([sys.executable, "-m", "rnndoctor", "diagnose", "t.py", "--out", "run", "--quiet"],
                          cwd=cli.cwd, capture_output=True, text=True, preexec_fn=_small_file_limit)
    assert not our_frames(proc.stderr), proc.stderr
    assert proc.returncode == 0, proc.stderr
    assert "user program finished" in proc.stdout
    assert "could not write report.html: File too large" in proc.stderr
    assert "the record may be partial" in proc.stderr.replace("\n        ", " ")
    assert cli.findings("run")["run"]["status"] == "completed"


def test_closed_output_streams_keep_the_exit_code(cli: Cli) -> None:
    """``rnndoctor diagnose t.py 2>&1 | head -1``: the reader goes away; the run is recorded
    and the exit code is still ours (no exit-time flush error)."""
    cli.script()
    proc = subprocess.Popen([sys.executable, "-m", "rnndoctor", "diagnose", "t.py", "--out", "run", "--quiet", "--fail-on", "never"],
                            cwd=cli.cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.stdout.close()
    proc.stderr.close()
    assert proc.wait(timeout=300) == 0
    assert cli.findings("run")["run"]["status"] == "completed"


def test_an_exception_that_cannot_be_printed(cli: Cli) -> None:
    """An exception whose ``__str__`` raises: Python prints a placeholder; so do we, and the
    report is written."""
    cli.script(T_PY + "class E(Exception):\n    def __str__(self): raise RuntimeError('no')\nraise E()\n")
    r = cli.run("diagnose", "t.py", "--out", "run", "--quiet")
    assert r.returncode == 0, r.output
    assert "str() failed" in r.stderr
    data = cli.findings("run")
    assert data["run"]["status"] == "crashed" and data["run"]["exception"] == "E"
    assert (cli.cwd / "run" / "report.html").is_file()


def test_ascii_only_terminal(cli: Cli) -> None:
    """A terminal that takes ASCII only (``PYTHONIOENCODING=ascii``): our '—' and '·' must not
    become an UnicodeEncodeError."""
    cli.script()
    r = cli.run("diagnose", "t.py", "--out", "run", "--quiet", env={"PYTHONIOENCODING": "ascii"})
    assert r.returncode == 0, r.output
    assert "steps" in r.stderr and (cli.cwd / "run" / "report.html").is_file()
