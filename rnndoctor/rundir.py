"""A run directory belongs to one run: claimed with a lock while it records.

Three runs appending to one ``signals/steps.jsonl`` give 900 rows for 300 steps and false
data findings, so a recording holds an exclusive ``flock`` on ``<run dir>/.lock`` from
``watch()``'s entry to its close. The lock is released by the kernel when the process dies,
however it dies, which is what tells a reader a ``"running"`` record apart:

* lock held by someone → the run is still recording;
* lock free → the writer is gone without closing (SIGKILL, power loss, ``os._exit``).

Where a directory is already held, ``claim`` either refuses (``rnndoctor diagnose --out``:
the user named it, so the user hears about it) or moves on to ``DIR-2``, ``DIR-3``, ...
(``watch(out=...)`` inside a program: a tool must never stop the program it watches).
Platforms without ``fcntl`` (Windows) record without a lock; there a ``"running"`` record is
reported as "killed or still running".
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import IO

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

from .status import KILLED, RUNNING

# The run directory's names: used everywhere through these constants.
META_FILE = "meta.json"
FINDINGS_FILE = "findings.json"
REPORT_FILE = "report.html"
SIGNALS_DIR = "signals"
LOCK_FILE = ".lock"
#: files of ours a reused run directory starts without (a new run must not show the last
#: run's report if it is killed before writing its own)
STALE_OUTPUTS = (FINDINGS_FILE, REPORT_FILE, META_FILE)
#: ``DIR-2`` ... ``DIR-<this>`` are tried before giving up
MAX_SIBLINGS = 99


class RunDirBusy(Exception):
    """Another live run holds the directory."""


class RunDirUnusable(Exception):
    """The directory cannot be created or written (one-line message for the user)."""


@dataclass
class Claim:
    """A held run directory; ``release()`` (or the process's end) frees it."""

    path: Path
    requested: Path
    _file: IO[str] | None

    @property
    def moved(self) -> bool:
        return self.path != self.requested

    def release(self) -> None:
        if self._file is not None:
            if fcntl is not None:
                fcntl.flock(self._file, fcntl.LOCK_UN)
            self._file.close()
            self._file = None


def claim(path: str | os.PathLike[str], *, move_if_busy: bool) -> Claim:
    """Create and lock ``path`` (absolute from here on: a script may ``chdir``), or the first
    free ``path-N`` when ``move_if_busy``. Clears the stale outputs of an earlier run."""
    requested = Path(os.path.abspath(path))
    candidates = [requested] + ([requested.with_name(f"{requested.name}-{i}") for i in range(2, MAX_SIBLINGS + 1)] if move_if_busy else [])
    for candidate in candidates:
        held = _try_lock(candidate)
        if held is not None:
            _clear_stale(candidate)
            return Claim(candidate, requested, held)
        if not move_if_busy:
            raise RunDirBusy(f"{requested} is in use by another run{_holder(requested)}; choose another --out")
    raise RunDirBusy(f"{requested} and its {MAX_SIBLINGS - 1} siblings {requested.name}-N are all in use by other runs")


def writer_alive(path: str | os.PathLike[str]) -> bool | None:
    """Whether a live process holds the run directory's lock (None: cannot tell)."""
    if fcntl is None:
        return None
    lock = Path(path) / LOCK_FILE
    try:
        f = open(lock, encoding="utf-8")
    except FileNotFoundError:
        return False  # recorded by a version without locks, or the lock file was deleted
    except OSError:
        return None
    with f:
        try:
            fcntl.flock(f, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        except OSError:
            return None
        fcntl.flock(f, fcntl.LOCK_UN)
        return False


def _try_lock(path: Path) -> IO[str] | None:
    """The open, locked lock file of ``path``, or None when another process holds it."""
    try:
        path.mkdir(parents=True, exist_ok=True)
        f = open(path / LOCK_FILE, "a+", encoding="utf-8")
    except OSError as exc:
        raise RunDirUnusable(f"cannot write the run directory {path}: {exc.strerror or exc}") from None
    if fcntl is not None:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.close()
            return None
        except OSError:
            pass  # a filesystem without locks (some network mounts): record unlocked
    f.seek(0)
    f.truncate()
    f.write(f"{os.getpid()}\n")
    f.flush()
    return f


def _holder(path: Path) -> str:
    try:
        pid = (path / LOCK_FILE).read_text(encoding="utf-8").split()[0]
    except (OSError, IndexError):
        return ""
    return f" (pid {pid})" if pid.isdigit() else ""


def _clear_stale(path: Path) -> None:
    for name in STALE_OUTPUTS:
        try:
            (path / name).unlink()
        except FileNotFoundError:
            pass
        except OSError as exc:
            raise RunDirUnusable(f"cannot write the run directory {path}: {exc.strerror or exc}") from None




def settle_status(meta: dict[str, object], run_dir: Path, train_steps: int) -> None:
    """A record still marked ``running``: say whether its writer lives (the lock), and how
    many training steps it holds, so it is reported and judged on what it holds."""
    if meta.get("status") != RUNNING:
        return
    alive = writer_alive(run_dir)
    if alive is False:
        meta["status"] = KILLED
        meta["status_note"] = (
            f"the recording process ended without closing the run (killed, or died without cleanup); "
            f"judged on the {train_steps} steps it recorded"
        )
    else:
        state = "still running" if alive else "killed or still running"
        meta["status_note"] = f"the run is {state}; judged on the {train_steps} steps recorded so far"
    if not isinstance(meta.get("steps"), int):
        meta["steps"] = train_steps
