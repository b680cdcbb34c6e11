"""Gradient through time: ‖∂L/∂x_t‖ for every time step of the first fused-RNN call of a
step (``time_grad``), from a tensor hook on its input; the backward that produces it also
says whether gradient reached an earlier batch (state carried without ``detach``)."""

from __future__ import annotations

import functools
from typing import Any

import torch
from torch import nn

from . import data as data_probe
from . import through_time
from .base import Context, Probe


class TimeGradProbe(Probe):
    """How far back in time the gradient reaches, and whether it crosses batches."""

    name = "time_grad"
    schedule = "time_grad"
    signals = ("time_grad",)

    def start(self, ctx: Context) -> list[Any]:
        self.ctx = ctx
        self._step = -1
        self._live = True
        return []

    def rnn_call(self, name: str, module: nn.Module, args: Any, kwargs: Any) -> "tuple[Any, Any] | None":
        if not isinstance(module, nn.RNNBase) or not torch.is_grad_enabled() or self._step == self.ctx.step:
            return None
        self._step = step = self.ctx.step
        packed = isinstance(data_probe.recurrent_input(module, args, kwargs), data_probe.PackedSequence)
        return through_time.attach(module, args, kwargs, functools.partial(self._on_profile, name, step, packed))

    def _on_profile(self, name: str, step: int, packed: bool, profile: torch.Tensor, pad_share: torch.Tensor | None) -> None:
        """Backward reached the recurrent input of ``step``; ``backward_step`` > ``step``
        means gradient flowed into an earlier batch (state carried without detach)."""
        if self._live:
            row = {"step": step, "backward_step": self.ctx.step, "module": name, "packed": int(packed), "grad_norm": profile}
            if pad_share is not None:
                row["pad_grad_share"] = pad_share
            self.ctx.recorder.add("time_grad", row)

    def stop(self) -> None:
        self._live = False  # a backward after the watch closed records nothing
