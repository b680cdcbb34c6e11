"""The conductor: adopts the user's models, places every hook rnndoctor needs, and turns
torch's events into the probes' hooks (``probes/base.py``) and the step clock's ticks.

It owns every handle it registers (module hooks, global optimizer hooks, gradient hooks, the
functional-loss wrappers, the probes' handles) and removes all of them in ``detach``, also
when the loop raises. Names of modules live in dicts owned here: nothing is written onto the
user's modules, so a pickled model carries nothing of ours.
"""

from __future__ import annotations

import functools
from typing import Any, Callable

import torch
from torch import nn
from torch.utils.hooks import RemovableHandle

from . import adoption, compiled, pickling
from .clock import StepClock
from .discovery import Discovery
from .optimizers import OptimizerWatch
from .probes import ProbeSet
from .probes.base import Context, ModelView
from .probes import hand_loss
from .probes.outputs import LossCall, capture_losses, uncaptured
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
        #: a loss with grad was computed in train() mode: from then on, a loss with grad in
        #: eval() mode is an evaluation (a loop that trains in eval() mode throughout stays training)
        self.trained_in_train_mode = False
        self.view = ModelView()
        self._module_handles: list[RemovableHandle] = []
        self._pickling = False  # pickling.enter() is in force for this watch
        self._probe_handles: list[Any] = []
        #: discovery, model pre-hook and loss calls made by traced code, run at the next eager hook
        self.deferred = compiled.Deferred()
        self.discovery = Discovery(self)
        self.optimizers = OptimizerWatch(self)
        #: ids of the roots and recurrent modules whose hooks ran (see ``adoption.unseen``)
        self.hooks_ran: set[int] = set()
        self._loss_ctx: Any = None
        self._compile_patch: compiled.CompilePatch | None = None
        #: ``run.log`` was used: the automatic loss capture is off, so nothing counts twice
        self.logged_explicitly = False
        #: training losses captured since the last backward: none means the back-propagated
        #: scalar is a hand-written loss
        self._losses_since_backward = 0
        #: the roots' latest output (the prediction a hand-written squared error reads)
        self._last_output: torch.Tensor | None = None
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
        """The probes' start, the first adoption (or discovery) and the global hooks."""
        pickling.enter()
        self._pickling = True
        self._probe_handles += [h for hs in self.probes.lifetime("start", self.ctx) for h in (hs or [])]
        if self.explicit_model is not None:
            if not isinstance(self.explicit_model, nn.Module):
                raise TypeError(f"watch() needs a torch.nn.Module, got {type(self.explicit_model).__name__}")
            self.adopt(self.explicit_model, name=compiled.type_name(self.explicit_model))
        else:
            self.discovery.arm()
        self.optimizers.attach()
        self._loss_ctx = capture_losses(self.deferred.wrap(self._on_loss, order=2), self._on_backward)
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
        self._remove_module_hooks()
        self.discovery.remove()
        self.optimizers.remove()
        for h in self._probe_handles:
            h.remove()
        self._probe_handles = []
        for patch in (self._loss_ctx, self._compile_patch):
            if patch is not None:
                patch.__exit__(None, None, None)
        self._loss_ctx = self._compile_patch = None
        if self._pickling:
            self._pickling = False
            pickling.leave()

    def _remove_module_hooks(self) -> None:
        for s in self.ctx.switches:
            s.remove()
        for h in self._module_handles + self.ctx.handles:
            h.remove()
        self._module_handles = []
        self._last_output = None
        self.ctx.switches.clear()
        self.ctx.handles.clear()

    def _on_compile(self) -> None:
        """``torch.compile`` was called inside the watch: Dynamo is loaded now, so the hooks
        placed before are swapped for eager ones before anything compiled can trace them."""
        compiled.make_eager(self.optimizers.handles)
        self.discovery.make_eager()

        def module_hook(hook: Callable[..., Any]) -> Callable[..., Any]:
            root = hook == self.before_forward  # see adopt
            return self.deferred.wrap(hook, order=1) if root else compiled.outside_graph(hook)

        switched = [h for s in self.ctx.switches for h in s.handles]
        compiled.make_eager(self._module_handles + switched + self.ctx.handles, module_hook)
        if self._loss_ctx is not None:
            self._loss_ctx.__exit__(None, None, None)
            self._loss_ctx = capture_losses(self.deferred.wrap(self._on_loss, order=2), self._on_backward)
            self._loss_ctx.__enter__()

    # ------------------------------------------------------------------ adoption
    def adopt(self, model: nn.Module, name: str) -> None:
        """Watch ``model`` too (it replaces earlier roots it contains), and hook everything anew."""
        for old_name, old in list(self.roots.items()):
            if any(m is old for m in model.modules()):
                del self.roots[old_name]
        base, i = name, 1
        while name in self.roots:
            i += 1
            name = f"{base}{i}"
        self.roots[name] = model
        self._remove_module_hooks()
        self.view, model_meta = adoption.survey(self.roots, compiled.inside_compiled(self.roots.values()))
        self.ctx.model = self.view
        cuda = {p.device.index or 0 for _, p in self.view.params if p.device.type == "cuda"}
        self.recorder.cuda_devices = cuda
        self.recorder.background = writer_in_background(bool(cuda), self._writer)
        self._hook_modules()
        self.ctx.handles += [h for hs in self.probes.lifetime("attach", self.ctx) for h in (hs or [])]
        self.optimizers.adopt(self.view.params)
        self.meta["model"] = model_meta
        self.note_compiled()
        self._on_model_change()

    def _hook_modules(self) -> None:
        outside = compiled.outside_graph
        for root in self.roots.values():
            # a root called only from traced code (compiled in place, or in a compiled function)
            # is seen when the traced code's calls are drained
            self._module_handles.append(root.register_forward_pre_hook(self.deferred.wrap(self.before_forward, order=1)))
            self._module_handles.append(root.register_forward_hook(compiled.outside_graph(self._keep_output)))
            for m in root.modules():
                if compiled.is_wrapper(m):
                    self._module_handles += self.discovery.hidden.hooks(m)
        for qual, m in self.view.recurrent:
            self._module_handles.append(m.register_forward_pre_hook(outside(functools.partial(self._before_rnn, qual)), with_kwargs=True))
            if self.probes.implemented("rnn_output"):
                self._module_handles.append(m.register_forward_hook(outside(functools.partial(self._after_rnn, qual)), with_kwargs=True))

    def note_compiled(self) -> None:
        """Which modules run compiled, and what the probes do not see there (meta)."""
        note = adoption.compiled_note(self.view, self.hooks_ran, self.clock.step)
        model = self.meta.get("model")
        if note is not None and isinstance(model, dict):
            model["compiled"] = note

    # ------------------------------------------------------------------ module hooks
    @guarded
    def before_forward(self, module: nn.Module, args: Any) -> "tuple[Any, ...] | None":
        self.maybe_close_step()
        self.hooks_ran.add(id(module))
        if id(module) not in self.view.inside and not compiled.is_wrapper(module) and compiled.in_region():
            # a root adopted unwrapped runs inside a wrapper of the user's: from now on its
            # modules keep the hooks they have (per-step ones come off once, now)
            for s in self.ctx.switches:
                s.set(False)
            self.view.inside.update(id(m) for m in module.modules())
            self.note_compiled()
            self._on_model_change()
        self.probes.call("model_call", module, args)
        return self.probes.model_args(module, args)

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

    # ------------------------------------------------------------------ losses and steps
    @guarded
    def _on_loss(self, call: LossCall) -> None:
        if call.loss.requires_grad:
            self._losses_since_backward += 1
        if not self.logged_explicitly:
            self.record_loss(call, grad=call.loss.requires_grad)

    @guarded
    def _on_backward(self, root: torch.Tensor) -> None:
        """A scalar back-propagated with no functional loss since the last backward is a
        hand-written loss: recorded from its graph (``hand_loss``)."""
        self.maybe_close_step()  # losses deferred by compiled code are counted first
        self.probes.call("backward", root)
        captured, self._losses_since_backward = self._losses_since_backward, 0
        if captured or self.logged_explicitly or root.numel() != 1 or not self.roots:
            return
        with uncaptured():
            call = hand_loss.read(root, self._last_output)
        self.record_loss(call, grad=True)

    def _keep_output(self, module: nn.Module, args: Any, output: Any) -> None:
        """The root's latest output: the prediction a hand-written squared error subtracts
        its targets from (a tensor, or the first tensor of a tuple)."""
        first = output[0] if isinstance(output, (tuple, list)) and output else output
        self._last_output = first if isinstance(first, torch.Tensor) else None

    def record_loss(self, call: LossCall, *, grad: bool) -> None:
        if grad and self.roots:
            training = any(m.training for m in self.roots.values())
            if training:
                self.trained_in_train_mode = True
            elif self.trained_in_train_mode:
                # an evaluation pass without no_grad: the loop trains in train() mode and
                # this loss comes after model.eval(); it is not the next step's loss
                grad = False
        self.maybe_close_step()
        if grad and self.clock.stepping and self.clock.step_losses:
            return  # a line search's further evaluations (LBFGS): the step's loss is the first
        self.probes.call("loss", call, grad)
        if grad:
            self.clock.step_losses += 1
            self.clock.training_loss()

    def maybe_close_step(self) -> None:
        if self.deferred:
            self.deferred.drain()
        if self.clock.ready():
            self._last_output = None  # the step is over: its output is not held into the next
            self.clock.close()
