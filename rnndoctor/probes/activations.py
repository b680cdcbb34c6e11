"""Output statistics of every module call on sampled steps: what can be seen of a
hand-written recurrent cell (seed 003: nn.Linear + torch.sigmoid/tanh called in a loop),
whose gates no replay can name.

A forward hook per module, present only on the gates schedule, adds each call's output
moments (over its finite entries) to a per-module accumulator on the device (about ten small
ops per call); one row per module and step is recorded when the step closes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ..signals import LARGE_PREACTIVATION
from .base import Context, Probe
from .nonfinite import tensors_in
from .precision import as_stat


@dataclass
class _ModuleSums:
    """One module's output moments summed over its calls (device tensors)."""

    calls: int
    numel: int
    #: sum, sum of squares, count beyond LARGE_PREACTIVATION, zeros, finite entries
    sums: torch.Tensor
    abs_max: torch.Tensor


#: moments of an output larger than this are taken over an evenly strided sample of about
#: this many elements (a language model's decoder output is tens of MB per call; its share of
#: large or zero values is a statistic a quarter-million elements estimate)
SAMPLE_MAX_NUMEL = 1 << 18


class ActivationSums:
    """Sums, per module, the output moments of its calls while ``active``."""

    def __init__(self) -> None:
        self.active = False
        self._acc: dict[str, _ModuleSums] = {}

    def hook_for(self, name: str):  # noqa: ANN201 - a forward hook
        def hook(module: nn.Module, args: Any, output: Any) -> None:
            if not self.active:
                return
            t = next(iter(tensors_in(output)), None)
            if t is None or t.numel() == 0:
                return
            try:
                self._add(name, t)
            except Exception:  # never break the user's forward pass
                self.active = False

        return hook

    def _add(self, name: str, t: torch.Tensor) -> None:
        with torch.no_grad():
            if t.numel() > SAMPLE_MAX_NUMEL:  # a decoder's [T, B, vocab] logits: an even sample
                t = t.reshape(-1)[:: -(-t.numel() // SAMPLE_MAX_NUMEL)]
            x = as_stat(t)
            finite = torch.isfinite(x)
            x = torch.where(finite, x, torch.zeros((), device=x.device, dtype=x.dtype))  # moments of the finite part
            a = x.abs()
            sums = torch.stack([x.sum(), (x * x).sum(), (a > LARGE_PREACTIVATION).sum().to(x.dtype),
                                ((x == 0) & finite).sum().to(x.dtype), finite.sum().to(x.dtype)])
            amax = a.max()
            entry = self._acc.get(name)
            if entry is None:
                self._acc[name] = _ModuleSums(1, x.numel(), sums, amax)
            else:
                entry.calls += 1
                entry.numel += x.numel()
                entry.sums = entry.sums + sums
                entry.abs_max = torch.maximum(entry.abs_max, amax)

    def take_rows(self, step: int) -> list[dict[str, Any]]:
        """One row per module seen since the last call: calls, mean, std, abs_max, the share
        of |y| > LARGE_PREACTIVATION, of exact zeros and of non-finite values (device tensors)."""
        acc, self._acc = self._acc, {}
        rows = []
        for name, m in acc.items():
            n_finite = m.sums[4].clamp_min(1)
            mean = m.sums[0] / n_finite
            var = (m.sums[1] / n_finite - mean * mean).clamp_min(0)
            rows.append({"step": step, "module": name, "calls": m.calls, "numel": m.numel, "mean": mean, "std": var.sqrt(),
                         "abs_max": m.abs_max, "frac_large": m.sums[2] / n_finite, "frac_zero": m.sums[3] / n_finite,
                         "frac_nonfinite": 1 - m.sums[4] / m.numel})
        return rows


class ActivationsProbe(Probe):
    """Output moments of every submodule (what a hand-written cell shows of its gates).

    On training passes of gates steps only."""

    name = "activations"
    follows = ("gates",)
    signals = ("activations",)

    def start(self, ctx: Context) -> list[Any]:
        self.ctx = ctx
        self.sums = ActivationSums()
        return []

    def attach(self, ctx: Context) -> list[Any]:
        self.switch = ctx.switched_hooks(self.sums.hook_for, roots=False)
        return []

    def model_call(self, module: nn.Module, args: Any) -> None:
        on = torch.is_grad_enabled() and self.ctx.due("gates")
        self.switch.set(on)
        self.sums.active = on

    def end_step(self, step: int, row: dict[str, Any]) -> None:
        for act_row in self.sums.take_rows(step):
            self.ctx.recorder.add("activations", act_row)
