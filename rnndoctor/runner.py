"""Run an unmodified training script under watch(), as ``python script.py args`` would.

The script runs in this process as ``__main__`` with its own ``sys.argv``, ``sys.path[0]``
and the caller's working directory. Every module with parameters it calls is adopted by a
discovery-mode watch. ``--max-steps`` and ``--timeout`` stop it by raising a
``BaseException`` subclass, so a script's own ``except Exception:`` cannot swallow the stop.
"""

from __future__ import annotations

import builtins
import importlib.machinery
import math
import os
import signal
import sys
import threading
import time
import types
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from .finding import Diagnosis
from .privacy import shown_path, user_traceback
from .text import printable
from .status import StopRun, died_of as died_of_signal, is_failure, status_for
from .probes import DEFAULT_PROBES
from .run import write_text_atomic
from .watch import Watch

if TYPE_CHECKING:
    from .treatments import Treatment


class ScriptNotRunnable(Exception):
    """The script could not be started at all (missing file, syntax error)."""


@dataclass
class RunOutcome:
    watch: Watch
    diagnosis: Diagnosis
    status: str
    script_error: BaseException | None
    #: the signal that stopped the script (SIGINT, SIGTERM): the caller reports, then dies of it
    died_of: int | None = None


#: the findings shown on the progress line are re-judged at most this often (a flush + rules)
FINDINGS_REFRESH_S = 10.0


class _Progress:
    """A live progress line on stderr: steps, steps/s and the findings so far (terminal only)."""

    def __init__(self, stream: TextIO, enabled: bool) -> None:
        self.stream = stream
        self.enabled = enabled and hasattr(stream, "isatty") and stream.isatty()
        self.t0 = time.perf_counter()
        self.last = 0.0
        self.last_judged = self.t0
        self.findings = "—"
        self.watch: Watch | None = None

    def __call__(self, steps: int) -> None:
        if not self.enabled:
            return
        now = time.perf_counter()
        if now - self.last < 0.5:
            return
        self.last = now
        if self.watch is not None and now - self.last_judged >= FINDINGS_REFRESH_S:
            self.last_judged = now
            ids = self.watch.findings_so_far()
            self.findings = ", ".join(ids[:4]) + (" …" if len(ids) > 4 else "") if ids else "none yet"
        rate = steps / max(now - self.t0, 1e-9)
        self.stream.write(f"\r[rnndoctor] step {steps} · {rate:.1f} steps/s · findings: {self.findings}\x1b[K")
        self.stream.flush()

    def done(self) -> None:
        if self.enabled:
            self.stream.write("\r\x1b[K")
            self.stream.flush()


def _note_treatment(run_dir: Path, treatment: "Treatment") -> None:
    """Beside a trial's record: which treatment ran and how often it acted (0: not applicable)."""
    import json

    from .trials import TREATMENT_FILE

    try:
        write_text_atomic(Path(run_dir) / TREATMENT_FILE, json.dumps({"treatment": treatment.name, "applied": treatment.applied}) + "\n")
    except OSError:
        pass


def run_script(
    script: str | os.PathLike[str],
    args: list[str],
    *,
    out: Path,
    max_steps: int | None = None,
    timeout: float | None = None,
    summary: bool = True,
    progress: bool = True,
    redact_args: bool = False,
    move_if_busy: bool = True,
    disable: tuple[str, ...] | list[str] = (),
    treatment: "Treatment | None" = None,
) -> RunOutcome:
    """Run ``script`` with ``args`` under a discovery-mode watch and diagnose it.

    Raises ``ScriptNotRunnable`` (the script cannot be read or compiled) and the
    ``rundir`` errors (``out`` cannot be claimed) before the script starts."""
    if timeout is not None and not (math.isfinite(timeout) and timeout > 0):
        raise ValueError(f"timeout must be a positive number of seconds, not {timeout!r}")
    path = Path(script)
    _check_source(path)
    bar = _Progress(sys.stderr, progress)

    def on_step(steps: int) -> None:
        bar(steps)
        if max_steps is not None and steps >= max_steps:
            raise StopRun("max-steps", f"stopped after --max-steps {max_steps}")

    w = Watch(
        None,
        out=out,
        summary=False,
        report="none",  # drawn below, after the summary: the script is over, nothing waits on it
        meta={"script": shown_path(os.path.abspath(path)), "script_args": list(args), "max_steps": max_steps, "timeout": timeout},
        on_step=on_step,
        max_steps=max_steps,
        redact_args=redact_args,
        move_if_busy=move_if_busy,
        disable=disable,
        # a fix trial's treatment acts first, so the record shows the run it made
        **({"probes": [treatment, *DEFAULT_PROBES]} if treatment is not None else {}),
    )
    bar.watch = w
    # as ``python script.py``: argv[0] as typed, __file__ absolute, sys.path[0] the real folder
    file = path if path.is_absolute() else Path(os.getcwd()) / path
    old_argv = sys.argv
    script_dir = str(path.resolve().parent)
    sys.argv = [str(path), *args]
    try:
        w.__enter__()
    except BaseException:
        sys.argv = old_argv
        raise
    sys.path.insert(0, script_dir)
    timer = _start_timer(timeout)
    terminate = _stop_on_sigterm()
    ended: BaseException | None = None
    try:
        _run_as_main(file)
    except BaseException as exc:  # the script's own error or a stop: keep it, diagnose anyway
        ended = exc
    finally:
        _restore_sigterm(terminate)
        _stop_timer(timer)
        sys.argv = old_argv
        try:
            sys.path.remove(script_dir)
        except ValueError:
            pass
        bar.done()
    status, died_of = status_for(ended), died_of_signal(ended)
    error = ended if is_failure(ended) else None
    if error is not None and not isinstance(error, (SystemExit, KeyboardInterrupt)):
        sys.stderr.write(f"[rnndoctor] the script raised {type(error).__name__}; its traceback:\n")
        sys.stderr.write(printable(user_traceback(error)))
    diagnosis = w.close(error, status=status)
    if treatment is not None:
        _note_treatment(w.run_dir, treatment)
    if summary and w.record is not None:  # without it, the caller writes the outputs again (fix trials)
        from .report.output import draw_report
        from .report.terminal import print_summary

        print_summary(w.record, diagnosis)
        draw_report(w.record, diagnosis, w.run_dir)
    return RunOutcome(watch=w, diagnosis=diagnosis, status=status, script_error=error, died_of=died_of)


def _run_as_main(file: Path) -> None:
    """Execute ``file`` as ``python file`` does: a fresh ``__main__`` module in
    ``sys.modules`` (so pickling the script's classes works), ``__file__`` and code paths
    absolute, ``sys.argv[0]`` left as typed (``runpy.run_path`` would overwrite it)."""
    code = compile(file.read_bytes(), str(file), "exec", dont_inherit=True)
    main = types.ModuleType("__main__")
    main.__dict__.update(
        __file__=str(file), __cached__=None, __package__=None, __spec__=None, __builtins__=builtins,
        __loader__=importlib.machinery.SourceFileLoader("__main__", str(file)),
    )
    previous = sys.modules.get("__main__")
    sys.modules["__main__"] = main
    try:
        exec(code, main.__dict__)
    finally:
        if previous is not None:
            sys.modules["__main__"] = previous


def _check_source(path: Path) -> None:
    """Refuse, before anything runs, a script Python itself could not start. Read as
    Python reads it: bytes, so a coding declaration or a BOM decides the encoding."""
    if not path.is_file():
        raise ScriptNotRunnable(f"no such script: {path}")
    try:
        compile(path.read_bytes(), str(path), "exec", dont_inherit=True)
    except OSError as exc:
        raise ScriptNotRunnable(f"cannot read {path}: {exc.strerror or exc}") from None
    except SyntaxError as exc:
        if not exc.lineno:  # Python's word for "cannot decode this file" (coding, null bytes)
            raise ScriptNotRunnable(f"cannot read {path}: {exc.msg}") from None
        raise ScriptNotRunnable(f"{path}:{exc.lineno}: syntax error: {exc.msg}") from None
    except (ValueError, UnicodeDecodeError) as exc:  # null bytes; bytes the declared encoding cannot decode
        raise ScriptNotRunnable(f"cannot read {path}: {exc}") from None


def _stop_on_sigterm() -> Any:
    """SIGTERM (``timeout``, a CI cancel, ``kill``) ends the script like --timeout does, so
    the record is closed and reported; the process then dies of SIGTERM as it would have.
    A handler the script installs itself replaces this one."""
    if threading.current_thread() is not threading.main_thread():
        return None

    def handler(signum: int, frame: Any) -> None:
        raise StopRun("terminated", "stopped by SIGTERM")

    return signal.signal(signal.SIGTERM, handler)


def _restore_sigterm(previous: Any) -> None:
    if previous is not None:
        signal.signal(signal.SIGTERM, previous)


def _start_timer(timeout: float | None) -> Any:
    """Stop the script after ``timeout`` seconds (SIGALRM in the main thread)."""
    if not timeout or threading.current_thread() is not threading.main_thread() or not hasattr(signal, "setitimer"):
        return None

    def handler(signum: int, frame: Any) -> None:
        raise StopRun("timeout", f"stopped after --timeout {timeout:g} s")

    previous = signal.signal(signal.SIGALRM, handler)
    signal.setitimer(signal.ITIMER_REAL, timeout)
    return previous


def _stop_timer(previous: Any) -> None:
    if previous is None:
        return
    signal.setitimer(signal.ITIMER_REAL, 0)
    signal.signal(signal.SIGALRM, previous)
