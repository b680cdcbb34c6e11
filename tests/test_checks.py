"""`rnndoctor check` and the expectation format: our own fixtures, wrong expectations, crashes."""

import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from rnndoctor.checks import CheckFileError, Expectation, evaluate, load_check
from rnndoctor.finding import Finding, Severity

ROOT = Path(__file__).resolve().parent.parent
CHECKS = sorted((ROOT / "checks").glob("*.toml"))
#: cases written from the failure descriptions by people who had not read the rules: every
#: hand-written cell style, and every data pipeline, each bug with its healthy twin
CASE_DIRS = ("hand_cells", "pipelines")
#: batches written blind and measured once, before any change they prompted; entries of the
#: first still fail (their misses are stated in the issue notes), so they are measurements
#: (bench/heldout_score.py), not tests
HELD_OUT = ("heldout", "heldout2", "heldout3", "heldout4", "heldout5", "heldout6", "heldout7", "heldout8", "heldout9", "heldout10", "heldout11")


def rnndoctor(*args, cwd=ROOT):
    return subprocess.run([sys.executable, "-m", "rnndoctor", *args], capture_output=True, text=True, cwd=cwd)


def finding(id, severity="error"):
    return Finding(id=id, severity=Severity(severity), title=id, explanation="", fix="")


def test_every_fixture_has_a_check_and_every_check_a_fixture():
    checks = CHECKS + [c for d in (*CASE_DIRS, *HELD_OUT) for c in (ROOT / "checks" / d).glob("*.toml")]
    scripts = {load_check(c).script.resolve() for c in checks}
    fixtures = {p.resolve() for p in (ROOT / "fixtures").rglob("*.py")}
    assert scripts == fixtures


@pytest.mark.parametrize("case_dir", CASE_DIRS)
def test_every_case_passes_its_check(tmp_path, case_dir):
    """Each bug found, each healthy twin quiet (``rnndoctor check checks/<dir>``)."""
    cases = sorted((ROOT / "checks" / case_dir).glob("*.toml"))
    assert len(cases) >= 10
    proc = rnndoctor("check", f"checks/{case_dir}", "--jobs", "2", "--out", str(tmp_path / "runs"))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"{len(cases)} passed, 0 failed" in proc.stdout, proc.stdout


def test_all_fixture_checks_pass_through_the_cli(tmp_path):
    """The CI assertion of the fixtures: each entry in its own process, as a user runs it."""
    junit = tmp_path / "junit.xml"
    proc = rnndoctor("check", "checks", "--jobs", "2", "--out", str(tmp_path / "runs"), "--junit-xml", str(junit))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"{len(CHECKS)} passed, 0 failed" in proc.stdout
    suite = ET.parse(junit).getroot().find("testsuite")
    assert suite.get("tests") == str(len(CHECKS)) and suite.get("failures") == "0"
    assert {c.get("name") for c in suite.iter("testcase")} == {c.stem for c in CHECKS}
    for c in CHECKS:
        assert (tmp_path / "runs" / c.stem / "findings.json").is_file()


def test_wrong_expectation_and_crashing_entry_fail_clearly(tmp_path):
    crash = tmp_path / "crash.py"
    crash.write_text("raise RuntimeError('dataset missing')\n")
    (tmp_path / "wrong.toml").write_text(
        f'script = "{ROOT / "fixtures" / "parity_varlen_packed.py"}"\nmax_steps = 20\nexpect = ["non-finite"]\n'
    )
    (tmp_path / "crashes.toml").write_text(f'script = "{crash}"\nexpect = []\n')
    junit = tmp_path / "j.xml"
    proc = rnndoctor("check", str(tmp_path), "-j", "2", "--out", str(tmp_path / "runs"), "--junit-xml", str(junit))
    assert proc.returncode == 1
    assert "expected non-finite was not found" in proc.stdout
    assert "crashed with RuntimeError" in proc.stdout or "could not run" in proc.stdout
    assert "0 passed, 2 failed" in proc.stdout
    cases = {c.get("name"): c for c in ET.parse(junit).getroot().iter("testcase")}
    assert cases["wrong"].find("failure") is not None


def test_a_forbidden_id_with_a_severity_may_be_found_below_it(tmp_path):
    path = tmp_path / "e.toml"
    path.write_text('script = "x.py"\nforbid = ["resampled-parameters>=warning"]\nfail_on = "never"\n')
    entry = load_check(path)
    assert evaluate(entry, [finding("resampled-parameters", "info")]).passed
    r = evaluate(entry, [finding("resampled-parameters", "warning")])
    assert r.reasons == ["forbidden resampled-parameters was found at warning: resampled-parameters"]


def test_evaluate_expect_forbid_fail_on(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text('script = "x.py"\nexpect = ["stuck-at-chance>=error"]\nforbid = ["non-finite"]\nfail_on = "warning"\n')
    entry = load_check(path)
    assert entry.expect == (Expectation("stuck-at-chance", Severity.ERROR),)
    assert evaluate(entry, [finding("stuck-at-chance")]).passed
    assert not evaluate(entry, [finding("stuck-at-chance", "warning")]).passed
    r = evaluate(entry, [finding("stuck-at-chance"), finding("non-finite")])
    assert r.reasons == ["forbidden non-finite was found: non-finite"]
    r = evaluate(entry, [finding("stuck-at-chance"), finding("learning-rate-scale", "warning")])
    assert r.reasons == ["unexpected warning learning-rate-scale: learning-rate-scale"]
    assert evaluate(entry, [finding("stuck-at-chance"), finding("label-imbalance", "info")]).passed


def test_malformed_check_files_are_one_line_errors(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("script = [unclosed\n")
    with pytest.raises(CheckFileError, match="invalid TOML"):
        load_check(bad)
    bad.write_text('script = "x.py"\nexpekt = []\n')
    with pytest.raises(CheckFileError, match="unknown key"):
        load_check(bad)
    proc = rnndoctor("check", str(tmp_path / "nothing-here"))
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1
