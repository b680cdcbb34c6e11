"""Run an unmodified training script under watch(), as ``python script.py args`` would.

The script runs in this process as ``__main__`` with its own ``sys.argv``, ``sys.path[0]``
and the caller's working directory. Every module with parameters it calls is adopted by a
discovery-mode watch. ``--max-steps`` and ``--timeout`` stop it by raising a
``BaseException`` subclass, so a script's own ``except Exception:`` cannot swallow the stop.
"""

from __future__ import annotations

import os
import runpy
import signal
import sys
import threading
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from .finding import Diagnosis
from .watch import Watch


class StopRun(BaseException):
    """Raised inside the script to end it cleanly (not an ``Exception``: cannot be swallowed)."""

    def __init__(self, status: str, message: str) -> None:
        super().__init__(message)
        self.status = status


class ScriptNotRunnable(Exception):
    """The script could not be started at all (missing file, syntax error)."""


@dataclass
class RunOutcome:
    watch: Watch
    diagnosis: Diagnosis
    status: str
    script_error: BaseException | None


def _script_traceback(exc: BaseException) -> str:
    """The traceback as the script's: our frames and runpy's are left out."""
    ours = (str(Path(__file__).parent), os.path.dirname(runpy.__file__) + os.sep + "runpy.py", "<frozen runpy>")
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if not f.filename.startswith(ours)]
    lines = ["Traceback (most recent call last):\n"] + traceback.format_list(frames)
    lines += traceback.format_exception_only(type(exc), exc)
    return "".join(lines)


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


def run_script(
    script: str | os.PathLike[str],
    args: list[str],
    *,
    out: Path,
    max_steps: int | None = None,
    timeout: float | None = None,
    summary: bool = True,
    progress: bool = True,
) -> RunOutcome:
    """Run ``script`` with ``args`` under a discovery-mode watch and diagnose it."""
    path = Path(script)
    if not path.is_file():
        raise ScriptNotRunnable(f"no such script: {path}")
    try:
        source = path.read_text(encoding="utf-8")
        compile(source, str(path), "exec")
    except (OSError, UnicodeDecodeError) as exc:
        raise ScriptNotRunnable(f"cannot read {path}: {exc}") from None
    except SyntaxError as exc:
        raise ScriptNotRunnable(f"{path}:{exc.lineno}: syntax error: {exc.msg}") from None

    bar = _Progress(sys.stderr, progress)

    def on_step(steps: int) -> None:
        bar(steps)
        if max_steps is not None and steps >= max_steps:
            raise StopRun("max-steps", f"stopped after --max-steps {max_steps}")

    w = Watch(
        None,
        out=out,
        summary=False,
        meta={"script": str(path), "script_args": list(args), "max_steps": max_steps, "timeout": timeout},
        on_step=on_step,
        max_steps=max_steps,
    )
    bar.watch = w
    old_argv = sys.argv
    sys.argv = [str(path), *args]
    script_dir = str(path.resolve().parent)
    sys.path.insert(0, script_dir)
    timer = _start_timer(timeout)
    error: BaseException | None = None
    status = "completed"
    w.__enter__()
    try:
        runpy.run_path(str(path), run_name="__main__")
    except StopRun as exc:
        status = exc.status
    except KeyboardInterrupt as exc:
        status, error = "interrupted", exc
    except SystemExit as exc:
        if exc.code not in (None, 0):
            status, error = "crashed", exc
        else:
            status = "completed"
    except BaseException as exc:  # the script's own error: keep it, diagnose anyway
        status, error = "crashed", exc
    finally:
        _stop_timer(timer)
        sys.argv = old_argv
        try:
            sys.path.remove(script_dir)
        except ValueError:
            pass
        bar.done()
    if error is not None and not isinstance(error, (SystemExit, KeyboardInterrupt)):
        sys.stderr.write(f"[rnndoctor] the script raised {type(error).__name__}; its traceback:\n")
        sys.stderr.write(_script_traceback(error))
    diagnosis = w.close(error, status=status)
    if summary:
        from .report.terminal import print_summary

        assert w.record is not None
        print_summary(w.record, diagnosis)
    return RunOutcome(watch=w, diagnosis=diagnosis, status=status, script_error=error)


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
