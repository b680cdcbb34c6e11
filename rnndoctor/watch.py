"""watch(): record a training loop, then diagnose it.

The watcher owns every hook handle it registers (module hooks, global optimizer hooks,
gradient hooks, the functional-loss wrappers) and removes all of them on exit, also when
the loop raises. Names of modules live in dicts owned by the watcher: nothing is written
onto user modules.

A *step* is one optimizer step (several optimizers stepping after one backward pass count
once); loops that update parameters by hand count a backward pass that produced gradients.
A step is closed lazily, at the next forward/loss/exit after its update, so the update
ratio sees the weights after every optimizer has moved them.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
import os
import platform
import random
import sys
import time
import weakref
from datetime import datetime
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn
from torch.optim.optimizer import register_optimizer_step_post_hook, register_optimizer_step_pre_hook
from torch.utils.hooks import RemovableHandle

from . import __version__, compiled
from .finding import Diagnosis, Finding, Severity
from .probes import data as data_probe
from .probes import gates
from .probes import through_time
from .probes.activations import ActivationProbe
from .probes.nonfinite import RECURRENT_TYPES, NonFiniteProbe
from .probes.outputs import (
    LossCall,
    LossStats,
    batched_losses,
    batched_stats,
    capture_losses,
    class_count,
    deferrable,
    loss_detail,
    loss_stats,
    snapshot,
)
from .probes.params import ParamProbe
from .privacy import redact_args, shown_path, user_traceback
from .recorder import Part, Recorder, writer_choice, writer_in_background
from .rundir import Claim, claim
from .run import Run, load_run, write_meta
from .schedule import (
    DEFAULT_DATA,
    DEFAULT_DETAIL,
    DEFAULT_FLUSH_EVERY,
    DEFAULT_GATES,
    DEFAULT_LOCALIZE,
    DEFAULT_STEP_STATS,
    DEFAULT_TIME_GRAD,
    DEFAULT_UPDATE_RATIO,
    Schedule,
    flush_schedule,
)
from .text import printable, printable_line, safe_str


def _guarded(method: Callable[..., Any]) -> Callable[..., Any]:
    """Hooks run inside the user's program: an error of ours must not become theirs.

    The first internal error is kept in ``meta['internal_errors']`` and recording goes on
    without that call; ``strict=True`` (tests) re-raises. ``StopRun`` and other
    BaseExceptions pass through untouched.
    """

    @functools.wraps(method)
    def guarded(self: "Watch", *args: Any, **kwargs: Any) -> Any:
        try:
            return method(self, *args, **kwargs)
        except Exception as exc:
            if self.strict:
                raise
            errors = self._meta.setdefault("internal_errors", [])
            if len(errors) < 20:
                errors.append(f"{method.__name__}: {type(exc).__name__}: {exc}")
            return None

    return guarded


@dataclass(frozen=True)
class _Due:
    """Which scheduled probes run in the current step: the schedules are read once per step
    (at its start) instead of in every hook call."""

    localize: bool = False
    gates: bool = False
    data: bool = False
    detail: bool = False
    time_grad: bool = False
    update: bool = False
    stats: bool = False


def default_out_dir() -> Path:
    return Path("reports") / datetime.now().strftime("run-%Y%m%d-%H%M%S-%f")


class _StepAccumulator:
    """The loss calls of one step (train or eval). On steps with class counts, small calls
    are kept as private copies reduced at the next flush together with every other step's,
    large ones reduced at once; on the other steps only the loss is kept (no device work)."""

    def __init__(self) -> None:
        self.calls = 0
        self.kind: str | None = None
        self.n_classes = 0
        self.snapshots: list[LossCall] = []
        self.eager: list[LossStats] = []
        #: (kind, detached loss) of calls recorded without class counts
        self.losses: list[tuple[str, torch.Tensor]] = []
        self.detail: dict[str, Any] | None = None

    def add(self, call: LossCall, *, detail: bool, counts: bool) -> None:
        if self.calls == 0:
            self.kind = call.kind
            if counts:
                self.n_classes = class_count(call.kind, call.input, call.target)
        if detail and self.detail is None:
            self.detail = loss_detail(call)
        if not counts:
            self.losses.append((call.kind, call.loss.detach()))
        elif deferrable(call):
            self.snapshots.append(snapshot(call))
        else:
            self.eager.append(loss_stats(call, detail=False))
        self.calls += 1

    def row(self, step: int, mode: str) -> dict[str, Any]:
        row: dict[str, Any] = {"step": step, "mode": mode, "loss_calls": self.calls}
        if self.calls:
            row["loss_kind"] = self.kind
            if self.n_classes:
                row["n_classes"] = self.n_classes
            if self.detail:
                row.update(self.detail)
        return row


class _LossBatcher:
    """Fills the loss, accuracy and class-count values of ``steps``/``predictions`` rows:
    at once for steps with only large calls, else at the recorder's next flush, when the
    copies and losses kept from all those steps are reduced in one batch."""

    def __init__(self) -> None:
        self._waiting: list[tuple[dict[str, Any], dict[str, Any] | None, _StepAccumulator]] = []

    def add(self, row: dict[str, Any], pred_row: dict[str, Any] | None, acc: _StepAccumulator) -> None:
        if not acc.calls:
            return
        if acc.snapshots or acc.losses:
            self._waiting.append((row, pred_row, acc))
        else:
            _fill_loss_values(row, pred_row, acc.eager)

    def take_deferred(self) -> Callable[[], None] | None:
        """Recorder ``before_flush`` taker: the waiting steps leave with a job that reduces
        their copies in one batch, run by the writer."""
        waiting, self._waiting = self._waiting, []
        if not waiting:
            return None

        def job() -> None:
            stats = iter(batched_stats([c for *_, acc in waiting for c in acc.snapshots]))
            kept = [loss for *_, acc in waiting for _, loss in acc.losses]
            losses = iter(batched_losses(kept) if kept else [])
            for row, pred_row, acc in waiting:
                step_stats = acc.eager + [next(stats) for _ in acc.snapshots]
                step_stats += [LossStats(kind=kind, n_classes=0, loss=next(losses)) for kind, _ in acc.losses]
                _fill_loss_values(row, pred_row, step_stats)

        return job


def _fill_loss_values(row: dict[str, Any], pred_row: dict[str, Any] | None, stats: list[LossStats]) -> None:
    """Mean loss over the step's calls; class counts summed over the calls that share the
    first call's classes. One call (the usual case) hands its values over as they are."""
    first = stats[0]
    same = [s for s in stats if s.n_pred is not None and s.n_classes == first.n_classes] if first.n_pred is not None else []
    if len(stats) == 1:
        row["loss"] = first.loss
    else:
        row["loss"] = torch.stack([_tensor(s.loss) for s in stats]).sum() / len(stats)
    if not same:
        return
    keys = ("n_pred", "n_label", "correct", "total")
    values = {k: getattr(first, k) for k in keys} if len(same) == 1 else {
        k: torch.stack([_tensor(getattr(s, k)) for s in same]).sum(0) for k in keys
    }
    row.update(correct=values["correct"], total=values["total"])
    if pred_row is not None:
        pred_row.update(n_pred=values["n_pred"], n_label=values["n_label"])


def _tensor(v: "torch.Tensor | Part") -> torch.Tensor:
    return v.base[v.index] if isinstance(v, Part) else v


class Watch:
    """The handle ``watch()`` returns: records while open, holds the diagnosis after."""

    def __init__(
        self,
        model: nn.Module | None = None,
        *,
        out: str | os.PathLike[str] | None = None,
        flush_every: int = DEFAULT_FLUSH_EVERY,
        localize: Schedule = DEFAULT_LOCALIZE,
        gates: Schedule = DEFAULT_GATES,
        summary: bool = True,
        strict: bool = False,
        meta: dict[str, Any] | None = None,
        max_steps: int | None = None,
        on_step: Callable[[int], None] | None = None,
        writer: str | None = None,
        redact_args: bool = False,
        move_if_busy: bool = True,
    ) -> None:
        #: absolute from the start: the program may chdir while it runs
        self.run_dir = Path(os.path.abspath(out if out is not None else default_out_dir()))
        self.redact_args = redact_args
        #: another live run holds ``out``: record into ``out-2`` (True) or refuse (False)
        self.move_if_busy = move_if_busy
        self._claim: Claim | None = None
        self.summary = summary
        self.strict = strict
        self.max_steps = max_steps
        self.on_step = on_step
        self._flush_every = flush_every
        writer_choice(writer)  # a wrong value fails here, not at __enter__
        self._writer_choice = writer
        self._flush_due = flush_schedule(flush_every)
        self._localize_due = localize
        self._detail_due = DEFAULT_DETAIL
        self._stats_due = DEFAULT_STEP_STATS
        self._update_due = DEFAULT_UPDATE_RATIO
        self._data_due = DEFAULT_DATA
        self._time_grad_due = DEFAULT_TIME_GRAD
        self._time_grad_step = -1
        self._gates_due = gates
        self._gates_step = -1
        self._due = _Due()
        #: replays of cell calls on the current gates step, per cell module
        self._cell_calls: dict[str, list[tuple[gates.Replay, torch.Tensor]]] = {}
        self._eval_checked_step = -1
        self._dropouts: list[tuple[str, nn.Module]] = []
        self._fingerprint = data_probe.Fingerprinter()
        self._pending_fp: torch.Tensor | None = None
        self._last_input_stats: tuple[torch.Tensor, dict[str, torch.Tensor]] | None = None
        self._loader_patch: data_probe.LoaderPatch | None = None
        self._rnn_batch_first: bool = True
        self._explicit_model = model
        self._roots: dict[str, nn.Module] = {}
        self._names: dict[int, str] = {}  # id(module) -> qualified name, owned by us
        self._module_handles: list[RemovableHandle] = []
        self._global_handles: list[RemovableHandle] = []
        self._grad_handles: list[RemovableHandle] = []
        self._localize_handles: list[RemovableHandle] = []
        self._activations = ActivationProbe()
        self._activation_handles: list[RemovableHandle] = []
        #: optimizer -> whether it updates watched parameters (weak keys: an id() could be
        #: reused by the next optimizer a loop creates)
        self._optimizers: "weakref.WeakKeyDictionary[torch.optim.Optimizer, bool]" = weakref.WeakKeyDictionary()
        #: diagnose mode's global pre-hook: every module call in the process pays for it, so
        #: it goes once an optimizer step shows the trained modules are all adopted
        self._discovery: RemovableHandle | None = None
        self._param_ids: set[int] = set()
        self._params: ParamProbe | None = None
        self._nonfinite: NonFiniteProbe | None = None
        self._recorder: Recorder | None = None
        self._loss_ctx: Any = None
        #: ids of modules whose calls run inside a compiled region: their hooks never change
        self._inside: set[int] = set()
        #: [whether discovery adopted a model]: compiled code then leaves discovery out
        self._discovered = [False]
        #: discovery, model pre-hook and loss calls made by traced code, run at the next eager hook
        self._deferred = compiled.Deferred()
        #: ids of the roots and recurrent modules whose hooks ran (see ``_unseen``)
        self._hooks_ran: set[int] = set()
        #: discovery, out of the global hook dict while an adopted wrapper's compiled call runs
        self._hidden = compiled.Hidden(lambda: self._discovery)
        self._compile_patch: compiled.CompilePatch | None = None
        self._train = _StepAccumulator()
        self._eval = _StepAccumulator()
        self._losses = _LossBatcher()
        self._opt_stepped = False
        self._flush_pending = False
        self._grads_seen = False
        self._params_captured = False
        self._optimizer_seen = False
        self._logged_explicitly = False
        self._nan_seen = False
        self._lr: "float | torch.Tensor" = float("nan")  # of the first watched optimizer's first param group, per step
        self._t0 = 0.0
        self._meta: dict[str, Any] = dict(meta or {})
        self.steps = 0
        self.diagnosis: Diagnosis | None = None
        self.record: Run | None = None
        self.active = False

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
            self._release()
            raise
        return self

    def _enter(self) -> None:
        # CPU until the model is adopted (``_rebuild_hooks`` decides again, knowing its device)
        self._recorder = Recorder(self.run_dir, background=writer_in_background(False, self._writer_choice))
        self._recorder.before_flush(self._losses.take_deferred)
        self._recorder.before_flush(self._take_param_norms)
        self._due = self._due_at(self.steps)
        self._t0 = time.perf_counter()
        self._meta.update(
            rnndoctor=__version__,
            started=datetime.now().isoformat(timespec="seconds"),
            python=platform.python_version(),
            torch=torch.__version__,
            status="running",
            pid=os.getpid(),
            argv=redact_args(list(sys.argv), everything=self.redact_args),
        )
        if "script_args" in self._meta:
            self._meta["script_args"] = redact_args(list(self._meta["script_args"]), everything=self.redact_args)
        try:
            if self._explicit_model is not None:
                if not isinstance(self._explicit_model, nn.Module):
                    raise TypeError(f"watch() needs a torch.nn.Module, got {type(self._explicit_model).__name__}")
                self._adopt(self._explicit_model, name=compiled.type_name(self._explicit_model))
            else:
                self._arm_discovery()
            self._global_handles.append(register_optimizer_step_pre_hook(compiled.eager(self._opt_pre)))
            self._global_handles.append(register_optimizer_step_post_hook(compiled.eager(self._opt_post)))
            self._loss_ctx = capture_losses(self._deferred.wrap(self._on_loss, order=2))
            self._loss_ctx.__enter__()
            self._compile_patch = compiled.CompilePatch(self._on_compile).__enter__()
            self._loader_patch = data_probe.LoaderPatch(self._on_loader)
            self._loader_patch.__enter__()
        except BaseException:
            self._detach()
            raise
        self.active = True
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
        self.on_step = None  # the run is over: closing its last step must not stop it again
        try:
            self._finish(exc, status)
        except Exception as err:
            if self.strict:
                raise
            sys.stderr.write(f"[rnndoctor] could not finish the run's report: {printable_line(f'{type(err).__name__}: {err}')}\n")
        finally:
            self._release()
        if self.diagnosis is None:
            self.diagnosis = Diagnosis(findings=(), skipped=())
        return self.diagnosis

    def _finish(self, exc: BaseException | None, status: str | None) -> None:
        try:
            self._maybe_close_step()
            self._emit_eval()
        finally:
            self._detach()
        if status is None:
            status = _status_for(exc)
        self._meta.update(status=status, steps=self.steps, wall_s=round(time.perf_counter() - self._t0, 3))
        if exc is not None and status != "completed":
            self._meta["exception"] = {
                "type": type(exc).__name__,
                "message": safe_str(exc),
                "traceback": user_traceback(exc)[-8000:],
            }
        assert self._recorder is not None
        try:
            self._recorder.close()
        except OSError as err:  # the last writes failed (disk full): keep what is on disk
            self._recorder.errors.append(f"closing the record: {type(err).__name__}: {err}")
        if self._recorder.errors:
            if self.strict:
                raise RuntimeError(self._recorder.errors[0])
            self._meta.setdefault("internal_errors", []).extend(self._recorder.errors)
        self._write_meta()
        from .diagnose import diagnose
        from .report.output import write_outputs
        from .report.terminal import print_summary

        self.record = load_run(self.run_dir)
        self.diagnosis = diagnose(self.record, strict=self.strict)
        for problem in write_outputs(self.record, self.diagnosis, self.run_dir, summary=False):
            sys.stderr.write(f"[rnndoctor] {problem}\n")
        if self.summary:
            print_summary(self.record, self.diagnosis)

    def _release(self) -> None:
        if self._claim is not None:
            self._claim.release()

    def findings_so_far(self) -> list[str]:
        """Ids the rules find in what has been recorded so far (flushes; for progress lines)."""
        if self._recorder is None:
            return []
        from .diagnose import diagnose

        try:
            self._recorder.flush(wait=True)
            return diagnose(load_run(self.run_dir)).ids()
        except Exception:  # a progress line must never stop the run
            return []

    @property
    def findings(self) -> list[Finding]:
        """Findings, worst first (empty until the ``with`` block has exited)."""
        return list(self.diagnosis.findings) if self.diagnosis else []

    # ------------------------------------------------------------------ assertions (CI / pytest)
    def _explain_failure(self, headline: str, *, marked: "list[str] | tuple[str, ...]" = (), rule_id: "str | None" = None) -> "AssertionError":
        """The exception an ``assert_*`` raises: its text is the whole explanation."""
        from .report.assertion import FindingAssertionError, explain
        from .rules import all_rules

        notes = []
        if rule_id is not None and self.diagnosis is not None:
            known = [spec.id for spec in all_rules()]
            skipped = {s.rule_id: s.reason for s in self.diagnosis.skipped}
            if rule_id not in known:
                notes.append(f"{rule_id!r} is not a finding id rnndoctor reports; known ids: {', '.join(known)}")
            elif rule_id in skipped:
                notes.append(f"rule {rule_id!r} could not judge this run: {skipped[rule_id]}")
        message = explain(
            headline,
            diagnosis=self.diagnosis,
            meta=self.record.meta if self.record is not None else None,
            run_dir=self.run_dir,
            marked=marked,
            notes=notes,
        )
        return FindingAssertionError(message, run_dir=self.run_dir.resolve(), findings=self.findings)

    def assert_found(self, rule_id: str, severity: "str | None" = None) -> Finding:
        """Fail unless finding ``rule_id`` (at least ``severity``) was reported; return it."""
        __tracebackhide__ = True  # pytest: show the user's line, not this one
        same = [f for f in self.findings if f.id == rule_id]
        for f in same:
            if severity is None or f.severity >= severity:
                return f
        if same:
            headline = (
                f"expected finding {rule_id!r} at severity >= {Severity.parse(severity).value}, "  # type: ignore[arg-type]
                f"but it was reported as {same[0].severity.value}"
            )
        else:
            at_least = f" (at severity >= {Severity.parse(severity).value})" if severity is not None else ""
            headline = f"expected finding {rule_id!r}{at_least} was not reported"
        raise self._explain_failure(headline, marked=[rule_id], rule_id=rule_id)

    def assert_not_found(self, rule_id: str) -> None:
        """Fail if finding ``rule_id`` was reported (or the watch has not finished)."""
        __tracebackhide__ = True
        same = [f for f in self.findings if f.id == rule_id]
        if same:
            f = same[0]
            headline = f"forbidden finding {rule_id!r} was reported ({f.severity.value}): {f.title}"
            raise self._explain_failure(headline, marked=[rule_id])
        if self.diagnosis is None:
            raise self._explain_failure(f"cannot check that {rule_id!r} was not reported")

    def assert_healthy(self, fail_on: str = "error") -> None:
        """Fail if any finding at or above ``fail_on`` (default: error) was reported."""
        __tracebackhide__ = True
        level = Severity.parse(fail_on)
        bad = [f.id for f in self.findings if f.severity >= level]
        if self.diagnosis is None:
            raise self._explain_failure("cannot judge the run's health")
        if not bad and self.diagnosis.unjudged:
            raise self._explain_failure(f"cannot call the run healthy: {'; '.join(self.diagnosis.unjudged)}")
        if bad:
            noun = "finding" if len(bad) == 1 else "findings"
            headline = f"run is not healthy: {len(bad)} {noun} at or above {level.value}: {', '.join(bad)}"
            raise self._explain_failure(headline, marked=bad)

    # ------------------------------------------------------------------ explicit logging
    def log(
        self,
        *,
        logits: torch.Tensor | None = None,
        targets: torch.Tensor | None = None,
        loss: torch.Tensor | None = None,
    ) -> None:
        """Record outputs the automatic loss capture cannot see (a hand-written loss).

        Once used, automatic capture is off for this watch, so nothing is counted twice.
        """
        self._logged_explicitly = True
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
        loss_t = loss if loss is not None else torch.full((), float("nan"), device=logits.device)
        self._record_loss(LossCall(kind, logits, targets, loss_t, {}), grad=loss_t.requires_grad or torch.is_grad_enabled())

    # ------------------------------------------------------------------ adoption
    @_guarded
    def _discover(self, module: nn.Module, args: Any) -> None:
        """Global pre-hook (diagnose mode): adopt the outermost modules that own parameters."""
        if id(module) in self._names or isinstance(module, nn.modules.loss._Loss):
            return
        if next(module.parameters(), None) is None:
            return
        self._adopt(module, name=compiled.type_name(module))
        self._discovered[0] = True
        if compiled.is_wrapper(module) and not compiled.in_region():
            self._hidden.hide()  # this call's own pre-hooks were chosen before its adoption
        self._before_forward(module, args)

    def _arm_discovery(self) -> None:
        """Diagnose mode: adopt modules as they are first called (a global pre-hook)."""
        hook = nn.modules.module.register_module_forward_pre_hook(self._discovery_hook())
        self._discovery = compiled.QuietHandle(hook)  # type: ignore[assignment]
        self._global_handles.append(self._discovery)  # type: ignore[arg-type]

    def _discovery_hook(self) -> Callable[..., Any]:
        """Traced code defers discovery until a model is adopted (the usual
        ``torch.compile(model)`` is adopted at its wrapper's call, before any tracing)."""
        return self._deferred.wrap(self._discover, order=0, unless=self._discovered)

    def _on_compile(self) -> None:
        """``torch.compile`` was called inside the watch: Dynamo is loaded now, so the hooks
        placed before are swapped for eager ones before anything compiled can trace them."""
        compiled.make_eager([h for h in self._global_handles if h is not self._discovery])
        compiled.make_eager([self._discovery] if self._discovery is not None else [], lambda _: self._discovery_hook())

        def module_hook(hook: Callable[..., Any]) -> Callable[..., Any]:
            root = hook == self._before_forward  # see _rebuild_hooks
            return self._deferred.wrap(hook, order=1) if root else compiled.outside_graph(hook)

        compiled.make_eager(self._module_handles + self._localize_handles + self._activation_handles, module_hook)
        if self._loss_ctx is not None:
            self._loss_ctx.__exit__(None, None, None)
            self._loss_ctx = capture_losses(self._deferred.wrap(self._on_loss, order=2))
            self._loss_ctx.__enter__()

    def _adopt(self, model: nn.Module, name: str) -> None:
        # A newly adopted root may contain earlier roots (a sub-module called first).
        for old_name, old in list(self._roots.items()):
            if any(m is old for m in model.modules()):
                del self._roots[old_name]
        base, i = name, 1
        while name in self._roots:
            i += 1
            name = f"{base}{i}"
        self._roots[name] = model
        self._rebuild_hooks()

    def _rebuild_hooks(self) -> None:
        for h in self._module_handles + self._grad_handles:
            h.remove()
        self._module_handles, self._grad_handles = [], []
        self._names.clear()
        named_params: list[tuple[str, nn.Parameter]] = []
        modules_meta, recurrent = [], []
        multi = len(self._roots) > 1
        seen_params: set[int] = set()
        rnn_modules: list[tuple[str, nn.Module]] = []
        dropouts: list[tuple[str, nn.Module]] = []
        device = None
        for root_name, root in self._roots.items():
            for sub_name, m in compiled.user_named_modules(root):
                qual = ".".join(x for x in ((root_name if multi else ""), sub_name) if x) or root_name
                self._names[id(m)] = qual
                if compiled.is_wrapper(m):
                    continue  # torch.compile's wrapper: the module it wraps is listed under its name
                modules_meta.append({"name": qual, "type": type(m).__name__})
                if isinstance(m, nn.modules.dropout._DropoutNd) or (isinstance(m, nn.RNNBase) and m.num_layers > 1):
                    dropouts.append((qual, m))
                if isinstance(m, RECURRENT_TYPES):
                    rnn_modules.append((qual, m))
                    recurrent.append({"name": qual, "type": type(m).__name__, **_rnn_config(m)})
            for p_name, p in compiled.user_named_parameters(root):
                if p.requires_grad and id(p) not in seen_params:
                    seen_params.add(id(p))
                    named_params.append(((f"{root_name}.{p_name}" if multi else p_name), p))
                    device = device or p.device
        device = device or torch.device("cpu")
        if self._recorder is not None:
            self._recorder.cuda_devices = {p.device.index or 0 for _, p in named_params if p.device.type == "cuda"}
            self._recorder.background = writer_in_background(bool(self._recorder.cuda_devices), self._writer_choice)
        self._set_localize(False)
        self._set_activations(False)
        self._nonfinite = NonFiniteProbe(device)
        self._inside = compiled.inside_compiled(self._roots.values())
        outside = compiled.outside_graph
        for root in self._roots.values():
            # a root called only from traced code (compiled in place, or in a compiled function)
            # is seen when the traced code's calls are drained
            self._module_handles.append(root.register_forward_pre_hook(self._deferred.wrap(self._before_forward, order=1)))
            for m in root.modules():
                if compiled.is_wrapper(m):
                    self._module_handles += self._hidden.hooks(m)
        for qual, m in rnn_modules:
            self._module_handles.append(m.register_forward_pre_hook(outside(functools.partial(self._before_rnn, qual)), with_kwargs=True))
            if isinstance(m, nn.RNNBase):
                self._module_handles.append(m.register_forward_hook(outside(functools.partial(self._after_rnn, qual)), with_kwargs=True))
            elif isinstance(m, nn.RNNCellBase):
                self._module_handles.append(m.register_forward_hook(outside(functools.partial(self._after_cell, qual)), with_kwargs=True))
        self._dropouts = dropouts
        fused = [m for _, m in rnn_modules if isinstance(m, nn.RNNBase)]
        self._rnn_batch_first = bool(fused[0].batch_first) if fused else True
        self._params = ParamProbe(named_params, hold_steps=self._flush_every + 1)
        self._param_ids = {id(p) for _, p in named_params}
        self._optimizers.clear()
        probe = self._params
        for i, (_, p) in enumerate(named_params):
            self._grad_handles.append(
                p.register_post_accumulate_grad_hook(lambda t, i=i: self._on_grad(probe, i, t))
            )
        self._meta["model"] = {
            "roots": list(self._roots),
            "modules": modules_meta,
            "recurrent": recurrent,
            "params": [{"name": n, "shape": list(p.shape), "numel": p.numel()} for n, p in named_params],
            "device": str(device),
        }
        self._note_compiled()
        if self.active:
            self._write_meta()

    # ------------------------------------------------------------------ hooks
    @_guarded
    def _before_forward(self, module: nn.Module, args: Any) -> None:
        self._maybe_close_step()
        self._hooks_ran.add(id(module))
        if id(module) not in self._inside and not compiled.is_wrapper(module) and compiled.in_region():
            self._mark_compiled(module)
        due, grad = self._due, torch.is_grad_enabled()
        self._set_localize(due.localize)
        self._set_activations(grad and due.gates)
        if not grad and self._eval_checked_step != self.steps:
            self._check_eval_pass(module)
        self._pending_fp = None
        self._last_input_stats = None
        if not due.data:
            return
        x = args[0] if args else None
        if isinstance(x, torch.Tensor) and x.dim() >= 1 and x.is_floating_point():
            with torch.no_grad():
                batch_dim = 1 if (x.dim() == 3 and not self._rnn_batch_first) else 0
                xb = x.movedim(batch_dim, 0) if batch_dim else x
                self._pending_fp = self._fingerprint(xb)
                assert self._recorder is not None
                row = {"step": self.steps, "mode": "train" if torch.is_grad_enabled() else "eval", "module": self._names.get(id(module), "model")}
                stats = data_probe.input_stats(x)
                self._last_input_stats = (x, stats)
                row.update(stats)
                self._recorder.add("inputs", row, finalize=data_probe.with_all_zero)

    def _mark_compiled(self, module: nn.Module) -> None:
        """A root we adopted unwrapped runs inside a wrapper of the user's: from now on its
        modules keep the hooks they have (per-step ones come off once, now)."""
        self._set_localize(False)
        self._set_activations(False)
        self._inside.update(id(m) for m in module.modules())
        self._note_compiled()
        if self.active:
            self._write_meta()

    def _note_compiled(self) -> None:
        """Which modules run compiled, and what the probes do not see there (meta)."""
        inside = sorted({self._names[i] for i in self._inside if i in self._names})
        unseen = self._unseen()
        model = self._meta.get("model")
        if (inside or unseen) and isinstance(model, dict):
            model["compiled"] = {"modules": inside, "unseen": unseen, "note": compiled.NOTE}

    def _unseen(self) -> list[str]:
        """Models and recurrent modules whose hooks never ran in a run that had steps: with
        Dynamo loaded, their calls were traced (a compiled function, a cell inside a
        compiled module), where our hooks are left out."""
        if not self.steps or not compiled.dynamo_loaded():
            return []
        hooked = [*self._roots.values()] + [m for r in self._roots.values() for m in r.modules() if isinstance(m, RECURRENT_TYPES)]
        return sorted({self._names[id(m)] for m in hooked if id(m) not in self._hooks_ran and id(m) in self._names})

    def _check_eval_pass(self, module: nn.Module) -> None:
        """An evaluation pass (no grad): is dropout still active in it? (once per step)"""
        assert self._recorder is not None
        self._eval_checked_step = self.steps
        active = [name for name, m in self._dropouts if m.training and getattr(m, "p", getattr(m, "dropout", 0)) > 0]
        self._recorder.add(
            "eval_passes",
            {"step": self.steps, "module": self._names.get(id(module), "model"), "model_training": int(module.training),
             "dropout_active": int(bool(active)), "active_modules": active[:8]},
        )

    @_guarded
    def _before_rnn(self, name: str, module: nn.Module, args: Any, kwargs: Any) -> Any:
        """Pre-hook of every recurrent module: input statistics (data schedule) and the
        gradient-through-time hook (its own schedule; first fused-RNN call of the step).
        Closes a finished step first, as the root's pre-hook does: a watched container that
        is never called itself (a ModuleList, a dict of encoder and decoder) has no root
        call, and the RNN input would be counted to the step before."""
        self._hooks_ran.add(id(module))
        if self._recorder is None:
            return None
        self._maybe_close_step()
        if self._due.data:
            self._record_rnn_input(name, module, args, kwargs)
        if (
            self._due.time_grad
            and isinstance(module, nn.RNNBase)
            and torch.is_grad_enabled()
            and self._time_grad_step != self.steps
        ):
            self._time_grad_step = step = self.steps
            packed = isinstance(data_probe.recurrent_input(module, args, kwargs), data_probe.PackedSequence)
            return through_time.attach(module, args, kwargs, functools.partial(self._on_time_grad, name, step, packed))
        return None

    @_guarded
    def _after_rnn(self, name: str, module: nn.Module, args: Any, kwargs: Any, output: Any) -> None:
        """Gate replay (scheduled): recompute gates and cell states from the module's own
        weights and this call's input, before the optimizer moves the weights."""
        if not self._due.gates or self._recorder is None or not torch.is_grad_enabled():
            return
        if self._gates_step == self.steps:
            return  # first call of the step only
        self._gates_step = self.steps
        x = data_probe.recurrent_input(module, args, kwargs)
        hx = args[1] if len(args) > 1 else kwargs.get("hx")
        with torch.no_grad():
            rep = gates.replay(module, x, hx)
            h_n = output[1][0] if isinstance(output[1], tuple) else output[1]
            err = (rep.h_n - h_n.detach()).abs().max() if rep.h_n.shape == h_n.shape else torch.full((), float("nan"))
            self._record_gates(name, self.steps, rep, err)

    def _record_gates(self, name: str, step: int, rep: gates.Replay, err: torch.Tensor) -> None:
        assert self._recorder is not None
        for row in gates.gate_stats(rep):
            base = {"step": step, "module": name}
            if row.get("gate") is None:
                self._recorder.add("cell", {**base, **{k: v for k, v in row.items() if k != "gate"}})
            else:
                self._recorder.add("gates", {**base, **row, "replay_err": err, "exact": int(rep.exact)})

    @_guarded
    def _after_cell(self, name: str, module: nn.Module, args: Any, kwargs: Any, output: Any) -> None:
        """Gate replay of an ``nn.*Cell`` called once per time step in a Python loop: on a
        gates step every call is replayed (one time step each) and the step's calls are
        reduced together when the step closes, as one sequence of that many steps."""
        if not self._due.gates or self._recorder is None or not torch.is_grad_enabled():
            return
        x = args[0] if args else kwargs.get("input")
        hx = args[1] if len(args) > 1 else kwargs.get("hx")
        if not isinstance(x, torch.Tensor):
            return
        calls = self._cell_calls.setdefault(name, [])
        if len(calls) >= gates.MAX_CELL_CALLS:
            return
        with torch.no_grad():
            rep = gates.replay_cell(module, x, hx)
            if calls and calls[0][0].layers[0].h.shape != rep.layers[0].h.shape:
                return  # the batch changed inside the step: keep the first shape's calls
            h_mod = output[0] if isinstance(output, tuple) else output
            err = (rep.h_n - h_mod.detach()).abs().max()
        calls.append((rep, err))

    def _emit_cell_gates(self, step: int) -> None:
        cell_calls, self._cell_calls = self._cell_calls, {}
        for name, calls in cell_calls.items():
            with torch.no_grad():
                rep = gates.join_cell_calls([r for r, _ in calls])
                err = torch.stack([e for _, e in calls]).max()
            self._record_gates(name, step, rep, err)

    def _on_time_grad(self, name: str, step: int, packed: bool, profile: torch.Tensor, pad_share: torch.Tensor | None) -> None:
        """Backward reached the recurrent input of ``step``; ``backward_step`` > ``step``
        means gradient flowed into an earlier batch (state carried without detach)."""
        if self._recorder is not None and self.active:
            row = {"step": step, "backward_step": self.steps, "module": name, "packed": int(packed), "grad_norm": profile}
            if pad_share is not None:
                row["pad_grad_share"] = pad_share
            self._recorder.add("time_grad", row)

    def _record_rnn_input(self, name: str, module: nn.Module, args: Any, kwargs: Any) -> None:
        """Recurrent input as the RNN sees it: scale, constancy, lengths, initial state."""
        assert self._recorder is not None
        x = data_probe.recurrent_input(module, args, kwargs)
        with torch.no_grad():
            row: dict[str, Any] = {"step": self.steps, "module": name, "packed": int(isinstance(x, data_probe.PackedSequence))}
            if isinstance(x, data_probe.PackedSequence):
                t, hist = data_probe.packed_lengths(x)
                row.update(data_probe.input_stats(x.data))
            elif isinstance(x, torch.Tensor) and x.is_floating_point():
                batch_first = bool(getattr(module, "batch_first", True))
                t, hist = data_probe.padded_lengths(x, batch_first) if x.dim() >= 2 and isinstance(module, nn.RNNBase) else (1, None)
                seen = self._last_input_stats
                # the model's input often is the RNN's: its statistics are already on the device
                row.update(seen[1] if seen is not None and seen[0] is x else data_probe.input_stats(x))
            else:
                return
            row["seq_len"] = t
            if hist is not None:
                row["length_hist"] = hist
            hx = args[1] if len(args) > 1 else (kwargs or {}).get("hx")
            states = list(data_probe.tensors_in(hx)) if hx is not None else []
            row["hx_given"] = int(bool(states))
            if states:
                row["hx_zero"] = torch.stack([(h == 0).all() for h in states]).all()
            self._recorder.add("rnn_inputs", row, finalize=data_probe.with_all_zero)

    def _on_loader(self, loader: Any) -> None:
        """First iteration of a DataLoader: fetch a few indices twice (resampling check)."""
        ds = loader.dataset
        if self._recorder is None:
            return
        map_style = data_probe.is_map_style(ds)
        size = len(ds) if map_style else None
        self._recorder.add("datasets", {"step": self.steps, "dataset": type(ds).__name__, "size": size, "map_style": int(map_style)})
        if not size:
            return
        rng = random.Random(0)
        indices = sorted(rng.sample(range(size), min(data_probe.REFETCH_INDICES, size)))
        for row in data_probe.refetch(ds, indices):
            row.update(step=self.steps, dataset=type(ds).__name__)
            self._recorder.add("refetch", row)

    def _module_hooks(self, handles: list[RemovableHandle], on: bool, hook_for: Callable[[str], Any], *, roots: bool) -> None:
        """Forward hooks on every module of the watched models (their roots too when
        ``roots``) while ``on``: a hook, even idle, costs every module call a trip through
        Python, so these exist only on the steps that use them."""
        if on and not handles:
            for root in self._roots.values():
                for m in root.modules():
                    if (roots or m is not root) and id(m) not in self._inside:  # compiled: hooks fixed
                        hook = hook_for(self._names[id(m)])
                        hook = compiled.as_wrapped(hook) if compiled.is_wrapper(m) else hook
                        handles.append(m.register_forward_hook(compiled.outside_graph(hook)))
        elif not on and handles:
            for h in handles:
                h.remove()
            handles.clear()

    def _set_activations(self, on: bool) -> None:
        """Activation statistics of every submodule, on gates steps only."""
        self._module_hooks(self._activation_handles, on, self._activations.hook_for, roots=False)
        self._activations.active = on

    def _set_localize(self, on: bool) -> None:
        """Per-module isfinite checks, on localisation steps only (the probe exists from the
        first adoption on, and so do any hooks it placed)."""
        if self._nonfinite is None:
            return
        self._module_hooks(self._localize_handles, on, self._nonfinite.hook_for, roots=True)
        if on:
            self._nonfinite.active = True

    @_guarded
    def _on_grad(self, probe: ParamProbe, index: int, param: torch.Tensor) -> None:
        self._grads_seen = True
        if not self._optimizer_seen:
            probe.on_grad_accumulated(index, param)

    def _watches(self, optimizer: torch.optim.Optimizer) -> bool:
        known = self._optimizers.get(optimizer)
        if known is None:
            known = self._optimizers[optimizer] = any(
                id(p) in self._param_ids for g in optimizer.param_groups for p in g["params"]
            )
        return known

    def _adopted_all(self, optimizer: torch.optim.Optimizer) -> bool:
        return all(id(p) in self._param_ids for g in optimizer.param_groups for p in g["params"])

    @_guarded
    def _opt_pre(self, optimizer: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
        if self._deferred:  # a compiled step's model call and loss: adopted, recorded first
            self._drain_before_update()
        if not self._watches(optimizer):
            if self._explicit_model is None and self._discovery is None and self.active:
                self._arm_discovery()  # an optimizer of modules not seen yet (a second model)
            return
        if not self._optimizer_seen:
            self._optimizer_seen = True
            for h in self._grad_handles:  # only manual-update loops need per-gradient hooks
                h.remove()
            self._grad_handles = []
        if not self._params_captured and self._params is not None:
            self._params.before_update(norms=self._due.stats, snapshot=self._due.update)
            self._params_captured = True
            lr = optimizer.param_groups[0].get("lr", float("nan"))
            # a tensor learning rate (capturable optimizers) stays on its device until the flush
            self._lr = lr.detach().clone() if isinstance(lr, torch.Tensor) else float(lr)

    def _drain_before_update(self) -> None:
        """Deferred calls run in the optimizer's pre-hook, after the backward pass: its
        gradients belong to the step these calls open, not to a manual update closing the last."""
        grads, self._grads_seen = self._grads_seen, False
        try:
            self._deferred.drain()
        finally:
            self._grads_seen = self._grads_seen or grads

    @_guarded
    def _opt_post(self, optimizer: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
        if self._watches(optimizer):
            self._opt_stepped = True
            if self._discovery is not None and self._adopted_all(optimizer):
                self._discovery.remove()
                self._discovery = None
            if self.max_steps is not None and self.steps + 1 >= self.max_steps:
                self._close_step()  # close now: on_step may stop the run at this step

    @_guarded
    def _on_loss(self, call: LossCall) -> None:
        if self._logged_explicitly:
            return
        self._record_loss(call, grad=call.loss.requires_grad)

    def _record_loss(self, call: LossCall, *, grad: bool) -> None:
        self._maybe_close_step()
        fp, self._pending_fp = self._pending_fp, None
        y = call.target
        if fp is not None and self._recorder is not None and y.dim() >= 1 and y.shape[0] == fp.shape[0]:
            with torch.no_grad():
                yfp = self._fingerprint(y.reshape(y.shape[0], -1).to(torch.float64))[:, 0]
            self._recorder.add("samples", {"step": self.steps, "mode": "train" if grad else "eval", "x1": fp[:, 0], "x2": fp[:, 1], "y": yfp})
        (self._train if grad else self._eval).add(call, detail=self._due.detail, counts=self._due.stats)
        if grad:
            if self._flush_pending:
                self._flush()
            assert self._recorder is not None
            self._recorder.tick()  # backward follows: the writer's next slice overlaps it

    def _flush(self) -> None:
        """Hand the recorded rows to the writer (or write them inline, recorder.py). Done
        right after a training loss is computed, so a writer thread's work overlaps the
        backward pass that follows."""
        self._flush_pending = False
        assert self._recorder is not None
        self._recorder.flush()

    def _take_param_norms(self) -> Callable[[], None] | None:
        return self._params.take_deferred() if self._params is not None else None

    # ------------------------------------------------------------------ steps
    def _due_at(self, step: int) -> _Due:
        nan = self._nan_seen  # after a NaN: localisation, update ratios, counts and norms every step
        return _Due(
            localize=nan or self._localize_due(step),
            gates=self._gates_due(step),
            data=self._data_due(step),
            detail=self._detail_due(step),
            time_grad=self._time_grad_due(step),
            update=nan or self._update_due(step),
            stats=nan or self._stats_due(step),
        )

    def _maybe_close_step(self) -> None:
        if self._deferred:
            self._deferred.drain()
        if self._opt_stepped or (self._grads_seen and not self._optimizer_seen):
            self._close_step()

    def _close_step(self) -> None:
        assert self._recorder is not None
        step = self.steps
        if self._cell_calls:
            self._emit_cell_gates(step)
        for act_row in self._activations.take_rows(step):
            self._recorder.add("activations", act_row)
        self._emit_eval()
        row = self._train.row(step, "train")
        row["time"] = round(time.perf_counter() - self._t0, 4)
        row["lr"] = self._lr
        if self._params is not None:
            grads, updates = self._params.take_rows(step, row)
            if grads is not None:
                self._recorder.add("params", grads)
            if updates is not None:
                self._recorder.add("updates", updates)
        self._recorder.add("steps", row, finalize=self._check_sentinel)
        self._losses.add(row, self._add_predictions(step, "train", self._train), self._train)
        if self._nonfinite is not None:
            taken = self._nonfinite.take_row(step)
            if taken is not None:
                self._recorder.add("nonfinite", taken[0], finalize=taken[1])
        self._train = _StepAccumulator()
        self._opt_stepped = self._grads_seen = self._params_captured = False
        self.steps += 1
        self._due = self._due_at(self.steps)
        if self._flush_pending:  # no loss was computed since the last one was due
            self._flush()
        if self._flush_due(self.steps):
            self._flush_pending = True
        if self.on_step is not None:
            self.on_step(self.steps)

    def _emit_eval(self) -> None:
        if self._eval.calls and self._recorder is not None:
            row = self._eval.row(self.steps, "eval")
            self._recorder.add("steps", row, finalize=_with_loss_finite)
            self._losses.add(row, self._add_predictions(self.steps, "eval", self._eval), self._eval)
            self._eval = _StepAccumulator()

    def _add_predictions(self, step: int, mode: str, acc: _StepAccumulator) -> dict[str, Any] | None:
        """The step's ``predictions`` row; its counts are filled in by the loss batcher."""
        if not acc.n_classes or self._recorder is None:
            return None
        row = {"step": step, "mode": mode, "cls": list(range(acc.n_classes))}
        self._recorder.add("predictions", row)
        return row

    def _check_sentinel(self, row: dict[str, Any]) -> dict[str, Any]:
        """Runs after the batched transfer: a non-finite loss turns localisation on for good."""
        row = _with_loss_finite(row)
        if row.get("loss_finite") == 0 or not _finite(row.get("grad_norm")):
            self._nan_seen = True
        return row

    # ------------------------------------------------------------------ teardown
    def _detach(self) -> None:
        self._note_compiled()
        self._set_localize(False)
        self._set_activations(False)
        for h in self._module_handles + self._grad_handles + self._global_handles:
            h.remove()
        self._module_handles, self._grad_handles, self._global_handles = [], [], []
        if self._loss_ctx is not None:
            self._loss_ctx.__exit__(None, None, None)
            self._loss_ctx = None
        if self._compile_patch is not None:
            self._compile_patch.__exit__(None, None, None)
            self._compile_patch = None
        if self._loader_patch is not None:
            self._loader_patch.__exit__(None, None, None)
            self._loader_patch = None

    def _write_meta(self) -> None:
        write_meta(self.run_dir, self._meta)


def _with_loss_finite(row: dict[str, Any]) -> dict[str, Any]:
    """``loss_finite`` from the transferred mean loss (NaN/Inf anywhere makes the mean so)."""
    if "loss" in row:
        row["loss_finite"] = int(_finite(row["loss"]))
    return row


def _finite(v: Any) -> bool:
    return v is None or (isinstance(v, (int, float)) and v == v and abs(v) != float("inf"))


def _status_for(exc: BaseException | None) -> str:
    if exc is None:
        return "completed"
    if isinstance(exc, KeyboardInterrupt):
        return "interrupted"
    if isinstance(exc, SystemExit):
        return "completed" if exc.code in (None, 0) else "crashed"
    return "crashed"


def _rnn_config(m: nn.Module) -> dict[str, Any]:
    keys = ("input_size", "hidden_size", "num_layers", "bidirectional", "batch_first", "proj_size", "mode")
    return {k: getattr(m, k) for k in keys if hasattr(m, k)}


def watch(model: nn.Module | None = None, **options: Any) -> Watch:
    """Record a training loop and diagnose it on exit.

    ``with rnndoctor.watch(model, out="reports/run1") as run: ...`` — optimizers are found
    through torch's global optimizer hooks; losses through ``torch.nn.functional``. Without
    ``model``, every module that owns parameters and is called inside the block is adopted.
    After the block, ``run.findings`` holds the findings and ``out`` the record,
    ``findings.json`` and ``report.html``.
    """
    return Watch(model, **options)
