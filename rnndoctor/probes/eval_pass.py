"""The evaluation-pass check: a model called without grad while a dropout is still in
training mode (``model.eval()`` forgotten) evaluates a noisy model (``eval_passes``).

Dropout modules say so through their ``training`` flag. A forward that calls
``F.dropout(x, p)`` itself (``training`` defaults to True; ``training=self.training`` is
easily forgotten) has no module to ask: ``torch.nn.functional.dropout`` is wrapped while a
watch is open, and a call with ``training=True`` and ``p > 0`` during a no-grad pass marks
that pass. The wrapper only reads its arguments; the user's call runs unchanged.
"""

from __future__ import annotations

import functools
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import nn

from .base import Context, Probe
from .patches import Removal, SharedPatch

#: how a functional dropout is named among the active dropouts
FUNCTIONAL = "F.dropout"


class EvalPassProbe(Probe):
    """Whether dropout is still active when the model is evaluated without grad."""

    name = "eval_pass"
    signals = ("eval_passes",)

    def start(self, ctx: Context) -> list[Any]:
        self.ctx = ctx
        self._checked_step = -1
        #: the step's first no-grad pass, held until the step ends so that a functional
        #: dropout inside its forward can mark it
        self._pending: dict[str, Any] | None = None
        return [watch_functional_dropout(self._on_functional_dropout)]

    def model_call(self, module: nn.Module, args: Any) -> None:
        self._pass(self.ctx.model.name(module), module)

    def rnn_call(self, name: str, module: nn.Module, args: Any, kwargs: Any) -> None:
        """An evaluation that bypasses the root's ``forward`` (``model.greedy_decode(src)``)
        still calls its recurrent modules."""
        self._pass(name, module)

    def _pass(self, name: str, module: nn.Module) -> None:
        step = self.ctx.step
        if torch.is_grad_enabled() or self._checked_step == step:
            return
        self._emit()
        self._checked_step = step
        active = [name for name, m in self.ctx.model.dropouts if m.training and getattr(m, "p", getattr(m, "dropout", 0)) > 0]
        self._pending = {"step": step, "module": name, "model_training": int(module.training),
                         "dropout_active": int(bool(active)), "active_modules": active[:8]}

    def _on_functional_dropout(self, p: Any, training: Any) -> None:
        row = self._pending
        # a pass already marked by its dropout modules (whose forward calls F.dropout too) is left as it is
        if row is None or row["dropout_active"] or torch.is_grad_enabled() or row["step"] != self.ctx.step or not training:
            return
        if isinstance(p, (int, float)) and p > 0:
            row["dropout_active"] = 1
            row["active_modules"] = [*row["active_modules"], FUNCTIONAL]

    def end_step(self, step: int, row: Any) -> None:
        self._emit()

    def stop(self) -> None:
        self._emit()

    def _emit(self) -> None:
        if self._pending is not None:
            self.ctx.recorder.add("eval_passes", self._pending)
            self._pending = None


DropoutListener = Callable[[Any, Any], None]


def _wrap_dropout(original: Callable[..., Any]) -> Callable[..., Any]:
    def dropout(input: Any, p: float = 0.5, training: bool = True, inplace: bool = False) -> Any:
        if not torch.is_grad_enabled():
            for fn in _DROPOUT.active():
                try:
                    fn(p, training)
                except Exception:  # never the user's problem
                    pass
        return original(input, p, training, inplace)

    return functools.wraps(original)(dropout)


_DROPOUT: SharedPatch[DropoutListener] = SharedPatch([(F, "dropout", _wrap_dropout)])


def watch_functional_dropout(listener: DropoutListener) -> Removal[DropoutListener]:
    """Call ``listener(p, training)`` on every ``F.dropout`` run without grad until the handle
    is removed (the wrapper is installed by the first watch and removed with the last)."""
    return _DROPOUT.add(listener)
