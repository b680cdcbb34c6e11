"""Diagnose mode's adoption: an unmodified script never hands us its model, so a global
forward pre-hook adopts the outermost modules that own parameters as they are first called.
Every module call in the process pays for that hook, so it goes as soon as an optimizer step
shows the trained modules are all adopted, and comes back for an optimizer of modules not
seen yet (a second model)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable

from torch import nn

from . import compiled

if TYPE_CHECKING:
    from .conductor import Conductor


class Discovery:
    """The global pre-hook and its lifetime."""

    def __init__(self, conductor: "Conductor") -> None:
        self.conductor = conductor
        self.handle: Any = None
        #: [whether discovery adopted a model]: compiled code then leaves discovery out
        self.adopted = [False]
        #: the hook, out of the global hook dict while an adopted wrapper's compiled call runs
        self.hidden = compiled.Hidden(lambda: self.handle)

    @property
    def armed(self) -> bool:
        return self.handle is not None

    def arm(self) -> None:
        hook = nn.modules.module.register_module_forward_pre_hook(self._hook())
        self.handle = compiled.QuietHandle(hook)

    def remove(self) -> None:
        if self.handle is not None:
            self.handle.remove()
            self.handle = None

    def make_eager(self) -> None:
        """``torch.compile`` was called: swap the hook for one Dynamo never traces."""
        compiled.make_eager([self.handle] if self.handle is not None else [], lambda _: self._hook())

    def _hook(self) -> Callable[..., Any]:
        """Traced code defers discovery until a model is adopted (the usual
        ``torch.compile(model)`` is adopted at its wrapper's call, before any tracing)."""
        return self.conductor.deferred.wrap(self._discover, order=0, unless=self.adopted)

    def _discover(self, module: nn.Module, args: Any) -> None:
        try:
            c = self.conductor
            if id(module) in c.view.names or isinstance(module, nn.modules.loss._Loss):
                return
            if next(module.parameters(), None) is None:
                return
            c.adopt(module, name=compiled.type_name(module))
            self.adopted[0] = True
            if compiled.is_wrapper(module) and not compiled.in_region():
                self.hidden.hide()  # this call's own pre-hooks were chosen before its adoption
            c.before_forward(module, args)
        except Exception as exc:
            self.conductor.internal_error("_discover", exc)
