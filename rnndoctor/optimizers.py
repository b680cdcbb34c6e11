"""Optimizer steps and gradients as the step clock sees them: which optimizers update
watched parameters, when the first of them is about to step (the probes'
``before_update``), when one has stepped (the step is over), and, in loops that update
parameters by hand, when a backward pass produced gradients."""

from __future__ import annotations

import functools
import weakref
from typing import TYPE_CHECKING, Any

import torch
from torch.optim.optimizer import register_optimizer_step_post_hook, register_optimizer_step_pre_hook
from torch.utils.hooks import RemovableHandle

from . import compiled

if TYPE_CHECKING:
    from .conductor import Conductor


class OptimizerWatch:
    """Global optimizer hooks and per-parameter gradient hooks, and what they mean."""

    def __init__(self, conductor: "Conductor") -> None:
        self.conductor = conductor
        #: optimizer -> whether it updates watched parameters (weak keys: an id() could be
        #: reused by the next optimizer a loop creates)
        self._optimizers: "weakref.WeakKeyDictionary[torch.optim.Optimizer, bool]" = weakref.WeakKeyDictionary()
        self._param_ids: set[int] = set()
        self.handles: list[Any] = []
        self.grad_handles: list[RemovableHandle] = []

    def attach(self) -> None:
        self.handles.append(register_optimizer_step_pre_hook(compiled.eager(self._pre)))
        self.handles.append(register_optimizer_step_post_hook(compiled.eager(self._post)))

    def adopt(self, params: list[tuple[str, torch.nn.Parameter]]) -> None:
        """New watched parameters: forget what was known of optimizers; hook gradients until
        an optimizer step shows the loop has one (only manual-update loops need them)."""
        self.remove_grad_hooks()
        self._param_ids = {id(p) for _, p in params}
        self._optimizers.clear()
        if not self.conductor.clock.optimizer_seen:
            for i, (_, p) in enumerate(params):
                self.grad_handles.append(p.register_post_accumulate_grad_hook(functools.partial(self._on_grad, i)))

    def remove_grad_hooks(self) -> None:
        for h in self.grad_handles:
            h.remove()
        self.grad_handles = []

    def remove(self) -> None:
        self.remove_grad_hooks()
        for h in self.handles:
            h.remove()
        self.handles = []

    def _watches(self, optimizer: torch.optim.Optimizer) -> bool:
        known = self._optimizers.get(optimizer)
        if known is None:
            known = self._optimizers[optimizer] = any(id(p) in self._param_ids for g in optimizer.param_groups for p in g["params"])
            names = self.conductor.meta.setdefault("optimizers", [])
            if known and type(optimizer).__name__ not in names:  # the rules judge update sizes per kind (LBFGS)
                names.append(type(optimizer).__name__)
        return known

    def _on_grad(self, index: int, param: torch.Tensor) -> None:
        try:
            clock = self.conductor.clock
            clock.grads_seen = True
            if not clock.optimizer_seen:
                self.conductor.probes.call("gradient", index, param)
        except Exception as exc:
            self.conductor.internal_error("_on_grad", exc)

    def _pre(self, optimizer: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
        # inside step(): a closure's forward passes and losses (LBFGS evaluates it up to 20
        # times) belong to this step, also before the model is adopted (its first step)
        clock = self.conductor.clock
        try:
            if id(optimizer) in clock.stepped and not clock.stepping:
                clock.close()  # it steps again and no forward ran outside step(): step(closure)
        except Exception as exc:
            self.conductor.internal_error("_opt_pre", exc)
        clock.stepping = True
        try:
            self._before_step(optimizer)
        except Exception as exc:
            self.conductor.internal_error("_opt_pre", exc)

    def _before_step(self, optimizer: torch.optim.Optimizer) -> None:
        c, clock = self.conductor, self.conductor.clock
        if c.deferred:  # a compiled step's model call and loss: adopted, recorded first
            # after the backward pass: its gradients belong to the step these calls open,
            # not to a manual update closing the last
            grads, clock.grads_seen = clock.grads_seen, False
            try:
                c.deferred.drain()
            finally:
                clock.grads_seen = clock.grads_seen or grads
        if not self._watches(optimizer):
            if c.explicit_model is None and not c.discovery.armed and c.active:
                c.discovery.arm()  # an optimizer of modules not seen yet (a second model)
            return
        if not clock.optimizer_seen:
            clock.optimizer_seen = True
            self.remove_grad_hooks()
        if not clock.updating:
            clock.updating = True
            c.probes.call("before_update", optimizer)
            lr = optimizer.param_groups[0].get("lr", float("nan"))
            # a tensor learning rate (capturable optimizers) stays on its device until the flush
            clock.lr = lr.detach().clone() if isinstance(lr, torch.Tensor) else float(lr)

    def _post(self, optimizer: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
        self.conductor.clock.stepping = False
        try:
            if not self._watches(optimizer):
                return
            c = self.conductor
            c.clock.stepped.add(id(optimizer))
            if c.discovery.armed and all(id(p) in self._param_ids for g in optimizer.param_groups for p in g["params"]):
                c.discovery.remove()
            if c.clock.last_step_reached():
                c.clock.close()  # close now: on_step may stop the run at this step
        except Exception as exc:
            self.conductor.internal_error("_opt_post", exc)
