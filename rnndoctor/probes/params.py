"""Gradient norms, update-to-weight ratios and non-finite parameters, many norms at once.

``torch._foreach_norm`` computes every parameter's norm in a few kernels and returns device
tensors; nothing here reads a value back to the host.

Small models go further: a step's finished gradients are kept by reference until the next
flush and normed there, every step's at once, by the writer. That is safe only while
the loop leaves a finished gradient alone (``zero_grad()`` sets it to None, the next
backward makes a new one), so the probe first checks that for a few steps, keeps checking at every
step it norms, and goes back to norming at once, for good, the first time an old gradient
was modified in place (``zero_grad(set_to_none=False)``, an optimizer that rewrites its
gradients). A held gradient found modified when its norm is taken gives no value (NaN
norms, ``grad_lost=1``) rather than a wrong one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import torch
from torch import nn

from ..recorder import Part
from .base import Context, Probe
from .precision import as_stat, wide

Row = dict[str, Any]

#: gradients are held for the flush only while a flush interval's worth of them fits in
#: this many bytes (a 2-layer hidden-256 LSTM's 3 MB of gradients x 50 steps does not: its
#: steps are long enough that one norm op per step costs nothing measurable)
HOLD_GRADS_MAX_BYTES = 32 << 20
#: ... and once this many consecutive steps showed the loop leaves finished gradients alone
HOLD_AFTER_CLEAN_STEPS = 3


@dataclass
class _Deferred:
    """One step's gradient norms, waiting for the flush: computed (``norms``) or still to
    compute from the ``held`` gradients, valid while their ``versions`` are unchanged."""

    grads_row: Row
    step_row: Row
    norms: list[torch.Tensor] | None = None
    held: list[torch.Tensor] | None = None
    versions: list[int] | None = None

    def intact(self) -> bool:
        return self.held is None or _unchanged(self.held, self.versions or [])


def _unchanged(tensors: list[torch.Tensor], versions: list[int]) -> bool:
    """No in-place write since ``versions`` were read (autograd's version counters)."""
    return all(t._version == v for t, v in zip(tensors, versions))


def stacked_norms(tensors: list[torch.Tensor], device: torch.device) -> torch.Tensor:
    """L2 norm of each tensor, stacked into one vector on ``device`` (float32, or float64
    when a tensor is float64: ``precision``)."""
    if not tensors:
        return torch.zeros(0, device=device, dtype=torch.float32)
    dtype = wide(*(t.dtype for t in tensors))
    norms = torch._foreach_norm(tensors)
    try:
        return torch.stack(norms).to(device=device, dtype=dtype)
    except RuntimeError:  # parameters spread over several devices or dtypes
        return torch.stack([n.to(device=device, dtype=dtype) for n in norms])


#: parameters larger than this are sampled for the update ratio: every k-th row, so the
#: copy, the difference and the norms read ~1/k of a vocabulary-sized matrix (a word LM's
#: 10k x 200 decoder and embedding were most of its dense start); the ratio of two norms over
#: the same rows estimates the whole matrix's on the log scale the rule judges
UPDATE_SAMPLE_NUMEL = 1 << 20


def _update_view(p: torch.Tensor) -> torch.Tensor:
    """The part of ``p`` its update ratio is read on: all of it, or every k-th row."""
    d = p.detach()
    if d.numel() <= UPDATE_SAMPLE_NUMEL or d.dim() < 2:
        return d
    return d[:: -(-d.numel() // UPDATE_SAMPLE_NUMEL)]


class ParamNorms:
    """Per-parameter gradient norm before the update, weight norm and update ratio after."""

    def __init__(self, named_params: list[tuple[str, nn.Parameter]], hold_steps: int = 0) -> None:
        """``hold_steps``: the most steps between two flushes (0: never hold gradients)."""
        self.names = [n for n, _ in named_params]
        self.params = [p for _, p in named_params]
        self.device = self.params[0].device if self.params else torch.device("cpu")
        self._grad_norm: torch.Tensor | None = None
        #: this step's per-parameter norms, unstacked: stacked with other steps' at flush
        self._grad_list: list[torch.Tensor] | None = None
        #: this step's gradients and their versions, when they are normed at the flush
        self._held: tuple[list[torch.Tensor], list[int]] | None = None
        grad_bytes = sum(p.numel() * p.element_size() for p in self.params)
        #: whether holding gradients is allowed at all (memory, and no conflict seen yet)
        self.may_hold = hold_steps > 0 and grad_bytes * hold_steps <= HOLD_GRADS_MAX_BYTES
        self.holding = False
        self._clean_steps = 0
        self._previous: tuple[list[torch.Tensor], list[int]] | None = None
        self._deferred: list[_Deferred] = []
        self._named: set[str] = set()
        self._grad_none: list[int] = []
        self._before: list[torch.Tensor] | None = None
        self._before_norm: torch.Tensor | None = None
        self._manual: dict[int, torch.Tensor] = {}
        self._last_weight_norm: torch.Tensor | None = None  # weights after the last step = before this one
        #: some parameter's update ratio is read on a sample of its rows (``_update_view``)
        self._sampled = any(p.numel() > UPDATE_SAMPLE_NUMEL and p.dim() >= 2 for p in self.params)
        #: global L2 norm of the gradients of the step being recorded (device scalar; None
        #: when it is computed with other steps' at the next flush)
        self.global_grad_norm: torch.Tensor | None = None

    def before_update(self, *, norms: bool = True, snapshot: bool = True) -> None:
        """Called from the optimizer's step pre-hook: gradients are final, weights not yet moved.

        ``norms``: record this step's gradient norms (scheduled). ``snapshot`` copies the
        weights so the update ratio can be measured after the step (scheduled: a copy of
        every parameter is the dearest part of this probe). Everything here reads gradients
        and detached weights, which carry no autograd history: no ``no_grad`` needed."""
        if norms:
            self._capture_grads()
        if snapshot:
            self._before = list(torch._foreach_mul([_update_view(p) for p in self.params], 1.0))
            reuse = self._last_weight_norm is not None and not self._sampled  # the last step's weights are these
            self._before_norm = self._last_weight_norm if reuse else stacked_norms(self._before, self.device)

    def _capture_grads(self) -> None:
        grads = [p.grad for p in self.params]
        if not grads or any(g is None for g in grads):
            self._grad_norm, self._grad_none = self._grad_norms()
            return
        # the common case: one op now, or none (held for the flush)
        self._grad_none = [0] * len(grads)
        if self.may_hold:
            self._check_previous(grads)  # type: ignore[arg-type]
        versions = [g._version for g in grads]  # type: ignore[union-attr]
        if self.holding:
            self._held = (grads, versions)  # type: ignore[assignment]
        else:
            self._grad_list = list(torch._foreach_norm(grads))  # type: ignore[arg-type]
        if self.may_hold:
            self._previous = (grads, versions)  # type: ignore[assignment]

    def _check_previous(self, grads: list[torch.Tensor]) -> None:
        """Did the loop leave the last step's gradients alone (new tensors now, old ones
        unmodified)? Hold gradients after a few such steps; never again after one that did not."""
        previous, self._previous = self._previous, None
        if previous is None:
            return
        old, versions = previous
        if any(g is o for g, o in zip(grads, old)) or not _unchanged(old, versions):
            self.may_hold = self.holding = False
            return
        self._clean_steps += 1
        self.holding = self._clean_steps >= HOLD_AFTER_CLEAN_STEPS

    def on_grad_accumulated(self, index: int, param: torch.Tensor) -> None:
        """Manual-update loops (no optimizer): keep the gradient norm while it still exists."""
        if param.grad is not None:
            self._manual[index] = as_stat(param.grad).norm().to(self.device)

    def _grad_norms(self) -> tuple[torch.Tensor, list[int]]:
        present = [i for i, p in enumerate(self.params) if p.grad is not None]
        norms = stacked_norms([self.params[i].grad.detach() for i in present], self.device)  # type: ignore[union-attr]
        return self._per_param(present, norms)

    def _per_param(self, present: list[int], norms: torch.Tensor) -> tuple[torch.Tensor, list[int]]:
        """Norms of the ``present`` gradients spread over all parameters (NaN where a gradient
        is None), the grad-None flags, and ``global_grad_norm`` set from the present ones."""
        self.global_grad_norm = norms.square().sum().sqrt()
        have = set(present)
        none = [0 if i in have else 1 for i in range(len(self.params))]
        if len(present) == len(self.params):
            return norms, none
        out = torch.full((len(self.params),), float("nan"), device=self.device, dtype=norms.dtype)
        if present:
            out[torch.tensor(present, device=self.device)] = norms
        return out, none

    def take_rows(self, step: int, step_row: Row) -> tuple[Row | None, Row | None]:
        """The ``params`` row (gradients, on steps whose norms were recorded) and, on
        snapshot steps, the ``updates`` row (weight norms, update ratios) of the step that
        just ended; ``step_row`` gets the global gradient norm (now, or from the job
        ``take_deferred`` hands the next flush)."""
        grads = self._grads_row(step, step_row)
        updates = None
        if self._before is not None and self._before_norm is not None:
            weight_norm = stacked_norms([p.detach() for p in self.params], self.device)
            self._last_weight_norm = weight_norm
            torch._foreach_sub_(self._before, [_update_view(p) for p in self.params])  # in place: before - after
            updates = self._with_names("updates", {
                "step": step,
                "weight_norm": weight_norm,
                "update_ratio": stacked_norms(self._before, self.device) / self._before_norm.clamp_min(1e-30),
            })
        else:
            self._last_weight_norm = None
        self._grad_norm, self._before, self._before_norm = None, None, None
        self._manual.clear()
        return grads, updates

    def _grads_row(self, step: int, step_row: Row) -> Row | None:
        if self._grad_list is not None or self._held is not None:
            grads: Row = self._with_names("params", {"step": step})
            entry = _Deferred(grads, step_row, norms=self._grad_list)
            if self._held is not None:
                entry.held, entry.versions = self._held
            self._deferred.append(entry)
            self._grad_list, self._held = None, None
            return grads
        if self._grad_norm is None and self._manual:
            idx = sorted(self._manual)
            self._grad_norm, self._grad_none = self._per_param(idx, torch.stack([self._manual[i] for i in idx]))
        if self._grad_norm is None:
            return None
        grads = self._with_names("params", {"step": step, "grad_norm": self._grad_norm})
        if any(self._grad_none):
            grads["grad_none"] = list(self._grad_none)
        step_row["grad_norm"] = self.global_grad_norm
        return grads

    def _with_names(self, signal: str, row: Row) -> Row:
        """Names (and sizes) go into this probe's first row of a signal only; the loader
        carries them forward (signals.Signal.carried): they were a third of each row."""
        if signal not in self._named:
            self._named.add(signal)
            row["param"] = list(self.names)
            if signal == "updates":
                row.update(numel=[p.numel() for p in self.params], ndim=[p.dim() for p in self.params])
        return row

    def take_deferred(self) -> "Callable[[], None] | None":
        """Recorder ``before_flush`` taker: the deferred steps' norms leave with a job that
        norms the held gradients (one op for all steps), stacks every step's norms (one op)
        and fills their rows, run by the writer."""
        entries, self._deferred = self._deferred, []
        if not entries:
            return None
        n_params, device = len(self.params), self.device

        def job() -> None:
            with torch.no_grad():
                held = [e for e in entries if e.held is not None]
                if held:
                    norms = iter(torch._foreach_norm([g for e in held for g in e.held]))  # type: ignore[union-attr]
                    for e in held:
                        e.norms = [next(norms) for _ in range(n_params)]
                flat = [n for e in entries for n in e.norms]  # type: ignore[union-attr]
                try:
                    stacked = torch.stack(flat)
                except RuntimeError:  # parameters spread over several devices
                    stacked = torch.stack([n.to(device) for n in flat])
                per_step = stacked.to(wide(stacked.dtype)).view(len(entries), n_params)
                global_norm = per_step.square().sum(1).sqrt()
            for i, e in enumerate(entries):
                if e.intact():
                    e.grads_row["grad_norm"] = Part(per_step, i)
                    e.step_row["grad_norm"] = Part(global_norm, i)
                else:  # modified in place since the step: no value rather than a wrong one
                    e.grads_row["grad_norm"] = [float("nan")] * n_params
                    e.grads_row["grad_lost"] = 1

        return job


class ParamsProbe(Probe):
    """Gradient norms before the update; weight norms and update ratios after it.

    Gradients are normed (schedule ``stats``) before the first watched optimizer of the step
    moves the weights, update ratios (schedule ``update``) after."""

    name = "params"
    follows = ("stats", "update")
    signals = ("params", "updates")

    def start(self, ctx: Context) -> list[Any]:
        self.ctx = ctx
        self.norms: ParamNorms | None = None
        ctx.recorder.before_flush(lambda: self.norms.take_deferred() if self.norms is not None else None)
        return []

    def attach(self, ctx: Context) -> list[Any]:
        self.norms = ParamNorms(ctx.model.params, hold_steps=ctx.flush_every + 1)
        return []

    def gradient(self, index: int, param: torch.Tensor) -> None:
        if self.norms is not None:
            self.norms.on_grad_accumulated(index, param)

    def before_update(self, optimizer: torch.optim.Optimizer) -> None:
        if self.norms is not None:
            self.norms.before_update(norms=self.ctx.due("stats"), snapshot=self.ctx.due("update"))

    def end_step(self, step: int, row: Row) -> None:
        if self.norms is None:
            return
        grads, updates = self.norms.take_rows(step, row)
        if grads is not None:
            self.ctx.recorder.add("params", grads)
        if updates is not None:
            self.ctx.recorder.add("updates", updates)
