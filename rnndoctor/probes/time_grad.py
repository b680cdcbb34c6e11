"""Gradient through time: ‖∂L/∂x_t‖ for every time step of the first fused-RNN call of a
step (``time_grad``), from a tensor hook on its input; the backward that produces it also
says whether gradient reached an earlier batch (state carried without ``detach``).

A model without a fused RNN (an ``nn.*Cell`` loop, a hand-written cell, a loop over raw
parameters) slices its input itself: the hook goes on the model's own float input
``[B, T, F]`` (or ``[T, B, F]``), recorded under the model's name. For that forward (the
first training pass of the step) a :class:`through_time.HostValueGuard` is active, so
``.numpy()``/``.item()`` on what it computes from the input behave as without us; it comes
off at the step's loss, at latest at its end. Not done while another torch-function mode is
active (a hand-cell observer, the user's own). A model fed token ids ``[B, T]`` has its first
embedding's output ``[B, T, E]`` hooked instead, recorded under the embedding's name: ids
carry no gradient, the vectors the loop slices do."""

from __future__ import annotations

import functools
from typing import Any

import torch
from torch import nn

from .. import compiled
from . import data as data_probe
from . import observing, through_time
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
        #: the batch size of this step's first training loss (None until it is computed)
        self._target_batch: int | None = None
        self._guard: through_time.HostValueGuard | None = None
        #: the step whose token-id input awaits its embedding's output (-1: none)
        self._embedded_step = -1
        return []

    def attach(self, ctx: Context) -> list[Any]:
        """A forward hook on each embedding of a model without a fused RNN: token ids carry
        no gradient, the embedded vectors its loop slices do (idle unless ``model_args``
        saw token ids on a time-gradient step)."""
        self._embedded_step = -1
        if any(isinstance(m, nn.RNNBase) for _, m in ctx.model.recurrent):
            return []
        embeddings = [m for root in ctx.model.roots.values() for m in root.modules()
                      if isinstance(m, nn.Embedding) and id(m) not in ctx.model.inside]
        hook = compiled.outside_graph(observing.unobserved(self._on_embedding))
        return [m.register_forward_hook(hook) for m in embeddings[:4]]

    def _on_embedding(self, module: nn.Module, args: Any, output: Any) -> None:
        step = self.ctx.step
        if self._embedded_step != step or not isinstance(output, torch.Tensor) or output.dim() != 3 \
                or not output.requires_grad or not torch.is_grad_enabled():
            return
        self._embedded_step = -1  # the first embedding after the model's call: its input
        self._step = step
        on_profile = functools.partial(self._on_profile, self.ctx.model.name(module), step, False)
        through_time.attach_embedded(output, lambda: self._target_batch, self.ctx.model.batch_first, on_profile)

    def model_args(self, module: nn.Module, args: tuple[Any, ...]) -> "tuple[Any, ...] | None":
        x = args[0] if args else None
        if isinstance(x, torch.Tensor) and x.dim() == 2 and not x.is_floating_point() and not x.is_complex() \
                and torch.is_grad_enabled() and self._step != self.ctx.step and not self.ctx.model.inside:
            self._embedded_step = self.ctx.step  # token ids [B, T]: the embedding's output is hooked
            self._target_batch = None
            return None
        if (not isinstance(x, torch.Tensor) or x.dim() != 3 or not x.is_floating_point() or x.requires_grad
                or x.grad_fn is not None or not torch.is_grad_enabled() or self._step == self.ctx.step
                or self.ctx.model.inside or through_time.modes_active()
                or any(isinstance(m, nn.RNNBase) for _, m in self.ctx.model.recurrent)):
            return None
        self._step = step = self.ctx.step
        self._target_batch = None
        on_profile = functools.partial(self._on_profile, self.ctx.model.name(module), step, False)
        stand_in = through_time.attach_model_input(x, lambda: self._target_batch, self.ctx.model.batch_first, on_profile)
        self._guard = through_time.HostValueGuard()
        self._guard.__enter__()
        return (stand_in, *args[1:])

    def _release_guard(self) -> None:
        """The forward is over: the guard comes off (only from the top of the mode stack;
        a mode the user entered inside the forward and left on keeps ours under it, inert
        but for host conversions, until it can come off)."""
        if self._guard is not None and observing.on_top(self._guard):
            self._guard.__exit__(None, None, None)
            self._guard = None

    def loss(self, call: Any, grad: bool) -> None:
        """The step's first training loss: the forward is over (the guard comes off), and the
        targets' batch size says which dimension of the model's input is the batch."""
        self._release_guard()
        if grad and self._target_batch is None and call.kind != "logged" and call.target.dim() >= 1:
            self._target_batch = int(call.target.shape[0])

    def before_update(self, optimizer: torch.optim.Optimizer) -> None:
        self._release_guard()

    def end_step(self, step: int, row: Any) -> None:
        self._release_guard()

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
        self._release_guard()
        self._live = False  # a backward after the watch closed records nothing
