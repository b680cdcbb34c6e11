"""Carried state: does a recurrent module's initial state still hold an earlier step's graph?

A stateful loop (a language model reading a corpus in order, a stream) hands ``h_n`` (and
``c_n``) of one batch to the next. Without ``.detach()`` the next backward reaches back into
the previous batch's graph: slower every step, or — since that graph was freed — torch's
"Trying to backward through the graph a second time". The probe remembers (by weak
reference) the state tensors each recurrent call returned with a graph, and records when a
later step feeds one of them back in with its ``grad_fn`` intact. Attribute reads only: no
device work, no sync.
"""

from __future__ import annotations

import weakref
from typing import Any

import torch
from torch import nn

from .base import Context, Probe
from .data import recurrent_state
from .nonfinite import tensors_in

#: states remembered per module call are kept for this many steps
KEEP_STEPS = 2


def _state_of(module: nn.Module, output: Any) -> Any:
    """The state part of a recurrent module's output: ``h_n``/``(h_n, c_n)`` for nn.RNN/LSTM/GRU,
    the whole output for a cell."""
    if isinstance(module, nn.RNNBase) and isinstance(output, tuple) and len(output) == 2:
        return output[1]
    return output


class CarriedStateProbe(Probe):
    """Records ``carried_state`` rows: a step fed a recurrent module a state made, with its
    graph, by an earlier step."""

    name = "carried_state"
    schedule = "carried"
    signals = ("carried_state",)

    def start(self, ctx: Context) -> list[Any]:
        self.ctx = ctx
        #: id(tensor) -> (weak reference, step it was returned in)
        self._made: dict[int, tuple[weakref.ref, int]] = {}
        self._seen: set[tuple[str, int]] = set()
        return []

    def rnn_call(self, name: str, module: nn.Module, args: Any, kwargs: Any) -> None:
        hx = recurrent_state(args, kwargs)
        if hx is None or not torch.is_grad_enabled():
            return None
        step = self.ctx.step
        for t in tensors_in(hx):
            if t.grad_fn is None:
                continue
            entry = self._made.get(id(t))
            if entry is not None and entry[0]() is t and entry[1] < step and (name, step) not in self._seen:
                self._seen.add((name, step))
                self.ctx.recorder.add("carried_state", {"step": step, "module": name, "from_step": entry[1]})
        return None

    def rnn_output(self, name: str, module: nn.Module, args: Any, kwargs: Any, output: Any) -> None:
        if not torch.is_grad_enabled():
            return
        step = self.ctx.step
        for t in tensors_in(_state_of(module, output)):
            if t.grad_fn is not None:
                self._made[id(t)] = (weakref.ref(t), step)

    def end_step(self, step: int, row: Any) -> None:
        if self._made:
            self._made = {k: v for k, v in self._made.items() if v[1] > step - KEEP_STEPS and v[0]() is not None}
        self._seen.clear()

    def stop(self) -> None:
        self._made.clear()
