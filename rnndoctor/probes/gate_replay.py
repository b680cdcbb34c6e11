"""Gate replay on the gates schedule: gates and cell states recomputed from a recurrent
module's own weights and the call's input (``gates``, ``cell``), before the optimizer moves
the weights. A fused RNN's first training call of the step is replayed whole; an
``nn.*Cell`` called once per time step has every call of the step replayed (one time step
each) and reduced when the step ends, as one sequence of that many steps."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from . import data as data_probe
from . import gates
from .base import Context, Probe


class GatesProbe(Probe):
    """Gate saturation and cell-state growth of every recurrent module, by replay."""

    name = "gates"
    schedule = "gates"
    signals = ("gates", "cell")

    def start(self, ctx: Context) -> list[Any]:
        self.ctx = ctx
        self._step = -1
        #: replays of cell calls on the current gates step, per cell module
        self._cell_calls: dict[str, list[tuple[gates.Replay, torch.Tensor]]] = {}
        return []

    def rnn_output(self, name: str, module: nn.Module, args: Any, kwargs: Any, output: Any) -> None:
        if not torch.is_grad_enabled():
            return
        if isinstance(module, nn.RNNBase):
            self._replay_fused(name, module, args, kwargs, output)
        elif isinstance(module, nn.RNNCellBase):
            self._replay_cell(name, module, args, kwargs, output)

    def _replay_fused(self, name: str, module: nn.Module, args: Any, kwargs: Any, output: Any) -> None:
        if self._step == self.ctx.step:
            return  # first call of the step only
        self._step = self.ctx.step
        x = data_probe.recurrent_input(module, args, kwargs)
        hx = args[1] if len(args) > 1 else kwargs.get("hx")
        with torch.no_grad():
            rep = gates.replay(module, x, hx)
            h_n = output[1][0] if isinstance(output[1], tuple) else output[1]
            err = (rep.h_n - h_n.detach()).abs().max() if rep.h_n.shape == h_n.shape else torch.full((), float("nan"), dtype=torch.float32)
            self._record(name, self.ctx.step, rep, err)

    def _replay_cell(self, name: str, module: nn.Module, args: Any, kwargs: Any, output: Any) -> None:
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

    def end_step(self, step: int, row: dict[str, Any]) -> None:
        cell_calls, self._cell_calls = self._cell_calls, {}
        for name, calls in cell_calls.items():
            with torch.no_grad():
                rep = gates.join_cell_calls([r for r, _ in calls])
                err = torch.stack([e for _, e in calls]).max()
            self._record(name, step, rep, err)

    def _record(self, name: str, step: int, rep: gates.Replay, err: torch.Tensor) -> None:
        for row in gates.gate_stats(rep):
            base = {"step": step, "module": name}
            if row.get("gate") is None:
                self.ctx.recorder.add("cell", {**base, **{k: v for k, v in row.items() if k != "gate"}})
            else:
                self.ctx.recorder.add("gates", {**base, **row, "replay_err": err, "exact": int(rep.exact)})
