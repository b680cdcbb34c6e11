"""The pytest plugin as a user meets it: user test files run through ``pytester``.

The plugin is not registered here: it is loaded through the ``pytest11`` entry point,
as in a user's project where rnndoctor is installed.
"""

import json
import textwrap
from pathlib import Path

import pytest

pytest_plugins = ["pytester"]

ROOT = Path(__file__).resolve().parent.parent

# A user's helpers: a tiny LSTM/GRU classifier over continuous sequences (no input repeats),
# trained a few Adam steps on CPU. ``labels="sign"`` is learnable (the sign of the first
# value); ``labels="random"`` cannot be learnt from the input: the run sits at chance.
USER_MODEL = '''
import torch
import torch.nn.functional as F
from torch import nn


class Net(nn.Module):
    def __init__(self, cell=nn.LSTM):
        super().__init__()
        self.rnn = cell(1, 16, batch_first=True)
        self.head = nn.Linear(16, 2)

    def forward(self, x):
        out, _ = self.rnn(x)
        return self.head(out[:, -1])


def train(model, steps, labels="sign", poison=False):
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(steps):
        x = torch.randn(32, 8, 1)
        y = (x[:, 0, 0] > 0).long() if labels == "sign" else torch.randint(0, 2, (32,))
        if poison:
            x = x * float("inf")
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
'''


@pytest.fixture(scope="module")
def warm_torch():
    """In-process pytester runs restore ``sys.modules`` afterwards; torch modules imported
    lazily inside a run (``torch._dynamo`` on the first ``opt.step()``) would then register
    their C++ operators twice on the next run. Importing them here, once, avoids that."""
    namespace = {}
    exec(USER_MODEL, namespace)
    namespace["train"](namespace["Net"](), 2)


@pytest.fixture
def user(pytester, warm_torch):
    pytester.makepyfile(usermodel=USER_MODEL)
    pytester.syspathinsert()
    return pytester


def write_tests(pytester, body):
    header = "import pytest\nimport torch\nfrom torch import nn\nfrom usermodel import Net, train\n\n"
    pytester.makepyfile(test_user=header + textwrap.dedent(body))


def output(result):
    return "\n".join(result.outlines + result.errlines)


def test_healthy_lstm_and_gru_runs_pass(user):
    write_tests(
        user,
        """
        @pytest.mark.parametrize("cell", [nn.LSTM, nn.GRU])
        def test_learns(rnndoctor_watch, cell):
            torch.manual_seed(0)
            model = Net(cell)
            with rnndoctor_watch(model) as run:
                train(model, 40)
            run.assert_healthy()
            run.assert_not_found("non-finite")
            assert run.steps == 40
        """,
    )
    result = user.runpytest()
    result.assert_outcomes(passed=2)


def test_nan_run_satisfies_assert_found_and_fails_assert_not_found(user):
    write_tests(
        user,
        """
        def run_poisoned(rnndoctor_watch):
            torch.manual_seed(0)
            model = Net()
            with rnndoctor_watch(model) as run:
                train(model, 5, poison=True)
            return run

        def test_found(rnndoctor_watch):
            f = run_poisoned(rnndoctor_watch).assert_found("non-finite", "error")
            assert f.severity == "error"

        def test_not_found(rnndoctor_watch):
            run_poisoned(rnndoctor_watch).assert_not_found("non-finite")
        """,
    )
    result = user.runpytest()
    result.assert_outcomes(passed=1, failed=1)
    out = output(result)
    result.stdout.fnmatch_lines(
        [
            "*rnndoctor.FindingAssertionError: forbidden finding 'non-finite' was reported (error): *non-finite*",
            "*findings (5 steps, completed):*",
            "*> ERROR*non-finite — *",
            "*where: *step=0*",
            "*evidence: first_step=0 * first_nonfinite_loss_step=*",
            "*fix: *",
            "*run directory: *test_user.py_test_not_found",
            "*report: *test_user.py_test_not_found*report.html",
        ]
    )
    # the user's line is shown, not rnndoctor's internals
    assert ">       run_poisoned(rnndoctor_watch).assert_not_found(\"non-finite\")" in out
    assert "def assert_not_found" not in out and "_explain_failure" not in out


def test_healthy_run_fails_assert_found_with_the_findings_listed(user):
    write_tests(
        user,
        """
        def test_expects_nan(rnndoctor_watch):
            torch.manual_seed(0)
            model = Net(nn.GRU)
            with rnndoctor_watch(model) as run:
                train(model, 30)
            run.assert_found("non-finite")

        def test_typo(rnndoctor_watch):
            torch.manual_seed(0)
            model = Net(nn.GRU)
            with rnndoctor_watch(model) as run:
                train(model, 3)
            run.assert_found("stuck-at-chanse")
        """,
    )
    result = user.runpytest()
    result.assert_outcomes(failed=2)
    result.stdout.fnmatch_lines(
        [
            "*rnndoctor.FindingAssertionError: expected finding 'non-finite' was not reported",
            "*findings (30 steps, completed):*",
            "*run directory: *test_expects_nan",
            "*report: *test_expects_nan*report.html",
        ]
    )
    result.stdout.fnmatch_lines(["*'stuck-at-chanse' is not a finding id rnndoctor reports; known ids: *stuck-at-chance*"])


def test_stuck_run_fails_assert_healthy_with_evidence(user):
    """Random labels: the output cannot depend on the input, accuracy sits at 1/K."""
    write_tests(
        user,
        """
        def test_stuck(rnndoctor_watch):
            torch.manual_seed(0)
            model = Net(nn.LSTM)
            with rnndoctor_watch(model) as run:
                train(model, 120, labels="random")
            run.assert_healthy()
        """,
    )
    result = user.runpytest()
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        [
            "*rnndoctor.FindingAssertionError: run is not healthy: 1 finding at or above error: stuck-at-chance",
            "*findings (120 steps, completed):*error*",
            "*> ERROR*stuck-at-chance — Accuracy * is stuck at the chance 1/K*",
            "*where: steps=*",
            "*evidence: *loss=0.69* accuracy=0.4* baseline=0.5* baseline_kind=chance 1/K*",
            "*run directory: *test_user.py_test_stuck",
            "*report: *test_user.py_test_stuck*report.html",
            "*findings: *test_user.py_test_stuck*findings.json",
        ]
    )
    assert "rnndoctor runs" not in output(result)  # the assertion already named the run


def test_rnndoctor_out_keeps_records_and_replaces_them_on_rerun(user):
    write_tests(
        user,
        """
        def test_short(rnndoctor_watch):
            torch.manual_seed(0)
            model = Net()
            with rnndoctor_watch(model) as run:
                train(model, 6)
            assert False, "the user's own check failed"

        def test_fine(rnndoctor_watch):
            torch.manual_seed(0)
            model = Net()
            with rnndoctor_watch(model) as run:
                train(model, 6)
        """,
    )
    out = user.path / "ci-runs"
    for _ in range(2):  # a rerun must not append to the previous record
        result = user.runpytest("--rnndoctor-out", "ci-runs")
        result.assert_outcomes(failed=1, passed=1)
    run_dir = out / "test_user.py_test_short"
    assert (run_dir / "findings.json").is_file() and (run_dir / "meta.json").is_file()
    assert json.loads((run_dir / "meta.json").read_text())["steps"] == 6
    steps = (run_dir / "signals" / "steps.jsonl").read_text().splitlines()
    assert len([s for s in steps if '"mode": "train"' in s]) == 6
    # a plain assert failed: the plugin still names the run directory, and has drawn the report
    result.stdout.fnmatch_lines(["*- rnndoctor runs -*", f"{run_dir}  [[]findings: *", f"*report: {run_dir}*report.html"])
    assert "re-render with" in (run_dir / "report.html").read_text()  # the report itself
    # drawn lazily, for failed tests only: a passing test's run keeps its record, no drawing work
    fine = out / "test_user.py_test_fine"
    assert (fine / "findings.json").is_file() and not (fine / "report.html").exists()


def test_marker_sets_the_run_directory(user):
    write_tests(
        user,
        """
        @pytest.mark.rnndoctor(out="marked/run")
        def test_marked(rnndoctor_watch):
            torch.manual_seed(0)
            for _ in range(2):
                model = Net()
                with rnndoctor_watch(model) as run:
                    train(model, 4)
                run.assert_not_found("non-finite")
        """,
    )
    result = user.runpytest("--rnndoctor-out", "ignored-for-marked")
    result.assert_outcomes(passed=1)
    assert (user.path / "marked" / "run" / "findings.json").is_file()
    assert (user.path / "marked" / "run-2" / "findings.json").is_file()
    assert not (user.path / "ignored-for-marked").exists()


def test_plugin_is_loaded_from_the_entry_point_in_a_fresh_interpreter(user):
    write_tests(
        user,
        """
        def test_not_finished(rnndoctor_watch):
            run = rnndoctor_watch(Net())
            with run:
                run.assert_not_found("non-finite")
        """,
    )
    result = user.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        [
            "*rnndoctor.FindingAssertionError: cannot check that 'non-finite' was not reported",
            "*the watch has not finished: call run.assert_*() after the `with` block",
        ]
    )
    help_result = user.runpytest_subprocess("--help")
    help_result.stdout.fnmatch_lines(["*--rnndoctor-out=DIR*", "*--rnndoctor-checks=DIR*"])


def test_rnndoctor_checks_collects_expectation_files(user):
    checks = user.mkdir("checks")
    fixture = ROOT / "fixtures" / "identity_lstm_nan.py"
    (checks / "nan_found.toml").write_text(f'script = "{fixture}"\nmax_steps = 10\nexpect = ["non-finite", "forget-gate-saturation"]\n')
    (checks / "nan_forbidden.toml").write_text(f'script = "{fixture}"\nmax_steps = 10\nforbid = ["non-finite"]\n')
    crash = user.path / "crash.py"
    crash.write_text("raise RuntimeError('dataset missing')\n")
    (checks / "crashes.toml").write_text(f'script = "{crash}"\n')
    user.makeini("[pytest]\ntestpaths = tests\n")  # checks/ is collected although testpaths omits it
    user.mkdir("tests")
    (user.path / "tests" / "test_plain.py").write_text("def test_plain():\n    pass\n")
    result = user.runpytest("--rnndoctor-checks", "checks", "--rnndoctor-out", "out", "-v")
    result.assert_outcomes(passed=2, failed=2)
    result.stdout.fnmatch_lines_random(
        [
            "*checks/nan_found.toml::nan_found PASSED*",
            "*checks/nan_forbidden.toml::nan_forbidden FAILED*",
            "*checks/crashes.toml::crashes FAILED*",
            "*tests/test_plain.py::test_plain PASSED*",
            "*rnndoctor check nan_forbidden: *",
            "*forbidden non-finite was found: *",
            f"*run directory: {user.path / 'out' / 'check' / 'nan_forbidden'}",
        ]
    )
    assert "crashed with RuntimeError" in output(result) or "could not run" in output(result)
    # without the option, the .toml files are not tests
    user.runpytest("checks").assert_outcomes()


def test_readme_shows_the_github_actions_example_verbatim():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    block = readme.split("<!-- github-actions-example -->\n```yaml\n", 1)[1].split("```\n<!-- /github-actions-example -->", 1)[0]
    workflow = (ROOT / "docs" / "github-actions-example.yml").read_text(encoding="utf-8")
    assert block == workflow
    assert "rnndoctor check checks/ --jobs 2" in workflow and "actions/upload-artifact@v4" in workflow
    assert "--index-url https://download.pytorch.org/whl/cpu" in workflow and "if: always()" in workflow
