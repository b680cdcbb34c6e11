"""The conductor: adopts the user's models, places every hook rnndoctor needs, and turns
torch's events into the probes' hooks (``probes/base.py``) and the step clock's ticks.

It owns every handle it registers (module hooks, global optimizer hooks, gradient hooks, the
functional-loss wrappers, the probes' handles) and removes all of them in ``detach``, also
when the loop raises. Names of modules live in dicts owned here: nothing is written onto the
user's modules, so a pickled model carries nothing of ours.
"""

from __future__ import annotations

import functools
import weakref
from typing import Any, Callable

import torch
from torch import nn
from torch.optim.optimizer import register_optimizer_step_post_hook, register_optimizer_step_pre_hook
from torch.utils.hooks import RemovableHandle

from . import adoption, compiled
from .clock import StepClock
from .probes import ProbeSet
from .probes.base import Context, ModelView
from .probes.outputs import LossCall, capture_losses
from .recorder import Recorder, writer_in_background


def guarded(method: Callable[..., Any]) -> Callable[..., Any]:
    """Hooks run inside the user's program: an error of ours must not become theirs.

    The error is kept (``internal_errors`` in meta.json) and recording goes on without that
    call; ``strict=True`` (tests) re-raises. ``StopRun`` and other BaseExceptions pass."""

    @functools.wraps(method)
    def guarded(self: "Conductor", *args: Any, **kwargs: Any) -> Any:
        try:
            return method(self, *args, **kwargs)
        except Exception as exc:
            self.internal_error(method.__name__, exc)
            return None

    return guarded


class Conductor:
    """Adoption, hook placement and event dispatch for one watch."""

    def __init__(self, *, model: nn.Module | None, recorder: Recorder, probes: ProbeSet, clock: StepClock,
                 ctx: Context, meta: dict[str, Any], strict: bool, writer: str | None, on_model_change: Callable[[], None]) -> None:
        self.explicit_model, self.recorder, self.probes, self.clock, self.ctx = model, recorder, probes, clock, ctx
        self.meta, self.strict, self._writer, self._on_model_change = meta, strict, writer, on_model_change
        self.roots: dict[str, nn.Module] = {}
        self.view = ModelView()
        self._module_handles: list[RemovableHandle] = []
        self._global_handles: list[Any] = []
        self._grad_handles: list[RemovableHandle] = []
        self._probe_handles: list[Any] = []
        #: optimizer -> whether it updates watched parameters (weak keys: an id() could be
        #: reused by the next optimizer a loop creates)
        self._optimizers: "weakref.WeakKeyDictionary[torch.optim.Optimizer, bool]" = weakref.WeakKeyDictionary()
        self._param_ids: set[int] = set()
        #: diagnose mode's global pre-hook: every module call in the process pays for it, so
        #: it goes once an optimizer step shows the trained modules are all adopted
        self._discovery: Any = None
        self._discovered = [False]  # [whether discovery adopted a model]: compiled code then skips it
        #: discovery, model pre-hook and loss calls made by traced code, run at the next eager hook
        self.deferred = compiled.Deferred()
        #: ids of the roots and recurrent modules whose hooks ran (see ``adoption.unseen``)
        self.hooks_ran: set[int] = set()
        #: discovery, out of the global hook dict while an adopted wrapper's compiled call runs
        self._hidden = compiled.Hidden(lambda: self._discovery)
        self._loss_ctx: Any = None
        self._compile_patch: compiled.CompilePatch | None = None
        self._logged_explicitly = False
        #: between ``attach`` and ``detach``
        self.active = False

    def internal_error(self, where: str, exc: Exception) -> None:
        if self.strict:
            raise exc
        errors = self.meta.setdefault("internal_errors", [])
        if len(errors) < 20:
            errors.append(f"{where}: {type(exc).__name__}: {exc}")

    # ------------------------------------------------------------------ lifetime
    def attach(self) -> None:
        """Global hooks, the first adoption (or discovery) and the probes' start."""
        self._probe_handles += [h for hs in self.probes.lifetime("start", self.ctx) for h in (hs or [])]
        if self.explicit_model is not None:
            if not isinstance(self.explicit_model, nn.Module):
                raise TypeError(f"watch() needs a torch.nn.Module, got {type(self.explicit_model).__name__}")
            self._adopt(self.explicit_model, name=compiled.type_name(self.explicit_model))
        else:
            self._arm_discovery()
        self._global_handles.append(register_optimizer_step_pre_hook(compiled.eager(self._opt_pre)))
        self._global_handles.append(register_optimizer_step_post_hook(compiled.eager(self._opt_post)))
        self._loss_ctx = capture_losses(self.deferred.wrap(self._on_loss, order=2))
        self._loss_ctx.__enter__()
        self._compile_patch = compiled.CompilePatch(self._on_compile).__enter__()
        self.active = True

    def finish(self) -> None:
        """The last step closes and the probes stop; then every hook comes off."""
        try:
            self.maybe_close_step()
            self.probes.lifetime("stop")
        finally:
            self.detach()

    def detach(self) -> None:
        self.active = False
        self.note_compiled()
        handles = self._module_handles + self._grad_handles + self._global_handles + self._probe_handles + self.ctx.handles
        for s in self.ctx.switches:
            s.remove()
        for h in handles:
            h.remove()
        self._module_handles, self._grad_handles, self._global_handles, self._probe_handles = [], [], [], []
        self.ctx.switches.clear()
        self.ctx.handles.clear()
        for patch in (self._loss_ctx, self._compile_patch):
            if patch is not None:
                patch.__exit__(None, None, None)
        self._loss_ctx = self._compile_patch = None

    # ------------------------------------------------------------------ adoption
    @guarded
    def _discover(self, module: nn.Module, args: Any) -> None:
        """Global pre-hook (diagnose mode): adopt the outermost modules that own parameters."""
        if id(module) in self.view.names or isinstance(module, nn.modules.loss._Loss):
            return
        if next(module.parameters(), None) is None:
            return
        self._adopt(module, name=compiled.type_name(module))
        self._discovered[0] = True
        if compiled.is_wrapper(module) and not compiled.in_region():
            self._hidden.hide()  # this call's own pre-hooks were chosen before its adoption
        self._before_forward(module, args)

    def _arm_discovery(self) -> None:
        """Diagnose mode: adopt modules as they are first called (a global pre-hook)."""
        hook = nn.modules.module.register_module_forward_pre_hook(self._discovery_hook())
        self._discovery = compiled.QuietHandle(hook)
        self._global_handles.append(self._discovery)

    def _discovery_hook(self) -> Callable[..., Any]:
        """Traced code defers discovery until a model is adopted (the usual
        ``torch.compile(model)`` is adopted at its wrapper's call, before any tracing)."""
        return self.deferred.wrap(self._discover, order=0, unless=self._discovered)

    def _on_compile(self) -> None:
        """``torch.compile`` was called inside the watch: Dynamo is loaded now, so the hooks
        placed before are swapped for eager ones before anything compiled can trace them."""
        compiled.make_eager([h for h in self._global_handles if h is not self._discovery])
        compiled.make_eager([self._discovery] if self._discovery is not None else [], lambda _: self._discovery_hook())

        def module_hook(hook: Callable[..., Any]) -> Callable[..., Any]:
            root = hook == self._before_forward  # see _rebuild_hooks
            return self.deferred.wrap(hook, order=1) if root else compiled.outside_graph(hook)

        switched = [h for s in self.ctx.switches for h in s.handles]
        compiled.make_eager(self._module_handles + switched + self.ctx.handles, module_hook)
        if self._loss_ctx is not None:
            self._loss_ctx.__exit__(None, None, None)
            self._loss_ctx = capture_losses(self.deferred.wrap(self._on_loss, order=2))
            self._loss_ctx.__enter__()

    def _adopt(self, model: nn.Module, name: str) -> None:
        # A newly adopted root may contain earlier roots (a sub-module called first).
        for old_name, old in list(self.roots.items()):
            if any(m is old for m in model.modules()):
                del self.roots[old_name]
        base, i = name, 1
        while name in self.roots:
            i += 1
            name = f"{base}{i}"
        self.roots[name] = model
        self._rebuild_hooks()

    def _rebuild_hooks(self) -> None:
        for s in self.ctx.switches:
            s.remove()
        for h in self._module_handles + self._grad_handles + self.ctx.handles:
            h.remove()
        self._module_handles, self._grad_handles = [], []
        self.ctx.switches.clear()
        self.ctx.handles.clear()
        self.view, model_meta = adoption.survey(self.roots, compiled.inside_compiled(self.roots.values()))
        self.ctx.model = self.view
        cuda = {p.device.index or 0 for _, p in self.view.params if p.device.type == "cuda"}
        self.recorder.cuda_devices = cuda
        self.recorder.background = writer_in_background(bool(cuda), self._writer)
        outside = compiled.outside_graph
        for root in self.roots.values():
            # a root called only from traced code (compiled in place, or in a compiled function)
            # is seen when the traced code's calls are drained
            self._module_handles.append(root.register_forward_pre_hook(self.deferred.wrap(self._before_forward, order=1)))
            for m in root.modules():
                if compiled.is_wrapper(m):
                    self._module_handles += self._hidden.hooks(m)
        for qual, m in self.view.recurrent:
            self._module_handles.append(m.register_forward_pre_hook(outside(functools.partial(self._before_rnn, qual)), with_kwargs=True))
            if self.probes.implemented("rnn_output"):
                self._module_handles.append(m.register_forward_hook(outside(functools.partial(self._after_rnn, qual)), with_kwargs=True))
        self._param_ids = {id(p) for _, p in self.view.params}
        self._optimizers.clear()
        self.ctx.handles += [h for hs in self.probes.lifetime("attach", self.ctx) for h in (hs or [])]
        for i, (_, p) in enumerate(self.view.params):
            self._grad_handles.append(p.register_post_accumulate_grad_hook(functools.partial(self._on_grad, i)))
        self.meta["model"] = model_meta
        self.note_compiled()
        self._on_model_change()

    # ------------------------------------------------------------------ module hooks
    @guarded
    def _before_forward(self, module: nn.Module, args: Any) -> None:
        self.maybe_close_step()
        self.hooks_ran.add(id(module))
        if id(module) not in self.view.inside and not compiled.is_wrapper(module) and compiled.in_region():
            self._mark_compiled(module)
        self.probes.call("model_call", module, args)

    def _mark_compiled(self, module: nn.Module) -> None:
        """A root we adopted unwrapped runs inside a wrapper of the user's: from now on its
        modules keep the hooks they have (per-step ones come off once, now)."""
        for s in self.ctx.switches:
            s.set(False)
        self.view.inside.update(id(m) for m in module.modules())
        self.note_compiled()
        self._on_model_change()

    def note_compiled(self) -> None:
        """Which modules run compiled, and what the probes do not see there (meta)."""
        note = adoption.compiled_note(self.view, self.hooks_ran, self.clock.step)
        model = self.meta.get("model")
        if note is not None and isinstance(model, dict):
            model["compiled"] = note

    @guarded
    def _before_rnn(self, name: str, module: nn.Module, args: Any, kwargs: Any) -> Any:
        """Pre-hook of every recurrent module. Closes a finished step first, as the root's
        pre-hook does: a watched container that is never called itself (a ModuleList, a dict
        of encoder and decoder) has no root call, and the RNN input would be counted to the
        step before."""
        self.hooks_ran.add(id(module))
        self.maybe_close_step()
        return self.probes.rnn_call(name, module, args, kwargs)

    @guarded
    def _after_rnn(self, name: str, module: nn.Module, args: Any, kwargs: Any, output: Any) -> None:
        self.probes.call("rnn_output", name, module, args, kwargs, output)

    # ------------------------------------------------------------------ training events
    @guarded
    def _on_grad(self, index: int, param: torch.Tensor) -> None:
        self.clock.grads_seen = True
        if not self.clock.optimizer_seen:
            self.probes.call("gradient", index, param)

    def _watches(self, optimizer: torch.optim.Optimizer) -> bool:
        known = self._optimizers.get(optimizer)
        if known is None:
            known = self._optimizers[optimizer] = any(id(p) in self._param_ids for g in optimizer.param_groups for p in g["params"])
        return known

    @guarded
    def _opt_pre(self, optimizer: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
        if self.deferred:  # a compiled step's model call and loss: adopted, recorded first
            self._drain_before_update()
        if not self._watches(optimizer):
            if self.explicit_model is None and self._discovery is None and self.active:
                self._arm_discovery()  # an optimizer of modules not seen yet (a second model)
            return
        clock = self.clock
        if not clock.optimizer_seen:
            clock.optimizer_seen = True
            for h in self._grad_handles:  # only manual-update loops need per-gradient hooks
                h.remove()
            self._grad_handles = []
        if not clock.updating:
            clock.updating = True
            self.probes.call("before_update", optimizer)
            lr = optimizer.param_groups[0].get("lr", float("nan"))
            # a tensor learning rate (capturable optimizers) stays on its device until the flush
            clock.lr = lr.detach().clone() if isinstance(lr, torch.Tensor) else float(lr)

    def _drain_before_update(self) -> None:
        """Deferred calls run in the optimizer's pre-hook, after the backward pass: its
        gradients belong to the step these calls open, not to a manual update closing the last."""
        grads, self.clock.grads_seen = self.clock.grads_seen, False
        try:
            self.deferred.drain()
        finally:
            self.clock.grads_seen = self.clock.grads_seen or grads

    @guarded
    def _opt_post(self, optimizer: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
        if self._watches(optimizer):
            self.clock.opt_stepped = True
            if self._discovery is not None and all(id(p) in self._param_ids for g in optimizer.param_groups for p in g["params"]):
                self._discovery.remove()
                self._discovery = None
            if self.clock.last_step_reached():
                self.clock.close()  # close now: on_step may stop the run at this step

    @guarded
    def _on_loss(self, call: LossCall) -> None:
        if not self._logged_explicitly:
            self.record_loss(call, grad=call.loss.requires_grad)

    def log_loss(self, call: LossCall, grad: bool) -> None:
        """``run.log``: from now on the automatic capture is off, so nothing counts twice."""
        self._logged_explicitly = True
        self.record_loss(call, grad=grad)

    def record_loss(self, call: LossCall, *, grad: bool) -> None:
        self.maybe_close_step()
        self.probes.call("loss", call, grad)
        if grad:
            self.clock.training_loss()

    def maybe_close_step(self) -> None:
        if self.deferred:
            self.deferred.drain()
        if self.clock.ready():
            self.clock.close()
