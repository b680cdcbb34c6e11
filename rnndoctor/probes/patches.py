"""Functions of torch replaced while a watch listens, and restored exactly after.

Some things a user's loop does leave no module hook to catch: a functional loss
(``F.cross_entropy``), a ``Tensor.backward()``, an ``F.dropout`` in a forward. For those the
function itself is wrapped. Watches nest, and the wrapper must be installed once and the
original put back when the last watch closes, whatever order they close in (a wrapper left
behind would run our code in the user's process after we are gone). :class:`SharedPatch`
does that bookkeeping for every such wrapper."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Generic, TypeVar

L = TypeVar("L")

#: (object, attribute, makes the wrapper from the original)
Target = tuple[Any, str, Callable[[Callable[..., Any]], Callable[..., Any]]]


@dataclass
class SharedPatch(Generic[L]):
    """``targets`` replaced by their wrappers while ``listeners`` is not empty; the wrappers
    read ``listeners`` (a copy, so a listener may remove itself while called)."""

    targets: list[Target]
    listeners: list[L] = field(default_factory=list)
    _originals: list[tuple[Any, str, Any]] = field(default_factory=list)

    def add(self, listener: L) -> "Removal[L]":
        if not self.listeners:
            for owner, name, make in self.targets:
                original = getattr(owner, name)
                self._originals.append((owner, name, original))
                wrapper = make(original)
                wrapper.__rnndoctor_original__ = original  # what a test or debugger can restore
                setattr(owner, name, wrapper)
        self.listeners.append(listener)
        return Removal(self, listener)

    def remove(self, listener: L) -> None:
        if listener in self.listeners:
            self.listeners.remove(listener)
        if not self.listeners:
            while self._originals:
                owner, name, original = self._originals.pop()
                setattr(owner, name, original)

    def active(self) -> list[L]:
        return list(self.listeners)


class Removal(Generic[L]):
    """The handle ``SharedPatch.add`` returns: ``remove()`` once, idempotent."""

    def __init__(self, patch: SharedPatch[L], listener: L) -> None:
        self._patch: SharedPatch[L] | None = patch
        self._listener = listener

    def remove(self) -> None:
        if self._patch is not None:
            self._patch.remove(self._listener)
            self._patch = None
