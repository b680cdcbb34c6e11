"""Gradient norms, update-to-weight ratios and non-finite parameters, many norms at once.

``torch._foreach_norm`` computes every parameter's norm in a few kernels and returns device
tensors; nothing here reads a value back to the host.
"""

from __future__ import annotations

from typing import Any, Callable

import torch
from torch import nn

from ..recorder import Part

Row = dict[str, Any]


def _norms(tensors: list[torch.Tensor], device: torch.device) -> torch.Tensor:
    """L2 norm of each tensor, stacked into one float32 vector on ``device``."""
    if not tensors:
        return torch.zeros(0, device=device)
    norms = torch._foreach_norm(tensors)
    try:
        return torch.stack(norms).to(device=device, dtype=torch.float32)
    except RuntimeError:  # parameters spread over several devices or dtypes
        return torch.stack([n.to(device=device, dtype=torch.float32) for n in norms])


class ParamProbe:
    """Per-parameter gradient norm before the update, weight norm and update ratio after."""

    def __init__(self, named_params: list[tuple[str, nn.Parameter]]) -> None:
        self.names = [n for n, _ in named_params]
        self.params = [p for _, p in named_params]
        self.device = self.params[0].device if self.params else torch.device("cpu")
        self._grad_norm: torch.Tensor | None = None
        #: this step's per-parameter norms, unstacked: stacked with other steps' at flush
        self._grad_list: list[torch.Tensor] | None = None
        self._deferred: list[tuple[Row, Row, list[torch.Tensor]]] = []
        self._named: set[str] = set()
        self._grad_none: list[int] = []
        self._before: list[torch.Tensor] | None = None
        self._before_norm: torch.Tensor | None = None
        self._manual: dict[int, torch.Tensor] = {}
        self._last_weight_norm: torch.Tensor | None = None  # weights after the last step = before this one
        #: global L2 norm of the gradients of the step being recorded (device scalar; None
        #: when it is computed with other steps' at the next flush)
        self.global_grad_norm: torch.Tensor | None = None

    def before_update(self, snapshot: bool = True) -> None:
        """Called from the optimizer's step pre-hook: gradients are final, weights not yet moved.

        ``snapshot`` copies the weights so the update ratio can be measured after the step
        (scheduled: a copy of every parameter is the dearest part of this probe)."""
        with torch.no_grad():
            grads = [p.grad for p in self.params]
            if grads and all(g is not None for g in grads):  # the common case: one op now, the rest at flush
                self._grad_list = list(torch._foreach_norm(grads))  # type: ignore[arg-type]
                self._grad_none = [0] * len(grads)
            else:
                self._grad_norm, self._grad_none = self._grad_norms()
            if snapshot:
                self._before = list(torch._foreach_mul([p.detach() for p in self.params], 1.0))
                self._before_norm = self._last_weight_norm if self._last_weight_norm is not None else _norms(self._before, self.device)

    def on_grad_accumulated(self, index: int, param: torch.Tensor) -> None:
        """Manual-update loops (no optimizer): keep the gradient norm while it still exists."""
        if param.grad is not None:
            self._manual[index] = param.grad.detach().norm().float().to(self.device)

    def _grad_norms(self) -> tuple[torch.Tensor, list[int]]:
        present = [i for i, p in enumerate(self.params) if p.grad is not None]
        norms = _norms([self.params[i].grad.detach() for i in present], self.device)  # type: ignore[union-attr]
        return self._per_param(present, norms)

    def _per_param(self, present: list[int], norms: torch.Tensor) -> tuple[torch.Tensor, list[int]]:
        """Norms of the ``present`` gradients spread over all parameters (NaN where a gradient
        is None), the grad-None flags, and ``global_grad_norm`` set from the present ones."""
        self.global_grad_norm = norms.square().sum().sqrt()
        have = set(present)
        none = [0 if i in have else 1 for i in range(len(self.params))]
        if len(present) == len(self.params):
            return norms, none
        out = torch.full((len(self.params),), float("nan"), device=self.device)
        if present:
            out[torch.tensor(present, device=self.device)] = norms
        return out, none

    def take_rows(self, step: int, step_row: Row) -> tuple[Row | None, Row | None]:
        """The ``params`` row (gradients) and, on snapshot steps, the ``updates`` row
        (weight norms, update ratios) of the step that just ended; ``step_row`` gets the
        global gradient norm (now, or from the job ``take_deferred`` hands the next flush)."""
        with torch.no_grad():
            if self._grad_list is not None:
                grads: Row = self._with_names("params", {"step": step})
                self._deferred.append((grads, step_row, self._grad_list))
                self._grad_list = None
            else:
                if self._grad_norm is None and self._manual:
                    idx = sorted(self._manual)
                    self._grad_norm, self._grad_none = self._per_param(idx, torch.stack([self._manual[i] for i in idx]))
                if self._grad_norm is None:
                    return None, None
                grads = self._with_names("params", {"step": step, "grad_norm": self._grad_norm})
                if any(self._grad_none):
                    grads["grad_none"] = list(self._grad_none)
                step_row["grad_norm"] = self.global_grad_norm
            updates = None
            if self._before is not None and self._before_norm is not None:
                weight_norm = _norms([p.detach() for p in self.params], self.device)
                self._last_weight_norm = weight_norm
                torch._foreach_sub_(self._before, [p.detach() for p in self.params])  # in place: before - after
                updates = self._with_names("updates", {
                    "step": step,
                    "weight_norm": weight_norm,
                    "update_ratio": _norms(self._before, self.device) / self._before_norm.clamp_min(1e-30),
                })
            else:
                self._last_weight_norm = None
        self._grad_norm, self._before, self._before_norm = None, None, None
        self._manual.clear()
        return grads, updates

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
        stacks them (one op for all) and fills their rows, on the writer thread."""
        entries, self._deferred = self._deferred, []
        if not entries:
            return None
        n_params, device = len(self.params), self.device

        def job() -> None:
            flat = [n for *_, norms in entries for n in norms]
            with torch.no_grad():
                try:
                    stacked = torch.stack(flat)
                except RuntimeError:  # parameters spread over several devices
                    stacked = torch.stack([n.to(device) for n in flat])
                per_step = stacked.to(torch.float32).view(len(entries), n_params)
                global_norm = per_step.square().sum(1).sqrt()
            for i, (grads, step_row, _) in enumerate(entries):
                grads["grad_norm"] = Part(per_step, i)
                step_row["grad_norm"] = Part(global_norm, i)

        return job
