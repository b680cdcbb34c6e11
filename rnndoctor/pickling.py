"""Our hooks never travel with the user's modules: pickling and deep-copying leave them out.

A module hook lives in the module's own hook dicts (``_forward_hooks``,
``_forward_pre_hooks``, and the ``*_with_kwargs``/``*_always_called`` flags keyed by the same
ids), so ``torch.save(model)``, ``pickle.dumps(model)`` and ``copy.deepcopy(model)`` would
carry our closures: pickling fails ("Can't pickle local object"), and a deep copy (an EMA
model, "best model so far") would keep recording into our run. While a watch is open,
``nn.Module.__reduce_ex__`` gives the state torch would give, less every hook entry whose
callable is ours (defined in an ``rnndoctor`` module, also behind ``functools.partial``
or a wrapper that keeps ``__module__``). The pickle then holds nothing of ours and loads
without rnndoctor installed. Outside a watch ``nn.Module`` is untouched.

Optimizer and discovery hooks are global (``torch.optim.optimizer.register_optimizer_step_*``,
``register_module_forward_pre_hook``) and tensor hooks are never serialised by torch, so
modules are the only objects that need this.
"""

from __future__ import annotations

import functools
import threading
from typing import Any

from torch import nn

_lock = threading.Lock()
_depth = 0
_previous: Any = None
_MISSING = object()


def is_ours(hook: Any) -> bool:
    """A callable defined in rnndoctor (unwrapping partials and ``__wrapped__`` chains)."""
    for _ in range(8):
        module = getattr(hook, "__module__", None) or ""
        if module == "rnndoctor" or module.startswith("rnndoctor."):
            return True
        if isinstance(hook, functools.partial):
            hook = hook.func
        elif hasattr(hook, "__wrapped__"):
            hook = hook.__wrapped__
        elif hasattr(hook, "__func__"):
            hook = hook.__func__
        else:
            return False
    return False


def without_our_hooks(state: Any) -> Any:
    """``state`` (a module's pickled state) with our hook entries left out of every hook dict;
    the same object when none of ours is there (nothing is copied then)."""
    if isinstance(state, tuple) and len(state) == 2 and isinstance(state[0], dict):  # (dict, slots)
        cleaned = without_our_hooks(state[0])
        return state if cleaned is state[0] else (cleaned, state[1])
    if not isinstance(state, dict):
        return state
    hook_dicts = {k: v for k, v in state.items() if isinstance(v, dict) and v and all(isinstance(i, int) for i in v)}
    ours = {i for d in hook_dicts.values() for i, hook in d.items() if callable(hook) and is_ours(hook)}
    if not ours:
        return state
    state = dict(state)
    for key, d in hook_dicts.items():
        if not ours.isdisjoint(d):
            kept = type(d)() if type(d) is not dict else {}
            kept.update((i, v) for i, v in d.items() if i not in ours)
            state[key] = kept
    return state


def _reduce_ex(self: nn.Module, protocol: int) -> Any:
    reduced = object.__reduce_ex__(self, protocol)
    if isinstance(reduced, tuple) and len(reduced) >= 3:
        state = without_our_hooks(reduced[2])
        if state is not reduced[2]:
            reduced = (*reduced[:2], state, *reduced[3:])
    return reduced


def enter() -> None:
    """A watch opens: from now on a pickled or copied module leaves our hooks out."""
    global _depth, _previous
    with _lock:
        if _depth == 0:
            _previous = nn.Module.__dict__.get("__reduce_ex__", _MISSING)
            nn.Module.__reduce_ex__ = _reduce_ex  # type: ignore[method-assign]
        _depth += 1


def leave() -> None:
    """A watch closed (its hooks are off): the last one puts ``nn.Module`` back as it was."""
    global _depth, _previous
    with _lock:
        if _depth == 0:
            return
        _depth -= 1
        if _depth == 0:
            if _previous is _MISSING:
                del nn.Module.__reduce_ex__
            else:
                nn.Module.__reduce_ex__ = _previous  # type: ignore[method-assign]
            _previous = None
