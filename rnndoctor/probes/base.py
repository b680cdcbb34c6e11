"""The probe contract: what a probe implements, when each hook is called, what it may use.

A **probe** records one kind of evidence about a training run (losses, gradient norms, gate
saturation, ...) as rows of the signals declared in ``rnndoctor/signals.py``. The watch
(``rnndoctor/watch.py``) is only the conductor: it adopts the model, keeps the step clock,
owns every hook handle, and calls the probes' hooks below. A probe never registers a global
hook, never writes a file and never keeps a handle the watch does not know of: it is handed
what it may use in a :class:`Context`.

Adding a probe is one new file in ``rnndoctor/probes/``: a subclass of :class:`Probe` that
implements the hooks it needs, its line in ``rnndoctor.probes.DEFAULT_PROBES`` (the order in
which probes are called), and its signals in ``rnndoctor/signals.py`` (the recorder refuses
rows of undeclared signals or columns). ``tests/test_probe_protocol.py`` shows a ten-line one.

Hooks (all optional; a hook a probe does not override is never called)
----------------------------------------------------------------------
Lifetime:

``start(ctx) -> list[handle]``
    once, when the watch opens (before any model is adopted): remember ``ctx``, register
    ``before_flush`` takers. A probe that must patch a library function (the loader probe
    wraps ``DataLoader.__iter__``) does it here and returns a handle with ``remove()``
    undoing it: the watch removes it when it closes, also when the loop raised.
``attach(ctx) -> list[RemovableHandle]``
    on every adoption (``ctx.model`` has changed: a new root was found). Place per-module
    hooks here with ``ctx.forward_hook`` / ``ctx.switched_hooks`` and return any other
    handles: the watch removes all of them before the next ``attach`` and when it closes.
``stop()``
    once, when the watch closes, after the last step was closed: emit what is left.

Training events (the *hot path*: keep them free of host syncs; tensors stay on the device
and go into rows as they are, the recorder transfers them in one batch at the flush):

``model_call(module, args)``
    a watched root model is called (``args`` as given; the previous step is closed first).
``model_args(module, args) -> args | None``
    the same call, after ``model_call``: may return replacement arguments (the same values,
    e.g. made to require grad).
``rnn_call(name, module, args, kwargs) -> (args, kwargs) | None``
    a recurrent module (``nn.LSTM/GRU/RNN`` and ``*Cell``) is about to run; may return
    replacement arguments (the same values, e.g. made to require grad).
``rnn_output(name, module, args, kwargs, output)``
    a recurrent module returned ``output``.
``loss(call: LossCall, grad: bool)``
    a loss was computed (``torch.nn.functional`` or an ``nn.*Loss``; ``run.log``);
    ``grad``: a training loss (its backward follows).
``backward(root)``
    ``root`` is about to be back-propagated (``loss.backward()``, ``torch.autograd.backward``);
    the parameters' ``.grad`` still hold what came before it.
``gradient(index, param)``
    a parameter's gradient was accumulated, in loops that update parameters without an
    optimizer (only until the first optimizer step is seen).
``before_update(optimizer)``
    the first watched optimizer of the step is about to step: gradients are final,
    weights not yet moved.
``end_step(step, row)``
    the step ``step`` has ended: add this probe's rows, and its columns of the ``steps``
    row ``row`` (a dict; tensor values allowed).

Scheduling: a probe with ``schedule = "<name>"`` (a key of ``rnndoctor.schedule.SCHEDULES``)
gets its training events only on steps where that schedule is due (``end_step``, lifetime
hooks always); ``schedule = None`` gets them on every step and may ask ``ctx.due(name)``.
Nothing else computes due-ness.

Errors: an exception raised by a probe hook is kept in ``meta.json``'s ``internal_errors``
and that call is skipped (``strict=True``, as in the tests, re-raises): a probe can never
break the user's program.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, ClassVar

import torch
from torch import nn
from torch.utils.hooks import RemovableHandle

from .. import compiled
from . import observing

if TYPE_CHECKING:
    from ..recorder import Recorder
    from .outputs import LossCall

Row = dict[str, Any]
#: a forward hook factory: module name -> ``hook(module, args, output)``
HookFor = Callable[[str], Callable[[nn.Module, Any, Any], Any]]


@dataclass
class ModelView:
    """The adopted model as probes see it; rebuilt on every adoption."""

    #: the watched root modules by name
    roots: dict[str, nn.Module] = field(default_factory=dict)
    #: ``id(module) -> qualified name`` of every module under the roots (owned by the watch:
    #: nothing is written onto the user's modules)
    names: dict[int, str] = field(default_factory=dict)
    #: trainable parameters with their qualified names, each once
    params: list[tuple[str, nn.Parameter]] = field(default_factory=list)
    #: recurrent modules (``nn.RNNBase`` and ``nn.RNNCellBase``) by name
    recurrent: list[tuple[str, nn.Module]] = field(default_factory=list)
    #: dropout modules and multi-layer RNNs (which have inter-layer dropout)
    dropouts: list[tuple[str, nn.Module]] = field(default_factory=list)
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    #: ``batch_first`` of the first fused RNN (True without one)
    batch_first: bool = True
    #: ids of modules that run inside a compiled region: their hooks must not change
    inside: set[int] = field(default_factory=set)

    def name(self, module: nn.Module) -> str:
        return self.names.get(id(module), "model")


class Switch:
    """Forward hooks on every module of the model (and the roots when ``roots``), present only
    while switched on: a hook, even an idle one, costs every module call a trip through
    Python, so per-step probes switch theirs on only on the steps that use them."""

    def __init__(self, model: ModelView, hook_for: HookFor, *, roots: bool) -> None:
        self.model, self.hook_for, self.roots = model, hook_for, roots
        self.handles: list[RemovableHandle] = []

    @property
    def on(self) -> bool:
        return bool(self.handles)

    def set(self, on: bool) -> None:
        if on and not self.handles:
            for root in self.model.roots.values():
                for m in root.modules():
                    if (self.roots or m is not root) and id(m) not in self.model.inside:
                        hook = observing.unobserved(self.hook_for(self.model.names[id(m)]))
                        hook = compiled.as_wrapped(hook) if compiled.is_wrapper(m) else hook
                        self.handles.append(m.register_forward_hook(compiled.outside_graph(hook)))
        elif not on and self.handles:
            self.remove()

    def remove(self) -> None:
        for h in self.handles:
            h.remove()
        self.handles.clear()


class Clock:
    """What a probe may know of time: the step being recorded and which schedules are due."""

    step: int = 0
    nan_seen: bool = False

    def due(self, schedule: str) -> bool:  # pragma: no cover - implemented by the watch's clock
        raise NotImplementedError


@dataclass
class Context:
    """Everything a probe may use, and nothing else."""

    model: ModelView
    recorder: "Recorder"
    clock: Clock
    #: the most steps between two flushes (probes that hold tensors until a flush size them by it)
    flush_every: int
    #: the most sequences of a batch the gate replay recomputes (None: all of them)
    gate_batch: int | None = None
    #: switched hooks the watch owns (removed on re-adoption and on close)
    switches: list[Switch] = field(default_factory=list)
    #: other handles the watch owns
    handles: list[RemovableHandle] = field(default_factory=list)

    def due(self, schedule: str) -> bool:
        return self.clock.due(schedule)

    @property
    def step(self) -> int:
        return self.clock.step

    def switched_hooks(self, hook_for: HookFor, *, roots: bool = False) -> Switch:
        """Forward hooks on every module, on while ``switch.set(True)``; owned by the watch."""
        switch = Switch(self.model, hook_for, roots=roots)
        self.switches.append(switch)
        return switch

    def forward_hook(self, module: nn.Module, hook: Callable[..., Any], **kwargs: Any) -> RemovableHandle:
        """``module.register_forward_hook(hook)``, never traced by Dynamo; owned by the watch."""
        handle = module.register_forward_hook(compiled.outside_graph(observing.unobserved(hook)), **kwargs)
        self.handles.append(handle)
        return handle


class Probe:
    """Base class of every probe: each hook below is a no-op unless overridden (see the module
    docstring for when each is called)."""

    #: the name ``watch(disable=...)`` and ``--no-probe`` use
    name: ClassVar[str] = ""
    #: the schedule (a key of ``schedule.SCHEDULES``) gating the training events; None: every step
    schedule: ClassVar[str | None] = None
    #: the signals this probe writes (declared in ``signals.py``)
    signals: ClassVar[tuple[str, ...]] = ()
    #: schedules a probe with ``schedule = None`` reads itself through ``ctx.due`` (listed by
    #: ``rnndoctor probes``)
    follows: ClassVar[tuple[str, ...]] = ()

    def start(self, ctx: Context) -> list[Any]:
        """Once, when the watch opens; returns handles (``remove()``) for the watch to remove."""
        return []

    def attach(self, ctx: Context) -> list[RemovableHandle]:
        """On every adoption; returns handles for the watch to remove."""
        return []

    def model_call(self, module: nn.Module, args: Any) -> None:
        """A watched root model is called."""

    def model_args(self, module: nn.Module, args: tuple[Any, ...]) -> "tuple[Any, ...] | None":
        """A watched root model is about to run (after ``model_call``); may return replacement
        ``args``."""
        return None

    def rnn_call(self, name: str, module: nn.Module, args: Any, kwargs: Any) -> "tuple[Any, Any] | None":
        """A recurrent module is about to run; may return replacement ``(args, kwargs)``."""
        return None

    def rnn_output(self, name: str, module: nn.Module, args: Any, kwargs: Any, output: Any) -> None:
        """A recurrent module returned ``output``."""

    def loss(self, call: "LossCall", grad: bool) -> None:
        """A loss was computed."""

    def backward(self, root: torch.Tensor) -> None:
        """``root`` is about to be back-propagated."""

    def gradient(self, index: int, param: torch.Tensor) -> None:
        """A gradient was accumulated (loops without an optimizer)."""

    def before_update(self, optimizer: torch.optim.Optimizer) -> None:
        """The step's first watched optimizer is about to step."""

    def end_step(self, step: int, row: Row) -> None:
        """Step ``step`` ended: record its rows and add columns to its ``steps`` row."""

    def stop(self) -> None:
        """The watch is closing."""


#: the hooks the watch dispatches (``start``/``attach``/``stop`` are called directly)
EVENTS = ("model_call", "model_args", "rnn_call", "rnn_output", "loss", "backward", "gradient", "before_update", "end_step")
#: the events a probe's schedule gates (the others run on every step)
SCHEDULED_EVENTS = ("model_call", "model_args", "rnn_call", "rnn_output", "loss", "backward", "gradient", "before_update")


def implements(probe: Probe, event: str) -> bool:
    """Whether ``probe`` overrides ``event`` (the watch calls only hooks a probe implements)."""
    return getattr(type(probe), event) is not getattr(Probe, event)
