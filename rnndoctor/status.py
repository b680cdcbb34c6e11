"""How a run ended, in one vocabulary: ``meta.json``'s ``status`` and the exception (or
signal) that decided it. ``watch()`` and ``rnndoctor diagnose`` both ask ``status_for``."""

from __future__ import annotations

import signal

RUNNING = "running"
COMPLETED = "completed"
CRASHED = "crashed"
INTERRUPTED = "interrupted"
#: set when a record is read whose writer died (rundir.settle_status)
KILLED = "killed"


class StopRun(BaseException):
    """Raised inside the script to end it cleanly (not an ``Exception``: cannot be swallowed);
    its ``status`` names why: ``max-steps``, ``timeout``, ``terminated``."""

    def __init__(self, status: str, message: str) -> None:
        super().__init__(message)
        self.status = status


def status_for(exc: BaseException | None) -> str:
    """The status of a run that ended with ``exc`` (None: it returned)."""
    if exc is None:
        return COMPLETED
    if isinstance(exc, StopRun):
        return exc.status
    if isinstance(exc, KeyboardInterrupt):
        return INTERRUPTED
    if isinstance(exc, SystemExit):
        return COMPLETED if exc.code in (None, 0) else CRASHED
    return CRASHED


def is_failure(exc: BaseException | None) -> bool:
    """Whether ``exc`` is the program's own failure, to be kept and shown (a clean stop or
    ``sys.exit(0)`` is not)."""
    return exc is not None and not isinstance(exc, StopRun) and status_for(exc) != COMPLETED


def died_of(exc: BaseException | None) -> int | None:
    """The signal the program should die of after reporting (Ctrl-C, SIGTERM), as Python would."""
    if isinstance(exc, KeyboardInterrupt):
        return signal.SIGINT
    if isinstance(exc, StopRun) and exc.status == "terminated":
        return signal.SIGTERM
    return None
