"""Faults that used to lose the record or report a wrong state (reliability issue, 1-6)."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable, Iterator

import pytest
from harness import T_PY, Cli, steps_recorded

#: T_PY without its end: trains until stopped, slowly after 40 steps, so a signal lands mid-run
ENDLESS = T_PY.replace("for i in range(50):", "import time\nfor i in range(10**9):").rstrip() + "\n    if i >= 40: time.sleep(0.02)\n"


def wait_for_steps(run_dir: Path, n: int, proc: subprocess.Popen, timeout: float = 120) -> None:
    """Until the run's steps signal holds ``n`` training rows (flushes come at 20, 50, 100...)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()
        try:
            if steps_recorded(run_dir) >= n:
                return
        except (OSError, ValueError):
            pass
        time.sleep(0.2)
    raise AssertionError(f"{run_dir} never reached {n} steps")


def from_a_terminal() -> None:
    """Start a child as a terminal does: SIGINT at its default. A background job of a
    non-interactive shell (``cmd &`` in a CI script) inherits SIGINT *ignored*, and Python
    (and so ``diagnose``) then ignores Ctrl-C too; the cells must not depend on how the
    suite itself was started."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def sigint_ignored() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)


@contextlib.contextmanager
def running(cli: Cli, *args: str, preexec: Callable[[], None] = from_a_terminal) -> Iterator[subprocess.Popen]:
    """``python -m rnndoctor ARGS`` in the background; killed on the way out if still alive
    (an endless script must never outlive its test)."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "rnndoctor", *args], cwd=cli.cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True, env={**os.environ, "NO_COLOR": "1"}, preexec_fn=preexec,
    )
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate()


@pytest.mark.parametrize("out", ["run", None], ids=["relative-out", "default-out"])
def test_script_that_changes_directory_keeps_its_record(cli: Cli, out: str | None, tmp_path: Path) -> None:
    """1. ``os.chdir`` at the top of the script: the run directory was resolved afterwards."""
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    cli.script(prefix=f"import os; os.chdir({str(elsewhere)!r})\n")
    r = cli.run("diagnose", "t.py", "--quiet", *(["--out", out] if out else []))
    assert r.returncode == 0, r.output
    run_dir = tmp_path / out if out else next((tmp_path / "reports").glob("run-*"))
    assert cli.meta(run_dir)["status"] == "completed"
    assert steps_recorded(run_dir) == 50
    assert (run_dir / "report.html").is_file() and (run_dir / "findings.json").is_file()
    assert not (elsewhere / "run").exists() and not (elsewhere / "reports").exists()


def test_dunder_file_is_absolute_as_under_python(cli: Cli, tmp_path: Path) -> None:
    """1. ``__file__`` is absolute under ``python t.py``; a script that reads files beside
    itself after ``chdir`` must work the same under rnndoctor."""
    (tmp_path / "data.txt").write_text("3")
    cli.script(prefix="import os, sys\nhere = os.path.dirname(__file__); os.chdir('/')\n"
               "n = int(open(os.path.join(here, 'data.txt')).read()); print('file', __file__, 'argv0', sys.argv[0], 'n', n)\n")
    bare = subprocess.run([sys.executable, "t.py"], cwd=tmp_path, capture_output=True, text=True)
    watched = cli.run("diagnose", "t.py", "--out", "run", "--quiet")
    assert bare.returncode == 0 and watched.returncode == 0, watched.output
    line = [ln for ln in bare.stdout.splitlines() if ln.startswith("file ")]
    assert line and line == [ln for ln in watched.stdout.splitlines() if ln.startswith("file ")]


ARGS = ("diagnose", "t.py", "--out", "shared", "--quiet")


def test_concurrent_runs_into_one_out_never_share_a_record(cli: Cli) -> None:
    """2. Three runs started together with the same ``--out``: one records there, the others
    are refused in one line (exit 2) instead of appending into the same signals (a run that
    starts after another finished may reuse the directory: then it replaces the record)."""
    cli.script()
    with running(cli, *ARGS) as a, running(cli, *ARGS) as b, running(cli, *ARGS) as c:
        results = [(p.wait(timeout=300), p.stderr.read()) for p in (a, b, c)]
    codes = sorted(code for code, _ in results)
    assert codes[0] == 0 and all(c in (0, 2) for c in codes), results
    refused = [err for code, err in results if code == 2]
    assert all("in use by another run" in err and "Traceback" not in err for err in refused), refused
    data = cli.findings("shared")
    assert "duplicate-samples" not in [f["id"] for f in data["findings"]]
    assert steps_recorded(cli.cwd / "shared") == 50


def test_a_finished_run_directory_is_reused_without_old_rows(cli: Cli) -> None:
    """2. (extra) One run after another into the same ``--out``: the second starts clean."""
    cli.script()
    for _ in range(2):
        assert cli.run("diagnose", "t.py", "--out", "run", "--quiet").returncode == 0
    assert steps_recorded(cli.cwd / "run") == 50


def test_watch_inside_a_program_moves_to_a_free_directory(cli: Cli) -> None:
    """2. (extra) ``watch(out=X)`` while another live run holds X records into X-2 and says
    so; the user's program is never stopped by it."""
    cli.script(T_PY.replace("for i in range(50):", "import rnndoctor, torch.nn as nn\n"
               "with rnndoctor.watch(nn.ModuleList([r, f]), out='x') as a, rnndoctor.watch(nn.ModuleList([r, f]), out='x') as b:\n"
               " for i in range(50):").replace("\n    ", "\n     ") + "print('dirs', a.run_dir.name, b.run_dir.name)\n")
    proc = subprocess.run([sys.executable, "t.py"], cwd=cli.cwd, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert "dirs x x-2" in proc.stdout
    assert "is in use by another run" in proc.stderr
    assert steps_recorded(cli.cwd / "x") == 50 and steps_recorded(cli.cwd / "x-2") == 50


def test_sigkill_leaves_a_record_that_says_it_was_killed(cli: Cli) -> None:
    """3. A record whose writer died says so and is judged on the steps it holds."""
    cli.script(ENDLESS)
    with running(cli, "diagnose", "t.py", "--out", "run", "--quiet") as proc:
        wait_for_steps(cli.cwd / "run", 50, proc)
        proc.kill()
    held = steps_recorded(cli.cwd / "run")
    r = cli.run("report", "run")
    assert r.returncode == 0, r.output
    assert f"{held} steps · killed" in r.stderr
    assert f"judged on the {held} steps it recorded" in r.stderr.replace("\n        ", " ")
    data = cli.findings("run")
    assert data["run"]["status"] == "killed" and data["run"]["steps"] == held
    assert any("killed" in n for n in data["notes"])


def test_a_live_run_is_reported_as_still_running(cli: Cli) -> None:
    """3. (extra) ``report`` on a run that is still recording says so (its lock is held)."""
    cli.script(ENDLESS)
    with running(cli, "diagnose", "t.py", "--out", "run", "--quiet") as proc:
        wait_for_steps(cli.cwd / "run", 20, proc)
        r = cli.run("report", "run", "--json", "copy.json")
    assert r.returncode == 0, r.output
    notes = json.loads((cli.cwd / "copy.json").read_text())["notes"]
    assert any("still running" in n for n in notes), notes


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["sigint", "sigterm"])
def test_a_signal_keeps_the_record_and_dies_of_the_signal(cli: Cli, signum: int) -> None:
    """4. Ctrl-C (and SIGTERM: ``timeout``, a CI cancel) keeps the record and the report, then
    the process dies of the signal as ``python t.py`` does (a shell sees 130 / 143)."""
    cli.script(ENDLESS)
    with running(cli, "diagnose", "t.py", "--out", "run", "--quiet") as proc:
        wait_for_steps(cli.cwd / "run", 50, proc)
        proc.send_signal(signum)
        out, err = proc.communicate(timeout=120)
    assert proc.returncode == -signum, (proc.returncode, err)
    meta = cli.meta("run")
    assert meta["status"] == {signal.SIGINT: "interrupted", signal.SIGTERM: "terminated"}[signum]
    assert meta["steps"] >= 50 and steps_recorded(cli.cwd / "run") == meta["steps"]
    assert (cli.cwd / "run" / "report.html").is_file()
    assert "Traceback" not in err


def test_sigint_stops_a_shell_loop(cli: Cli) -> None:
    """4. The reason for dying of SIGINT: ``for ...; do rnndoctor diagnose ...; done`` stops."""
    cli.script(ENDLESS)
    loop = f"for i in 1 2 3; do {sys.executable} -m rnndoctor diagnose t.py --out run-$i --quiet; done; echo loop-finished"
    proc = subprocess.Popen(["bash", "-c", loop], cwd=cli.cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True, preexec_fn=from_a_terminal)
    try:
        wait_for_steps(cli.cwd / "run-1", 50, proc)
        os.killpg(proc.pid, signal.SIGINT)  # as a terminal's Ctrl-C: the whole foreground group
        out, _ = proc.communicate(timeout=120)
    finally:  # a loop that went on must not outlive the test
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    assert "loop-finished" not in out
    assert not (cli.cwd / "run-2").exists()


def test_an_ignored_sigint_stays_ignored_as_under_python(cli: Cli) -> None:
    """4. (extra) Started with SIGINT ignored (``nohup``, ``cmd &`` in a script), ``python
    t.py`` ignores Ctrl-C; so does ``diagnose``: it neither dies nor stops recording."""
    cli.script(ENDLESS)
    with running(cli, "diagnose", "t.py", "--out", "run", "--quiet", preexec=sigint_ignored) as proc:
        wait_for_steps(cli.cwd / "run", 50, proc)
        proc.send_signal(signal.SIGINT)
        time.sleep(1.0)
        assert proc.poll() is None
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=120)
    assert proc.returncode == -signal.SIGTERM
    assert cli.meta("run")["status"] == "terminated"


NESTED = T_PY.replace("for i in range(50):", "import rnndoctor, torch.nn as nn\nm = nn.ModuleList([r, f])\n"
                      "with rnndoctor.watch(m, out='outer', summary=False) as outer:\n"
                      " with rnndoctor.watch(m, out='inner', summary=False) as inner:\n"
                      "  for i in range(50):").replace("\n    ", "\n      ")


def test_nested_watches_both_get_the_data(cli: Cli) -> None:
    """5. ``watch()`` inside ``watch()``: both records hold every step and loss, and neither
    gets findings the other does not (the model is a ModuleList that is never called)."""
    cli.script(NESTED)
    proc = subprocess.run([sys.executable, "t.py"], cwd=cli.cwd, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    for name in ("outer", "inner"):
        assert steps_recorded(cli.cwd / name) == 50
        data = cli.findings(name)
        assert data["skipped"] == [] or all("crashed" not in s["reason"] for s in data["skipped"]), data["skipped"]
        assert data["unjudged"] == []
        assert data["findings"] == [], data["findings"]


def test_a_script_with_its_own_watch_under_diagnose(cli: Cli) -> None:
    """5. ``rnndoctor diagnose`` around a script that calls ``watch()`` itself."""
    cli.script(NESTED)
    r = cli.run("diagnose", "t.py", "--out", "run", "--quiet")
    assert r.returncode == 0, r.output
    for name in ("run", "outer", "inner"):
        assert steps_recorded(cli.cwd / name) == 50, name
        assert cli.findings(name)["unjudged"] == []


def test_no_loss_captured_is_said_plainly(cli: Cli) -> None:
    """6. A loss the capture cannot read (per-sample losses back-propagated as a vector with
    ``backward(ones)``): the summary says no loss was captured, which rules could not judge,
    and how to record one; never "nothing looks wrong", and no rule crashes."""
    cli.script(T_PY.replace("l=F.cross_entropy(f(r(x)[0][:,-1]),y);o.zero_grad();l.backward()",
                            "l=(f(r(x)[0][:,-1])[:,0]-y)**2;o.zero_grad();l.backward(torch.ones_like(l))"))
    r = cli.run("diagnose", "t.py", "--out", "run", "--quiet")
    assert r.returncode == 0, r.output
    assert "nothing in this run looks wrong" not in r.stderr
    assert "no loss was captured" in r.stderr and "run.log(loss=" in r.stderr.replace("\n        ", " ")
    data = cli.findings("run")
    assert data["unjudged"] == ["no loss was captured"]
    assert not [s for s in data["skipped"] if "crashed" in s["reason"]], data["skipped"]
    assert "stuck-at-chance" in " ".join(data["notes"])
    html = (cli.cwd / "run" / "report.html").read_text()
    assert "no loss was captured" in html and "data-healthy" not in html


def test_a_hand_written_scalar_loss_is_captured(cli: Cli) -> None:
    """6b. A cross-entropy written out by hand and back-propagated as a scalar is read from
    its graph: a loss and an accuracy, nothing unjudged."""
    cli.script(T_PY.replace("l=F.cross_entropy(f(r(x)[0][:,-1]),y)", "l=-torch.log_softmax(f(r(x)[0][:,-1]),1).gather(1,y[:,None]).mean()"))
    r = cli.run("diagnose", "t.py", "--out", "run", "--quiet")
    assert r.returncode == 0, r.output
    assert "no loss was captured" not in r.stderr
    assert cli.findings("run")["unjudged"] == []
