"""Bad command lines and odd scripts: one line of ours and the documented exit code, never a
traceback (reliability issue, 10-12, and cells of our own)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from harness import T_PY, Cli, steps_recorded

EXIT_USAGE, EXIT_NOT_RUNNABLE = 2, 3


@pytest.mark.parametrize("value", ["nan", "inf", "-inf", "0", "-3", "abc"])
def test_timeout_must_be_a_positive_finite_number(cli: Cli, value: str) -> None:
    """10. ``--timeout nan`` / ``inf`` used to reach ``setitimer`` and raise there."""
    cli.script()
    r = cli.run("diagnose", "t.py", "--timeout", value, "--out", "run")
    assert r.returncode == EXIT_USAGE, r.output
    assert "--timeout" in r.stderr
    assert not (cli.cwd / "run").exists()


@pytest.mark.parametrize("out", ["/proc/nope", "/dev/null/run", "a-file/run"], ids=["proc", "under-a-device", "under-a-file"])
def test_unwritable_out_is_one_line(cli: Cli, out: str) -> None:
    """11. ``--out`` that cannot be created: one line, exit 2, the script never starts."""
    cli.script(T_PY + "open('started', 'w')\n")
    (cli.cwd / "a-file").write_text("x")
    r = cli.run("diagnose", "t.py", "--out", out)
    assert r.returncode == EXIT_USAGE, r.output
    assert r.stderr.startswith("rnndoctor: error: cannot write the run directory") and r.stderr.count("\n") == 1, r.stderr
    assert not (cli.cwd / "started").exists()


def test_unwritable_json_copy_is_one_line(cli: Cli) -> None:
    """11. (extra) ``--json`` into a path that cannot be written: one line, exit 2, the run's
    own record is kept."""
    cli.script()
    r = cli.run("diagnose", "t.py", "--out", "run", "--quiet", "--json", "/proc/nope/f.json")
    assert r.returncode == EXIT_USAGE, r.output
    assert "rnndoctor: error: cannot write /proc/nope/f.json" in r.stderr
    assert (cli.cwd / "run" / "findings.json").is_file()


@pytest.mark.parametrize(
    "encoding, prefix",
    [
        ("latin-1", "# -*- coding: latin-1 -*-\nname = 'Amélie'\n"),
        ("utf-8-sig", "name = 'Amélie'\n"),
        ("cp1252", "# vim: set fileencoding=cp1252 :\nname = 'naïve €'\n"),
    ],
    ids=["latin-1-declared", "utf-8-bom", "cp1252-vim-style"],
)
def test_scripts_are_read_as_python_reads_them(cli: Cli, encoding: str, prefix: str) -> None:
    """12. A coding declaration or a BOM runs under Python; it must run under rnndoctor."""
    cli.script(prefix=prefix + "print(name)\n", encoding=encoding)
    bare = subprocess.run([sys.executable, "t.py"], cwd=cli.cwd, capture_output=True, text=True)
    assert bare.returncode == 0, bare.stderr
    r = cli.run("diagnose", "t.py", "--out", "run", "--quiet")
    assert r.returncode == 0, r.output
    assert r.stdout.splitlines()[0] == bare.stdout.splitlines()[0]
    assert steps_recorded(cli.cwd / "run") == 50


@pytest.mark.parametrize(
    "content, message",
    [
        (None, "no such script"),
        (b"x = (\n", "syntax error"),
        (b"x = 1\x00\n", "cannot read"),
        (b"# -*- coding: ascii -*-\nname = '\xc3\xa9'\n", "cannot read"),
        (b"# -*- coding: no-such-codec -*-\n", "cannot read"),
    ],
    ids=["missing", "syntax-error", "null-byte", "bytes-the-declared-coding-cannot-read", "unknown-codec"],
)
def test_a_script_python_cannot_start_is_exit_3(cli: Cli, content: bytes | None, message: str) -> None:
    """(extra) Whatever Python itself refuses to start is refused before anything runs."""
    if content is not None:
        (cli.cwd / "t.py").write_bytes(content)
    r = cli.run("diagnose", "t.py", "--out", "run")
    assert r.returncode == EXIT_NOT_RUNNABLE, r.output
    assert r.stderr.startswith("rnndoctor: error:") and message in r.stderr and r.stderr.count("\n") == 1, r.stderr
    assert not (cli.cwd / "run").exists()


def test_a_directory_as_script_is_a_usage_error(cli: Cli) -> None:
    (cli.cwd / "d").mkdir()
    r = cli.run("diagnose", "d")
    assert r.returncode == EXIT_USAGE and "Traceback" not in r.stderr, r.output


@pytest.mark.parametrize(
    "args",
    [["diagnose", "t.py", "--max-steps", "0"], ["diagnose", "t.py", "--fail-on", "fatal"], ["report"], ["explain", "no-such-id"], ["nope"]],
    ids=["max-steps-0", "unknown-severity", "report-without-dir", "explain-unknown-id", "unknown-command"],
)
def test_usage_errors_are_exit_2(cli: Cli, args: list[str]) -> None:
    cli.script()
    r = cli.run(*args)
    assert r.returncode == EXIT_USAGE, r.output
    assert "Traceback" not in r.stderr


def test_report_on_a_missing_directory_is_one_line(cli: Cli) -> None:
    r = cli.run("report", "nowhere")
    assert r.returncode == EXIT_USAGE and r.stderr.startswith("rnndoctor: error:") and r.stderr.count("\n") == 1, r.output


def test_a_script_exit_code_is_reported_and_the_record_kept(cli: Cli) -> None:
    """(extra) ``sys.exit(4)`` from the script: the record is a crash with that code."""
    cli.script(T_PY + "import sys; sys.exit(4)\n")
    r = cli.run("diagnose", "t.py", "--out", "run", "--quiet")
    assert cli.meta("run")["status"] == "crashed" and steps_recorded(cli.cwd / "run") == 50
    assert r.returncode in (0, 1)
