"""Which ops a hand-written cell's observer may log: the user's, never ours.

On a gates step :class:`hand_cells.CellObserver` (a ``TorchFunctionMode``) sees every torch
op of the forward pass, including the ops our own forward hooks run inside the cell's call
(the activation statistics: ``x * x``, ``sums + ...``). Those must not enter the cell's op
log (they are not the cell's dataflow, and logging them costs the step). Probe hooks run
under :func:`suspended`, which the observer reads as "not the user's"."""

from __future__ import annotations

import contextlib
import functools
from typing import Any, Callable, Iterator, Protocol

import torch

try:  # private, present since torch 2.0; without it the paused flag does the job
    from torch.overrides import _pop_mode_temporarily
except ImportError:  # pragma: no cover
    _pop_mode_temporarily = None


class _Pausable(Protocol):
    paused: int


#: the observer of the forward pass under way, if any
current: _Pausable | None = None


@contextlib.contextmanager
def suspended() -> Iterator[None]:
    """The observer off: taken off the torch-function stack while it is on top (our ops then
    skip the Python dispatch altogether), else told to keep nothing."""
    obs = current
    if obs is None:
        yield
        return
    if _pop_mode_temporarily is not None and on_top(obs):
        with _pop_mode_temporarily():
            yield
        return
    obs.paused += 1
    try:
        yield
    finally:
        obs.paused -= 1


def on_top(mode: object) -> bool:
    """``mode`` is the innermost torch-function mode (the one a ``__exit__`` would pop)."""
    try:
        n = torch._C._len_torch_function_stack()
        return n > 0 and torch._C._get_function_stack_at(n - 1) is mode
    except (AttributeError, RuntimeError):  # a torch without these: the paused flag does it
        return False


def unobserved(hook: Callable[..., Any]) -> Callable[..., Any]:
    """``hook`` with the observer, when one is active, not logging its ops."""

    @functools.wraps(hook)
    def run(*args: Any, **kwargs: Any) -> Any:
        if current is None:
            return hook(*args, **kwargs)
        with suspended():
            return hook(*args, **kwargs)

    return run
