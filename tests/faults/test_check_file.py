"""Fault matrix of ``rnndoctor check``: malformed expectation files, hostile strings in results.

A malformed ``checks/*.toml`` is the user's mistake in a file: it must be one line naming the
file and what is wrong, exit 2 (the README's contract), before any entry runs. Strings from a
user's script (an exception's type and message, a file name) must not break the JUnit file or
reach the terminal as control sequences.
"""

from __future__ import annotations

import re
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from harness import PACKAGE_DIR, T_PY, Cli, Result, our_frames

SCRIPT = 'script = "t.py"\n'

#: (file body, what the one error line must say); one cell per bad field value
BAD_FIELDS = [
    pytest.param(SCRIPT + 'timeout = "10"\n', "timeout must be a positive number of seconds, got the string '10'", id="timeout-string"),
    pytest.param(SCRIPT + "timeout = 0\n", "timeout must be a positive number of seconds, got the integer 0", id="timeout-zero"),
    pytest.param(SCRIPT + "timeout = -1.5\n", "timeout must be a positive number of seconds, got the float -1.5", id="timeout-negative"),
    pytest.param(SCRIPT + "timeout = nan\n", "timeout must be a positive number of seconds, got the float nan", id="timeout-nan"),
    pytest.param(SCRIPT + "timeout = inf\n", "timeout must be a positive number of seconds, got the float inf", id="timeout-inf"),
    pytest.param(SCRIPT + "timeout = true\n", "timeout must be a positive number of seconds, got the boolean true", id="timeout-bool"),
    pytest.param(SCRIPT + 'max_steps = "abc"\n', "max_steps must be a positive integer, got the string 'abc'", id="max_steps-string"),
    pytest.param(SCRIPT + "max_steps = -5\n", "max_steps must be a positive integer, got the integer -5", id="max_steps-negative"),
    pytest.param(SCRIPT + "max_steps = 0\n", "max_steps must be a positive integer, got the integer 0", id="max_steps-zero"),
    pytest.param(SCRIPT + "max_steps = 1.5\n", "max_steps must be a positive integer, got the float 1.5", id="max_steps-float"),
    pytest.param(SCRIPT + "max_steps = true\n", "max_steps must be a positive integer, got the boolean true", id="max_steps-bool"),
    pytest.param(SCRIPT + 'expect = "stuck-at-chance"\n', "expect must be a list of finding ids, got the string 'stuck-at-chance'", id="expect-string"),
    pytest.param(SCRIPT + "expect = [1]\n", "expect[0] must be a finding id (a string), got the integer 1", id="expect-item-int"),
    pytest.param(SCRIPT + 'expect = ["non-finit"]\n', "unknown finding id 'non-finit' in expect (did you mean 'non-finite'?)", id="expect-misspelt"),
    pytest.param(SCRIPT + 'expect = ["stuck-at-chanse>=error"]\n', "unknown finding id 'stuck-at-chanse' in expect (did you mean 'stuck-at-chance'?)", id="expect-misspelt-with-severity"),
    pytest.param(SCRIPT + 'expect = ["zzz"]\n', "unknown finding id 'zzz' in expect (`rnndoctor rules` lists them)", id="expect-unknown"),
    pytest.param(SCRIPT + 'forbid = "non-finite"\n', "forbid must be a list of finding ids, got the string 'non-finite'", id="forbid-string"),
    pytest.param(SCRIPT + 'forbid = ["divergance"]\n', "unknown finding id 'divergance' in forbid (did you mean 'divergence'?)", id="forbid-misspelt"),
    pytest.param(SCRIPT + 'forbid = ["non-finite>=fatal"]\n', "unknown severity 'fatal' in forbid 'non-finite>=fatal'; use one of info, warning, error", id="forbid-severity"),
    pytest.param(SCRIPT + 'expect = ["non-finite"]\nforbid = ["non-finite"]\n', "'non-finite' is both expected and forbidden", id="expect-and-forbid"),
    pytest.param(SCRIPT + "fail_on = 3\n", "fail_on must be one of info, warning, error, never, got the integer 3", id="fail_on-int"),
    pytest.param(SCRIPT + 'fail_on = "fatal"\n', "fail_on must be one of info, warning, error, never, got the string 'fatal'", id="fail_on-unknown"),
    pytest.param('script = ""\n', "script must be a non-empty path, got the string ''", id="script-empty"),
    pytest.param("script = 5\n", "script must be a non-empty path, got the integer 5", id="script-int"),
    pytest.param('script = "t\\u0000.py"\n', "script contains a NUL character", id="script-nul"),
    pytest.param(SCRIPT + 'args = "--seed 1"\n', "args must be a list of strings, got the string '--seed 1'", id="args-string"),
    pytest.param(SCRIPT + "args = [true]\n", "args[0] must be a string or a number, got the boolean true", id="args-bool"),
    pytest.param(SCRIPT + 'args = ["--seed", ["1"]]\n', "args[1] must be a string or a number, got the array ['1']", id="args-nested"),
    pytest.param(SCRIPT + 'args = ["a\\u0000b"]\n', "args[0] contains a NUL character", id="args-nul"),
    pytest.param(SCRIPT + "description = 5\n", "description must be a string, got the integer 5", id="description-int"),
]


#: a traceback entry of ours as pytest's long style prints it: ``.../rnndoctor/check_runner.py:45: TypeError``
_PYTEST_FRAME = re.compile(re.escape(str(PACKAGE_DIR)) + r"[/\\][^\s:]+:\d+: ")


def one_error_line(result: Result) -> str:
    """The single ``rnndoctor: error:`` line a malformed file must give, and nothing else."""
    assert result.returncode == 2, result.output
    assert result.stdout == "", result.output
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("rnndoctor: error: "), result.output
    return lines[0]


@pytest.mark.parametrize("body, says", BAD_FIELDS)
def test_bad_field_is_one_line_error_before_anything_runs(cli: Cli, body: str, says: str) -> None:
    cli.script()
    (cli.cwd / "bad.toml").write_text(body, encoding="utf-8")
    result = cli.run("check", "bad.toml", "--out", "runs", "--junit-xml", "junit.xml")
    assert one_error_line(result) == f"rnndoctor: error: bad.toml: {says}"
    assert not (cli.cwd / "runs").exists()  # no entry ran: the file is wrong, not the run


def test_good_file_next_to_a_bad_one_does_not_run(cli: Cli) -> None:
    """Every file is read before any entry runs: a typo found after minutes of runs wastes them."""
    cli.script()
    checks = cli.cwd / "checks"
    checks.mkdir()
    (checks / "a_good.toml").write_text(SCRIPT + "max_steps = 5\n", encoding="utf-8")
    (checks / "b_bad.toml").write_text(SCRIPT + 'max_steps = "abc"\n', encoding="utf-8")
    result = cli.run("check", "checks", "--out", "runs")
    assert one_error_line(result) == f"rnndoctor: error: {Path('checks', 'b_bad.toml')}: max_steps must be a positive integer, got the string 'abc'"
    assert not (cli.cwd / "runs").exists()


def test_args_numbers_are_passed_as_strings(cli: Cli) -> None:
    """``args = ["--seed", 1, "--lr", 0.5]`` is what people write; the script gets sys.argv strings."""
    cli.script("import sys\nassert sys.argv[1:] == ['--seed', '1', '--lr', '0.5'], sys.argv\n" + T_PY)
    (cli.cwd / "nums.toml").write_text(SCRIPT + 'args = ["--seed", 1, "--lr", 0.5]\nmax_steps = 3\nfail_on = "never"\n', encoding="utf-8")
    result = cli.run("check", "nums.toml", "--out", "runs")
    assert result.returncode == 0, result.output
    assert "1 passed, 0 failed" in result.stdout


def test_file_name_with_control_characters_is_still_one_printable_line(cli: Cli) -> None:
    name = "bad\nname\x1b]0;pwned\x07.toml"
    (cli.cwd / name).write_text(SCRIPT + "expekt = []\n", encoding="utf-8")
    line = one_error_line(cli.run("check", name))
    assert "\x1b" not in line and "\x07" not in line
    assert "bad\\nname\\x1b]0;pwned\\x07.toml: unknown key(s) expekt" in line


@pytest.mark.parametrize(
    "body, says",
    [
        pytest.param('timeout = "10"\n', "timeout must be a positive number of seconds, got the string '10'", id="timeout-string"),
        pytest.param('expect = ["non-finit"]\n', "unknown finding id 'non-finit' in expect (did you mean 'non-finite'?)", id="expect-misspelt"),
    ],
)
def test_pytest_plugin_reports_a_bad_file_as_a_collection_error(cli: Cli, body: str, says: str) -> None:
    """``pytest --rnndoctor-checks DIR``: the same file, the same message, as pytest's collection error."""
    checks = cli.cwd / "checks"
    checks.mkdir()
    (checks / "bad.toml").write_text('script = "missing.py"\n' + body, encoding="utf-8")
    argv = [sys.executable, "-m", "pytest", "--rnndoctor-checks", "checks", "-p", "no:cacheprovider", "--tb=native", "-q"]
    proc = subprocess.run(argv, capture_output=True, text=True, cwd=cli.cwd, timeout=300)
    out = proc.stdout + proc.stderr
    assert not our_frames(out) and not _PYTEST_FRAME.search(out), f"rnndoctor's own traceback reached the user:\n{out}"
    assert proc.returncode == 2, out  # pytest: interrupted by a collection error
    assert "ERROR collecting checks/bad.toml" in out, out
    assert f"bad.toml: {says}" in out, out


def test_file_that_is_not_utf8_is_one_line_error(cli: Cli) -> None:
    """TOML is UTF-8; a file saved as Latin-1 by an editor must not crash the reader."""
    (cli.cwd / "latin.toml").write_bytes((SCRIPT + 'description = "café"\n').encode("latin-1"))
    assert one_error_line(cli.run("check", "latin.toml")) == "rnndoctor: error: latin.toml: not UTF-8 text (byte 34)"


# ------------------------------------------------------------------ hostile strings in results
#: T_PY, then a crash whose exception type and message carry an OSC title sequence, BEL, NUL, SOH
CRASH_PY = T_PY + r'''
Hostile = type("Crash\x1b]0;pwned\x07\x01", (RuntimeError,), {})
raise Hostile("dataset \x1b]0;pwned\x07 missing \x00 here \x01")
'''
#: an entry whose own name (its file name) carries the same
HOSTILE_NAME = "name\x1b]0;pwned\x07\x01"


@pytest.fixture(scope="module")
def hostile_check(tmp_path_factory: pytest.TempPathFactory) -> tuple[Result, Path]:
    """One ``rnndoctor check`` run (about 10 s) shared by the JUnit and the table cells."""
    cli = Cli(tmp_path_factory.mktemp("hostile"))
    cli.script(CRASH_PY)
    checks = cli.cwd / "checks"
    checks.mkdir()
    (checks / "crash.toml").write_text(SCRIPT, encoding="utf-8")
    (checks / f"{HOSTILE_NAME}.toml").write_text('script = "missing.py"\n', encoding="utf-8")
    result = cli.run("check", "checks", "-j", "2", "--out", "runs", "--junit-xml", "junit.xml")
    return result, cli.cwd / "junit.xml"


def test_junit_is_well_formed_when_messages_hold_control_characters(hostile_check: tuple[Result, Path]) -> None:
    result, junit = hostile_check
    assert result.returncode == 1, result.output
    root = ET.parse(junit).getroot()  # raises on a NUL, ESC or BEL in the file
    cases = {c.get("name"): c for c in root.iter("testcase")}
    assert set(cases) == {"crash", "name\\x1b]0;pwned\\x07\\x01"}
    failure = cases["crash"].find("failure")
    assert failure is not None
    message = failure.get("message") or ""
    assert "the script crashed with Crash\\x1b]0;pwned\\x07\\x01: dataset \\x1b]0;pwned\\x07 missing \\x00 here \\x01" in message
    assert "\\x00" in (failure.text or "")
    assert cases["name\\x1b]0;pwned\\x07\\x01"].find("error") is not None


def test_table_shows_control_characters_escaped(hostile_check: tuple[Result, Path]) -> None:
    result, _ = hostile_check
    assert result.returncode == 1, result.output
    for raw in ("\x1b", "\x07", "\x00", "\x01"):
        assert raw not in result.stdout, result.stdout
    assert "crashed with Crash\\x1b]0;pwned\\x07\\x01: dataset \\x1b]0;pwned\\x07 missing \\x00 here" in result.stdout
    assert "name\\x1b]0;pwned\\x07\\x01" in result.stdout
    assert "0 passed, 2 failed" in result.stdout


def test_entry_whose_script_is_gone_is_not_judged_by_the_last_runs_findings(cli: Cli) -> None:
    """``--out`` is reused between runs: a script that cannot run must not pass on old findings."""
    cli.script()
    (cli.cwd / "e.toml").write_text(SCRIPT + 'max_steps = 3\nfail_on = "never"\n', encoding="utf-8")
    assert cli.run("check", "e.toml", "--out", "runs").returncode == 0
    (cli.cwd / "t.py").unlink()
    result = cli.run("check", "e.toml", "--out", "runs")
    assert result.returncode == 1, result.output
    assert "could not run (exit 3)" in result.stdout and "0 passed, 1 failed" in result.stdout
