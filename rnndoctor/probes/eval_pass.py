"""The evaluation-pass check: a model called without grad while a dropout is still in
training mode (``model.eval()`` forgotten) evaluates a noisy model (``eval_passes``)."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from .base import Context, Probe


class EvalPassProbe(Probe):
    """Whether dropout is still active when the model is evaluated without grad."""

    name = "eval_pass"
    signals = ("eval_passes",)

    def start(self, ctx: Context) -> list[Any]:
        self.ctx = ctx
        self._checked_step = -1
        return []

    def model_call(self, module: nn.Module, args: Any) -> None:
        step = self.ctx.step
        if torch.is_grad_enabled() or self._checked_step == step:
            return
        self._checked_step = step
        active = [name for name, m in self.ctx.model.dropouts if m.training and getattr(m, "p", getattr(m, "dropout", 0)) > 0]
        self.ctx.recorder.add(
            "eval_passes",
            {"step": step, "module": self.ctx.model.name(module), "model_training": int(module.training),
             "dropout_active": int(bool(active)), "active_modules": active[:8]},
        )
