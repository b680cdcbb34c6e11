"""pytest plugin (registered through the ``pytest11`` entry point).

Gives tests a ``rnndoctor_watch`` fixture: ``with rnndoctor_watch(model) as run: <train>``,
then ``run.assert_healthy()``, ``run.assert_found("stuck-at-chance")`` or
``run.assert_not_found("non-finite")``. A failing assertion's message is the diagnosis
(``rnndoctor.report.assertion``); a test that used the fixture and fails for another reason
(a plain ``assert``) gets an "rnndoctor runs" section naming its run directories.

Run directories go under ``--rnndoctor-out DIR`` (one per test, named after its node id),
else under the test's temporary directory; ``@pytest.mark.rnndoctor(out=...)`` sets one
test's run directory. ``--rnndoctor-checks DIR`` also collects ``DIR/*.toml`` expectation
files as test items, each run like one entry of ``rnndoctor check``.
"""

from __future__ import annotations

import re
import shutil
import tempfile
from pathlib import Path
from typing import Any, Callable

import pytest

_RUNS = pytest.StashKey[list]()


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("rnndoctor")
    group.addoption(
        "--rnndoctor-out",
        default=None,
        metavar="DIR",
        help="keep rnndoctor run records here, one directory per test (default: the test's tmp_path)",
    )
    group.addoption(
        "--rnndoctor-checks",
        action="append",
        default=[],
        metavar="DIR",
        help="also collect DIR/*.toml rnndoctor expectation files as tests (repeatable)",
    )


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "rnndoctor(out=None, **watch_options): run directory and options for the rnndoctor_watch fixture"
    )
    for d in _check_dirs(config):  # make sure pytest walks them even when testpaths does not
        if not any(_within(d, Path(a.split("::")[0]).resolve()) for a in config.args):
            config.args.append(str(d))


def _out_root(config: pytest.Config) -> Path | None:
    base = config.getoption("--rnndoctor-out")
    if not base:
        return None
    return (config.invocation_params.dir / base).resolve()


def _fresh(run_dir: Path) -> Path:
    """A rerun of the same test replaces its previous record (records are append-only)."""
    from .rundir import META_FILE

    if (run_dir / META_FILE).is_file():
        shutil.rmtree(run_dir)
    return run_dir


@pytest.fixture
def rnndoctor_watch(request: pytest.FixtureRequest, tmp_path: Path) -> Callable[..., Any]:
    """Factory: ``rnndoctor_watch(model=None, **options)`` returns a ``Watch`` to use as ``with``."""
    from .watch import Watch

    root = _out_root(request.config) or tmp_path / "rnndoctor"
    marker = request.node.get_closest_marker("rnndoctor")
    marker_opts = dict(marker.kwargs) if marker else {}
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", request.node.nodeid)[-120:]
    runs: list[Watch] = request.node.stash.setdefault(_RUNS, [])

    def make(model: Any = None, **options: Any) -> Watch:
        opts = {**marker_opts, **options}
        out = opts.pop("out", None)
        n = len(runs) + 1
        if out is None:
            out = root / (safe if n == 1 else f"{safe}-{n}")
        elif "out" not in options and n > 1:  # the marker's directory, for a second watch in the test
            out = f"{out}-{n}"
        opts.setdefault("summary", False)
        # report.html is drawn when the test fails (pytest_runtest_makereport), not for every
        # passing test: a suite of watched tests would otherwise start a drawing process each
        opts.setdefault("report", "none")
        watch = Watch(model, out=_fresh(Path(out)), **opts)
        runs.append(watch)
        return watch

    return make


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    outcome = yield
    report = outcome.get_result()
    runs = item.stash.get(_RUNS, None)
    from .report.assertion import FindingAssertionError
    from .rundir import REPORT_FILE

    explained = call.excinfo is not None and isinstance(call.excinfo.value, FindingAssertionError)
    if runs and report.failed and report.when == "call":
        _draw_reports(runs)
    if runs and report.failed and report.when == "call" and not explained:
        lines = []
        for w in runs:
            d = w.run_dir.resolve()
            ids = ", ".join(f"{f.id} ({f.severity.value})" for f in w.findings) or "none"
            state = f"findings: {ids}" if w.diagnosis is not None else "not finished"
            lines.append(f"{d}  [{state}]\n    report: {d / REPORT_FILE}")
        report.sections.append(("rnndoctor runs", "\n".join(lines)))


def _draw_reports(runs: list[Any]) -> None:
    """The failed test's runs get their report.html now (lazily: a passing test's run keeps
    its record and findings.json; ``rnndoctor report DIR`` draws it)."""
    from .report.output import draw_report
    from .rundir import REPORT_FILE

    for w in runs:
        if w.record is not None and w.diagnosis is not None and not (w.run_dir / REPORT_FILE).exists():
            draw_report(w.record, w.diagnosis, w.run_dir)


# ---------------------------------------------------------------------- checks/*.toml as items
def _check_dirs(config: pytest.Config) -> list[Path]:
    return [(config.invocation_params.dir / d).resolve() for d in config.getoption("--rnndoctor-checks") or []]


def _within(path: Path, parent: Path) -> bool:
    return path == parent or parent in path.parents


def pytest_collect_file(file_path: Path, parent: pytest.Collector) -> pytest.Collector | None:
    if file_path.suffix == ".toml" and any(file_path.parent == d for d in _check_dirs(parent.config)):
        return CheckFile.from_parent(parent, path=file_path)
    return None


class CheckFailed(Exception):
    """An expectation entry whose run did not match (its text lists every reason)."""


class CheckFile(pytest.File):
    def collect(self) -> Any:
        from .checks import CheckFileError, load_check
        from .text import printable_line

        try:
            entry = load_check(self.path)
        except CheckFileError as exc:  # the file's mistake, as `rnndoctor check` words it
            raise self.CollectError(printable_line(exc)) from None
        yield CheckItem.from_parent(self, name=entry.name, entry=entry)


class CheckItem(pytest.Item):
    def __init__(self, *, entry: Any, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.entry = entry
        self.add_marker("rnndoctor")

    def runtest(self) -> None:
        from .check_runner import run_entry
        from .rundir import REPORT_FILE
        from .text import printable

        base = _out_root(self.config)
        if base is None:
            factory = getattr(self.config, "_tmp_path_factory", None)
            base = factory.mktemp("rnndoctor-check") if factory else Path(tempfile.mkdtemp(prefix="rnndoctor-check-"))
        else:
            base = base / "check"
        run = run_entry(self.entry, base)
        self.user_properties.append(("rnndoctor_run_dir", str(run.run_dir)))
        if not run.result.passed:
            lines = [f"rnndoctor check {self.entry.name}: {run.status}, {run.seconds:.1f} s"]
            lines += [f"  {r}" for r in run.result.reasons]
            lines.append(f"  found: {', '.join(run.result.found) or 'nothing'}")
            lines.append(f"run directory: {run.run_dir}")
            lines.append(f"report: {run.run_dir / REPORT_FILE}")
            if run.status in ("error", "timeout") and run.output:
                lines.append("output (tail):\n" + run.output[-2000:])
            raise CheckFailed(printable("\n".join(lines)))  # reasons and output come from the user's script

    def repr_failure(self, excinfo: pytest.ExceptionInfo[BaseException], style: Any = None) -> Any:
        if isinstance(excinfo.value, CheckFailed):
            return str(excinfo.value)
        return super().repr_failure(excinfo, style)

    def reportinfo(self) -> tuple[Path, int, str]:
        return self.path, 0, f"rnndoctor check: {self.entry.name} ({self.entry.script.name})"
