"""watch(): record a training loop, then diagnose it.

``Watch`` is the conductor's handle: it claims the run directory, starts the recorder, the
step clock (``clock.py``) and the probes (``probes/``), lets the conductor
(``conductor.py``) adopt the model and place every hook, and on exit takes all of it down
again, also when the loop raises, before diagnosing the record and writing the report. The
assertion API comes from ``verdict.py``.
"""

from __future__ import annotations

import os
import platform
import subprocess
import sys
from datetime import datetime
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import torch
from torch import nn

from ._version import __version__
from .clock import StepClock
from .conductor import Conductor
from .finding import Diagnosis
from .privacy import redact_args, shown_path, user_traceback
from .probes import Probe, ProbeSet, select
from .probes.base import Context, ModelView
from .probes.outputs import LossCall
from .recorder import Recorder, writer_choice, writer_in_background
from .rundir import REPORT_FILE, Claim, claim
from .run import Run, load_run, write_meta
from .signals import SignalContractError
from .schedule import DEFAULT_FLUSH_EVERY, SCHEDULES, Schedule, StepSchedules
from .status import COMPLETED, RUNNING, status_for
from .text import printable, printable_line, safe_str
from .verdict import Verdict

#: how report.html is drawn when the watch closes: by a detached child, so the program goes
#: on at once (``report/background.py``); here, after the summary; or not (the caller draws it)
REPORT_MODES = ("background", "now", "none")


def default_out_dir() -> Path:
    return Path("reports") / datetime.now().strftime("run-%Y%m%d-%H%M%S-%f")


class Watch(Verdict):
    """The handle ``watch()`` returns: records while open, holds the diagnosis after."""

    def __init__(
        self,
        model: nn.Module | None = None,
        *,
        out: str | os.PathLike[str] | None = None,
        flush_every: int = DEFAULT_FLUSH_EVERY,
        localize: Schedule = SCHEDULES["localize"],
        gates: Schedule = SCHEDULES["gates"],
        gate_batch: int | None = None,
        summary: bool = True,
        strict: bool = False,
        meta: dict[str, Any] | None = None,
        max_steps: int | None = None,
        on_step: Callable[[int], None] | None = None,
        writer: str | None = None,
        redact_args: bool = False,
        move_if_busy: bool = True,
        probes: Sequence[type[Probe] | Probe] | None = None,
        disable: Iterable[str] = (),
        report: str = "background",
    ) -> None:
        #: absolute from the start: the program may chdir while it runs
        self.run_dir = Path(os.path.abspath(out if out is not None else default_out_dir()))
        self.model = model
        self.redact_args = redact_args
        #: another live run holds ``out``: record into ``out-2`` (True) or refuse (False)
        self.move_if_busy = move_if_busy
        self.summary, self.strict = summary, strict
        self.max_steps, self.on_step = max_steps, on_step
        self.flush_every = flush_every
        writer_choice(writer)  # a wrong value fails here, not at __enter__
        self._writer_choice = writer
        self._schedules = {**SCHEDULES, "localize": localize, "gates": gates}
        if gate_batch is not None and gate_batch < 1:
            raise ValueError(f"gate_batch must be a positive number of sequences, not {gate_batch!r}")
        self._probes = select(probes, disable)  # an unknown name fails here too
        if report not in REPORT_MODES:
            raise ValueError(f"report must be one of {', '.join(map(repr, REPORT_MODES))}, not {report!r}")
        self.report = report
        self._report_child: "subprocess.Popen[bytes] | None" = None
        self._meta: dict[str, Any] = dict(meta or {})
        if gate_batch is not None:
            self._meta["gate_batch"] = gate_batch  # the gate statistics are of a subsample
        self.gate_batch = gate_batch
        self._claim: Claim | None = None
        self._clock: StepClock | None = None
        self._conductor: Conductor | None = None
        self.diagnosis: Diagnosis | None = None
        self.record: Run | None = None
        self.active = False

    @property
    def steps(self) -> int:
        """Optimizer steps recorded so far."""
        return self._clock.step if self._clock is not None else 0

    # ------------------------------------------------------------------ context manager
    def __enter__(self) -> "Watch":
        self._claim = claim(self.run_dir, move_if_busy=self.move_if_busy)
        if self._claim.moved:
            self._meta["requested_out"] = shown_path(self._claim.requested)
            sys.stderr.write(
                f"[rnndoctor] {printable(shown_path(self._claim.requested))} is in use by another run; "
                f"this run records into {printable(shown_path(self._claim.path))}\n"
            )
        self.run_dir = self._claim.path
        try:
            self._enter()
        except BaseException:
            self._claim.release()
            raise
        return self

    def _enter(self) -> None:
        # CPU until the model is adopted (the conductor decides again, knowing its device)
        self._recorder = Recorder(self.run_dir, background=writer_in_background(False, self._writer_choice))
        self._meta.update(
            rnndoctor=__version__,
            started=datetime.now().isoformat(timespec="seconds"),
            python=platform.python_version(),
            torch=torch.__version__,
            status=RUNNING,
            pid=os.getpid(),
            argv=redact_args(list(sys.argv), everything=self.redact_args),
        )
        if "script_args" in self._meta:
            self._meta["script_args"] = redact_args(list(self._meta["script_args"]), everything=self.redact_args)
        probes = ProbeSet(self._probes, on_error=self._probe_error)
        self._clock = StepClock(self._recorder, probes, StepSchedules(self._schedules), flush_every=self.flush_every,
                                on_step=self.on_step, max_steps=self.max_steps)
        ctx = Context(model=ModelView(), recorder=self._recorder, clock=self._clock, flush_every=self.flush_every,
                      gate_batch=self.gate_batch)
        self._conductor = Conductor(model=self.model, recorder=self._recorder, probes=probes, clock=self._clock, ctx=ctx,
                                    meta=self._meta, strict=self.strict, writer=self._writer_choice, on_model_change=self._model_changed)
        try:
            self._conductor.attach()
        except BaseException:
            self._conductor.detach()
            raise
        self.active = True
        self._write_meta()

    def _probe_error(self, where: str, exc: Exception) -> None:
        assert self._conductor is not None
        self._conductor.internal_error(where, exc)

    def _model_changed(self) -> None:
        if self.active:
            self._write_meta()

    def __exit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> bool:
        self.close(exc)
        return False

    def close(self, exc: BaseException | None = None, status: str | None = None) -> Diagnosis:
        """Detach everything, save the record, diagnose, report. Safe to call once.

        Never raises into the user's program (but with ``strict=True``): a failure of ours
        while finishing is printed in one line, and the record written so far stays."""
        if not self.active:
            return self.diagnosis  # type: ignore[return-value]
        self.active = False
        assert self._clock is not None and self._claim is not None
        self._clock.on_step = None  # the run is over: closing its last step must not stop it again
        try:
            self._finish(exc, status)
        except Exception as err:
            if self.strict or isinstance(err, SignalContractError):  # the latter: tests only
                raise
            sys.stderr.write(f"[rnndoctor] could not finish the run's report: {printable_line(f'{type(err).__name__}: {err}')}\n")
        finally:
            self._claim.release()
        if self.diagnosis is None:
            self.diagnosis = Diagnosis(findings=(), skipped=())
        return self.diagnosis

    def _finish(self, exc: BaseException | None, status: str | None) -> None:
        assert self._conductor is not None
        self._conductor.finish()
        status = status if status is not None else status_for(exc)
        self._meta.update(status=status, steps=self.steps, wall_s=round(self._clock.elapsed, 3))  # type: ignore[union-attr]
        if exc is not None and status != COMPLETED:
            self._meta["exception"] = {"type": type(exc).__name__, "message": safe_str(exc), "traceback": user_traceback(exc)[-8000:]}
        try:
            self._recorder.close()
        except OSError as err:  # the last writes failed (disk full): keep what is on disk
            self._recorder.errors.append(f"closing the record: {type(err).__name__}: {err}")
        if self._recorder.errors:
            if self.strict:
                raise RuntimeError(self._recorder.errors[0])
            self._meta.setdefault("internal_errors", []).extend(self._recorder.errors)
        self._write_meta()
        self.record, self.diagnosis, self._report_child = conclude(self.run_dir, strict=self.strict, summary=self.summary,
                                                                   report=self.report)

    def wait_report(self, timeout: float | None = None) -> Path:
        """report.html's path once drawn: waits for a background draw (the default) at most
        ``timeout`` s (then ``subprocess.TimeoutExpired``); a failed draw is said in one line."""
        child, path = self._report_child, self.run_dir / REPORT_FILE
        if child is not None:
            _, err = child.communicate(timeout=timeout)
            self._report_child = None
            if child.returncode != 0:
                line = (err or b"").decode(errors="replace").strip().splitlines() or [f"exit {child.returncode}"]
                sys.stderr.write(f"[rnndoctor] {printable_line(line[-1])}\n")
        return path

    def findings_so_far(self) -> list[str]:
        """Ids the rules find in what has been recorded so far (flushes; for progress lines)."""
        if not self.active:
            return []
        from .diagnose import diagnose

        try:
            self._recorder.flush(wait=True)
            return diagnose(load_run(self.run_dir)).ids()
        except Exception:  # a progress line must never stop the run
            return []

    def log(self, *, logits: torch.Tensor | None = None, targets: torch.Tensor | None = None, loss: torch.Tensor | None = None) -> None:
        """Record outputs the automatic loss capture cannot see (a hand-written loss).

        Once used, automatic capture is off for this watch, so nothing is counted twice.
        """
        if logits is None or targets is None:
            if loss is None:
                raise ValueError("run.log() needs loss=, or logits= and targets=")
            logits = targets = loss.detach().reshape(1)
            kind = "logged"
        elif not targets.is_floating_point():
            kind = "cross_entropy"
            if logits.dim() >= 2 and logits.shape[-1] != logits.shape[1] and logits.dim() == targets.dim() + 1:
                logits = logits.movedim(-1, 1)  # [B, T, K] -> [B, K, T]
        else:
            kind = "bce_logits" if logits.shape == targets.shape and targets.dim() >= 1 else "mse"
        loss_t = loss if loss is not None else torch.full((), float("nan"), device=logits.device, dtype=torch.float32)
        if self._conductor is not None and self.active:
            self._conductor.logged_explicitly = True
            self._conductor.record_loss(LossCall(kind, logits, targets, loss_t, {}), grad=loss_t.requires_grad or torch.is_grad_enabled())

    def _write_meta(self) -> None:
        write_meta(self.run_dir, self._meta)


def conclude(run_dir: Path, *, strict: bool, summary: bool, report: str = "now"
             ) -> "tuple[Run, Diagnosis, subprocess.Popen[bytes] | None]":
    """Load the closed record, diagnose it, write findings.json, print the summary, then
    report.html: drawn here (``report="now"``), by a detached child (``"background"``: the
    child's handle is returned) or not at all (``"none"``: the caller draws it). A file that
    cannot be written is said in one line."""
    from .diagnose import diagnose
    from .report.output import could_not_write, draw_report, write_outputs
    from .report.terminal import print_summary

    record = load_run(run_dir)
    diagnosis = diagnose(record, strict=strict)
    problems = write_outputs(record, diagnosis, run_dir, summary=False, html=False)
    child = None
    if report == "background":
        from .report import background

        try:
            child = background.start(run_dir)
        except OSError as exc:
            problems.append(could_not_write(REPORT_FILE, exc))
    for problem in problems:
        sys.stderr.write(f"[rnndoctor] {problem}\n")
    if summary:
        print_summary(record, diagnosis)
    if report == "now":
        draw_report(record, diagnosis, run_dir)
    return record, diagnosis, child


def watch(model: nn.Module | None = None, **options: Any) -> Watch:
    """Record a training loop and diagnose it on exit.

    ``with rnndoctor.watch(model, out="reports/run1") as run: ...`` — optimizers are found
    through torch's global optimizer hooks; losses through ``torch.nn.functional``. Without
    ``model``, every module that owns parameters and is called inside the block is adopted.
    ``disable=("gates",)`` switches probes off by name (``rnndoctor probes`` lists them).
    After the block, ``run.findings`` holds the findings and ``out`` the record and
    ``findings.json``; ``report.html`` follows from a detached process (``run.wait_report()``
    waits for it; ``report="now"`` draws it before the block is left).
    """
    return Watch(model, **options)
