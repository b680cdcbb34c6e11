"""The ``rnndoctor`` command: thin click wrappers, no logic of their own.

Exit codes (a contract): 0 diagnosed, no finding at or above ``--fail-on``; 1 findings at or
above it; 2 usage error or an error of rnndoctor itself; 3 the script could not be run.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import click

from . import __version__
from .finding import Diagnosis, Severity
from .text import printable_line

EXIT_OK, EXIT_FINDINGS, EXIT_USAGE, EXIT_NOT_RUNNABLE = 0, 1, 2, 3
SEVERITIES = click.Choice(["info", "warning", "error", "never"], case_sensitive=False)


def _exit_code(diagnosis: Diagnosis, fail_on: str) -> int:
    if fail_on.lower() == "never":
        return EXIT_OK
    return EXIT_FINDINGS if diagnosis.at_least(Severity.parse(fail_on)) else EXIT_OK


def _fail(message: str, code: int = EXIT_USAGE) -> "click.exceptions.Exit":
    click.echo(f"rnndoctor: error: {message}", err=True)
    return click.exceptions.Exit(code)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="rnndoctor")
def cli() -> None:
    """Tells you why your recurrent network will not train, and what to change."""


@cli.command()
@click.argument("script", type=click.Path(dir_okay=False))
@click.argument("script_args", nargs=-1, type=click.UNPROCESSED)
@click.option("--max-steps", type=click.IntRange(min=1), help="Stop after this many optimizer steps.")
@click.option("--timeout", type=click.FloatRange(min=0, min_open=True), help="Stop after this many seconds.")
@click.option("--out", type=click.Path(file_okay=False), help="Run directory (default: reports/run-<time>).")
@click.option("--json", "json_path", type=click.Path(dir_okay=False), help="Also write findings.json here.")
@click.option("--fail-on", default="error", type=SEVERITIES, show_default=True, help="Exit 1 on findings this severe.")
@click.option("--quiet", is_flag=True, help="No progress line.")
def diagnose(
    script: str,
    script_args: tuple[str, ...],
    max_steps: int | None,
    timeout: float | None,
    out: str | None,
    json_path: str | None,
    fail_on: str,
    quiet: bool,
) -> None:
    """Run SCRIPT [ARGS]... (an unmodified training script) under instrumentation and report.

    Put the script's own options after `--`:  rnndoctor diagnose train.py --max-steps 500 -- --lr 0.1
    """
    from .runner import ScriptNotRunnable, run_script
    from .watch import default_out_dir

    args = list(script_args)
    run_dir = Path(out) if out else default_out_dir()
    try:
        outcome = run_script(script, args, out=run_dir, max_steps=max_steps, timeout=timeout, progress=not quiet)
    except ScriptNotRunnable as exc:
        raise _fail(str(exc), EXIT_NOT_RUNNABLE)
    record = outcome.watch.record
    assert record is not None
    if not (record.meta.get("model") or {}).get("roots"):
        click.echo("rnndoctor: the script never called a module with parameters: nothing was recorded.", err=True)
        if outcome.status == "crashed" and not outcome.watch.steps:
            raise click.exceptions.Exit(EXIT_NOT_RUNNABLE)
    elif not (record.meta.get("model") or {}).get("recurrent"):
        click.echo("rnndoctor: note: no nn.RNN/LSTM/GRU or *Cell module found; only generic checks applied.", err=True)
    if json_path:
        Path(json_path).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(run_dir / "findings.json", json_path)
    raise click.exceptions.Exit(_exit_code(outcome.diagnosis, fail_on))


@cli.command()
@click.argument("run_dir", type=click.Path())
@click.option("--json", "json_path", type=click.Path(dir_okay=False), help="Also write findings.json here.")
@click.option("--fail-on", default="never", type=SEVERITIES, show_default=True)
def report(run_dir: str, json_path: str | None, fail_on: str) -> None:
    """Re-diagnose a saved RUN_DIR with the current rules and rewrite its outputs."""
    from .diagnose import diagnose as judge
    from .report.output import write_outputs
    from .report.terminal import print_summary
    from .run import RunDirError, load_run

    try:
        run = load_run(run_dir)
    except RunDirError as exc:
        raise _fail(str(exc))
    diagnosis = judge(run)
    try:  # every file first: a write that fails is then the only line
        write_outputs(run, diagnosis, Path(run_dir), summary=False)
        if json_path:
            Path(json_path).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(Path(run_dir) / "findings.json", json_path)
    except OSError as exc:  # a read-only directory, a folder where a report file goes
        raise _fail(f"cannot write the report: {_os_error_text(exc)}")
    print_summary(run, diagnosis)
    raise click.exceptions.Exit(_exit_code(diagnosis, fail_on))


def _os_error_text(exc: OSError) -> str:
    """``Permission denied: run/findings.json``: the reason and the path, on one line."""
    where = exc.filename2 if exc.filename2 is not None else exc.filename
    reason = exc.strerror or str(exc)
    return f"{reason}: {printable_line(where)}" if where is not None else reason


@cli.command()
@click.argument("rule_id")
def explain(rule_id: str) -> None:
    """Print the documentation of the rule for finding RULE_ID."""
    from .rules import get_rule

    try:
        spec = get_rule(rule_id)
    except KeyError as exc:
        raise _fail(str(exc.args[0]))
    click.echo(f"{spec.id}  ({spec.severity.value}, {spec.family})\n")
    click.echo(spec.doc)
    thresholds = spec.thresholds()
    if thresholds:
        click.echo("\nThresholds: " + ", ".join(f"{k}={v}" for k, v in thresholds.items()))
    click.echo(f"Signals: {', '.join(spec.signals)}")


@cli.command(name="rules")
def list_rules() -> None:
    """List every rule: id, default severity, one-line summary."""
    from .rules import all_rules

    for spec in all_rules():
        click.echo(f"{spec.id:28} {spec.severity.value:8} {spec.summary}")


@cli.command()
@click.argument("paths", nargs=-1, type=click.Path())
@click.option("--jobs", "-j", default=1, type=click.IntRange(min=1), show_default=True, help="Entries run in parallel.")
@click.option("--out", default="reports/check", type=click.Path(file_okay=False), show_default=True, help="Where each entry's run goes.")
@click.option("--junit-xml", type=click.Path(dir_okay=False), help="Write a JUnit XML report here.")
def check(paths: tuple[str, ...], jobs: int, out: str, junit_xml: str | None) -> None:
    """Run expectation files (checks/*.toml) and fail if any entry's findings differ.

    PATHS are .toml files or directories of them (default: checks/).
    """
    from .check_runner import run_all, table, write_junit
    from .checks import CheckFileError, collect

    try:
        entries = collect(list(paths) or ["checks"])
    except CheckFileError as exc:
        raise _fail(str(exc))
    if not entries:
        raise _fail(f"no .toml expectation files in {', '.join(paths) or 'checks'}")
    runs = run_all(entries, Path(out), jobs=jobs)
    click.echo(table(runs))
    if junit_xml:
        write_junit(runs, Path(junit_xml))
    raise click.exceptions.Exit(EXIT_OK if all(r.result.passed for r in runs) else EXIT_FINDINGS)


def main() -> None:
    try:
        cli(standalone_mode=True)
    except KeyboardInterrupt:
        sys.exit(130)
