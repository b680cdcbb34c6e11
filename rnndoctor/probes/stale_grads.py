"""Gradients left over from the last step, read at the step's first backward pass.

``loss.backward()`` adds to ``.grad``; only ``zero_grad()`` (or ``.grad = None``) starts a
step from nothing. A loop that zeroes once per epoch, or never, steps along the sum of every
batch's gradient since. The evidence is direct: just before the first backward pass of a
step, the gradients of the parameters the optimizer updates are still there and not zero.

Cost: nothing when they are None (``zero_grad()``'s default); otherwise one ``_foreach_norm``
on the steps of the ``stats`` schedule, kept on the device until the flush.
"""

from __future__ import annotations

import weakref
from typing import Any

import torch

from .base import Context, Probe
from .params import stacked_norms


class StaleGradsProbe(Probe):
    """Norm of the optimizer's gradients already accumulated when a step's backward begins."""

    name = "stale_grads"
    schedule = "stats"
    signals = ("stale_grads",)

    def start(self, ctx: Context) -> list[Any]:
        self.ctx = ctx
        #: the parameters the watched optimizer updates (known from its first step on)
        self._params: list[torch.Tensor] = []
        self._optimizer: "weakref.ref[torch.optim.Optimizer] | None" = None
        self._read_at: int | None = None
        return []

    def before_update(self, optimizer: torch.optim.Optimizer) -> None:
        if self._optimizer is not None and self._optimizer() is optimizer:
            return
        watched = {id(p) for _, p in self.ctx.model.params}
        self._optimizer = weakref.ref(optimizer)
        self._params = [p for g in optimizer.param_groups for p in g["params"] if id(p) in watched]

    def backward(self, root: torch.Tensor) -> None:
        step = self.ctx.step
        if self._read_at == step or not self._params:
            return
        self._read_at = step  # the step's first backward: later ones add to this one's gradient
        grads = [p.grad.detach() for p in self._params if p.grad is not None]
        row: dict[str, Any] = {"step": step, "with_grad": len(grads)}
        row["stale_norm"] = stacked_norms(grads, grads[0].device).norm() if grads else 0.0
        self.ctx.recorder.add("stale_grads", row)

    def stop(self) -> None:
        self._params = []
