"""The ``rnndoctor`` command: thin click wrappers, no logic of their own.

Exit codes (a contract): 0 diagnosed, no finding at or above ``--fail-on``; 1 findings at or
above it; 2 usage error or an error of rnndoctor itself; 3 the script could not be run.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import signal
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import click

from ._version import __version__
from .finding import Diagnosis, Severity
from .text import printable, printable_line
from .rundir import FINDINGS_FILE

if TYPE_CHECKING:
    from .run import Run

EXIT_OK, EXIT_FINDINGS, EXIT_USAGE, EXIT_NOT_RUNNABLE = 0, 1, 2, 3
SEVERITIES = click.Choice(["info", "warning", "error", "never"], case_sensitive=False)


def _exit_code(diagnosis: Diagnosis, fail_on: str) -> int:
    if fail_on.lower() == "never":
        return EXIT_OK
    return EXIT_FINDINGS if diagnosis.at_least(Severity.parse(fail_on)) else EXIT_OK


def _fail(message: str, code: int = EXIT_USAGE) -> "click.exceptions.Exit":
    click.echo(f"rnndoctor: error: {printable_line(message)}", err=True)
    return click.exceptions.Exit(code)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="rnndoctor")
def cli() -> None:
    """Tells you why your recurrent network will not train, and what to change."""


def _positive_seconds(ctx: click.Context, param: click.Parameter, value: float | None) -> float | None:
    if value is not None and not (math.isfinite(value) and value > 0):
        raise click.BadParameter(f"{value} is not a positive, finite number of seconds")
    return value


@cli.command()
@click.argument("script", type=click.Path(dir_okay=False))
@click.argument("script_args", nargs=-1, type=click.UNPROCESSED)
@click.option("--max-steps", type=click.IntRange(min=1), help="Stop after this many optimizer steps.")
@click.option("--timeout", type=float, callback=_positive_seconds, help="Stop after this many seconds.")
@click.option("--out", type=click.Path(file_okay=False), help="Run directory (default: reports/run-<time>); refused while another run records there.")
@click.option("--json", "json_path", type=click.Path(dir_okay=False), help="Also write findings.json here.")
@click.option("--fail-on", default="error", type=SEVERITIES, show_default=True, help="Exit 1 on findings this severe.")
@click.option("--redact-args", is_flag=True, help="Keep the script's arguments out of the record and report.")
@click.option("--quiet", is_flag=True, help="No progress line.")
@click.option("--no-probe", "no_probe", multiple=True, metavar="NAME", help="Switch a probe off (repeatable; `rnndoctor probes` lists them).")
@click.option("--try-fixes", is_flag=True, help="Re-run the script once per fix for the causes found, each in its own process, and report which fix worked.")
@click.option("--jobs", "-j", default=1, type=click.IntRange(min=1), show_default=True, help="Fix trials run in parallel (with --try-fixes).")
@click.option("--treat", metavar="NAME", hidden=True, help="Apply one treatment (what a fix trial runs; the README lists them).")
@click.option("--treat-args", metavar="JSON", hidden=True, default="{}", help="The treatment's arguments (what the diagnosed run found).")
def diagnose(
    script: str,
    script_args: tuple[str, ...],
    max_steps: int | None,
    timeout: float | None,
    out: str | None,
    json_path: str | None,
    fail_on: str,
    redact_args: bool,
    quiet: bool,
    no_probe: tuple[str, ...],
    try_fixes: bool,
    jobs: int,
    treat: str | None,
    treat_args: str,
) -> None:
    """Run SCRIPT [ARGS]... (an unmodified training script) under instrumentation and report.

    Put the script's own options after `--`:  rnndoctor diagnose train.py --max-steps 500 -- --lr 0.1
    """
    from .rundir import RunDirBusy, RunDirUnusable
    from .runner import ScriptNotRunnable, run_script
    from .probes import probe_names
    from .watch import default_out_dir

    unknown = sorted(set(no_probe) - set(probe_names()))
    if unknown:
        raise click.BadParameter(f"no probe named {', '.join(unknown)}; probes: {', '.join(probe_names())}", param_hint="--no-probe")
    treatment = None
    if treat is not None:
        from .treatments import get_treatment

        try:
            treatment = get_treatment(treat)(**json.loads(treat_args))
        except KeyError as exc:
            raise click.BadParameter(str(exc.args[0]), param_hint="--treat")
        except (ValueError, TypeError) as exc:
            raise click.BadParameter(f"not a JSON object of arguments: {exc}", param_hint="--treat-args")
    json_file = Path(os.path.abspath(json_path)) if json_path else None  # the script may chdir
    cwd = os.getcwd()
    try:
        outcome = run_script(
            script, list(script_args), out=Path(out) if out else default_out_dir(), max_steps=max_steps,
            timeout=timeout, progress=not quiet, redact_args=redact_args, move_if_busy=out is None,
            disable=no_probe, treatment=treatment, summary=not try_fixes,
        )
    except ScriptNotRunnable as exc:
        raise _fail(str(exc), EXIT_NOT_RUNNABLE)
    except (RunDirBusy, RunDirUnusable) as exc:
        raise _fail(str(exc))
    record = outcome.watch.record
    if record is None:
        raise _fail("the run's record could not be read back; see the message above", EXIT_USAGE)
    if not (record.meta.get("model") or {}).get("roots"):
        click.echo("rnndoctor: the script never called a module with parameters: nothing was recorded.", err=True)
        if outcome.status == "crashed" and not outcome.watch.steps:
            _finish(EXIT_NOT_RUNNABLE, outcome.died_of)
    elif not (record.meta.get("model") or {}).get("recurrent"):
        cells = sorted(set(record["gates"]["module"])) if record.has("gates") else []
        if cells:
            click.echo(f"rnndoctor: note: hand-written cell(s) read by dataflow: {', '.join(cells)}.", err=True)
        else:
            click.echo("rnndoctor: note: no nn.RNN/LSTM/GRU or *Cell module or gated hand-written cell found; "
                       "only generic checks applied.", err=True)
    diagnosis = outcome.diagnosis
    if try_fixes:
        diagnosis = _try_fixes(record, diagnosis, script, script_args, max_steps, timeout, jobs, cwd)
    if json_file is not None:
        try:
            json_file.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(outcome.watch.run_dir / FINDINGS_FILE, json_file)
        except OSError as exc:
            raise _fail(f"cannot write {printable(json_path)}: {exc.strerror or exc}")
    _finish(_exit_code(outcome.diagnosis, fail_on), outcome.died_of)


def _try_fixes(record: "Run", diagnosis: Diagnosis, script: str, script_args: tuple[str, ...], max_steps: int | None,
               timeout: float | None, jobs: int, cwd: str) -> Diagnosis:
    """The fix trials, then the outputs written again with them and the summary printed."""
    import dataclasses

    from .report.output import write_outputs
    from .trials import plan, try_fixes

    planned = plan(diagnosis, record)
    if planned:
        names = ", ".join(p.treatment.name for p in planned)
        click.echo(f"rnndoctor: trying {len(planned)} fix{'es' if len(planned) != 1 else ''} ({names}), {jobs} at a time…", err=True)
    trials = try_fixes(record, diagnosis, planned, script=script, args=list(script_args), max_steps=max_steps,
                       jobs=jobs, timeout=timeout or 600.0, cwd=cwd)
    diagnosis = dataclasses.replace(diagnosis, trials=trials)
    for problem in write_outputs(record, diagnosis, record.path):
        click.echo(f"rnndoctor: {problem}", err=True)
    return diagnosis


def _finish(code: int, died_of: int | None) -> None:
    """Exit with ``code``; or, when the script was stopped by a signal (Ctrl-C, SIGTERM), die
    of that signal after reporting, as Python does, so a shell loop stops and a parent sees
    the signal (a shell shows 130 for Ctrl-C)."""
    if died_of is not None:
        sys.stdout.flush()
        sys.stderr.flush()
        if hasattr(os, "kill") and hasattr(signal, "SIGKILL"):
            signal.signal(died_of, signal.SIG_DFL)
            os.kill(os.getpid(), died_of)
        raise click.exceptions.Exit(128 + died_of)
    raise click.exceptions.Exit(code)


@cli.command(name="probes")
def list_probes() -> None:
    """List the probes in the order they run: name, schedule, signals written."""
    from .probes import DEFAULT_PROBES
    from .schedule import AFTER_NAN, SCHEDULES
    from .signals import CATALOGUE

    for probe in DEFAULT_PROBES:
        names = (probe.schedule,) if probe.schedule else probe.follows
        when = "; ".join(f"{n}: {SCHEDULES[n]}" + (" (every step after a NaN)" if n in AFTER_NAN else "") for n in names)
        when = when or CATALOGUE[probe.signals[0]].when
        doc = (probe.__doc__ or "").strip().splitlines()
        click.echo(f"{probe.name}  ->  {', '.join(probe.signals)}")
        click.echo(f"    {doc[0] if doc else ''}")
        click.echo(f"    when: {when}")


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
    from dataclasses import replace

    from .trials import read_trials

    diagnosis = replace(judge(run), trials=read_trials(Path(run_dir)))  # fix trials stay with the run
    problems = write_outputs(run, diagnosis, Path(run_dir), summary=False)
    if problems:  # a read-only directory, a folder where a report file goes: the only line
        raise _fail(f"cannot write the report: {problems[0]}")
    if json_path:
        try:
            Path(json_path).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(Path(run_dir) / FINDINGS_FILE, json_path)
        except OSError as exc:
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
@click.option("--markdown", is_flag=True, help="Print the full catalogue as Markdown (what docs/findings.md holds).")
def list_rules(markdown: bool) -> None:
    """List every rule: id, default severity, one-line summary."""
    from .rules import FAMILIES, all_rules

    if markdown:
        from .rules.catalogue import markdown as catalogue

        click.echo(catalogue(all_rules(), FAMILIES), nl=False)
        return
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
    from .text import printable_line

    try:
        entries = collect(list(paths) or ["checks"])
    except CheckFileError as exc:  # one line even when a file's name holds a newline or ESC
        raise _fail(printable_line(exc))
    if not entries:
        raise _fail(f"no .toml expectation files in {', '.join(paths) or 'checks'}")
    runs = run_all(entries, Path(out), jobs=jobs)
    click.echo(table(runs))
    if junit_xml:
        write_junit(runs, Path(junit_xml))
    raise click.exceptions.Exit(EXIT_OK if all(r.result.passed for r in runs) else EXIT_FINDINGS)


def main() -> None:
    """The console script. Whatever happens, the user gets an exit code and at most one line
    of ours: Ctrl-C dies of SIGINT like Python; a bug of ours is one line, with its traceback
    saved to a file to attach to a bug report."""
    try:
        code = cli(standalone_mode=False)
    except click.exceptions.Abort as exc:
        if isinstance(exc.__cause__, KeyboardInterrupt):
            _die_quietly(signal.SIGINT)
        click.echo("Aborted!", err=True)
        code = EXIT_FINDINGS
    except click.ClickException as exc:
        exc.show()
        code = exc.exit_code
    except KeyboardInterrupt:
        _die_quietly(signal.SIGINT)
    except Exception as exc:  # a bug of ours: one line, the traceback in a file
        saved = _save_traceback()
        click.echo(f"rnndoctor: internal error: {printable_line(f'{type(exc).__name__}: {exc}')}{saved}", err=True)
        code = EXIT_USAGE
    _settle_streams()
    sys.exit(code if isinstance(code, int) else EXIT_OK)


def _settle_streams() -> None:
    """Flush now; a reader that went away (``| head``) must not turn the exit code into
    Python's exit-time flush error: what is left goes to /dev/null."""
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            try:
                os.dup2(os.open(os.devnull, os.O_WRONLY), stream.fileno())
            except (OSError, ValueError):
                pass


def _die_quietly(signum: int) -> None:
    try:
        _finish(EXIT_OK, signum)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)


def _save_traceback() -> str:
    import tempfile
    import traceback

    try:
        fd, path = tempfile.mkstemp(prefix="rnndoctor-error-", suffix=".txt")
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(traceback.format_exc())
    except OSError:
        return ""
    return f" (a bug in rnndoctor; traceback saved to {path})"
