"""torch.compile: modules keep the user's names.

``torch.compile(module)`` returns a wrapper (``OptimizedModule``) that holds the user's module
as ``_orig_mod``: ``named_modules()`` and ``named_parameters()`` of anything containing one
carry that segment, and its type name is the wrapper's. The user's names drop it.
"""

from __future__ import annotations

import sys
from typing import Any, Iterator

from torch import nn

#: the name ``torch.compile`` gives the wrapped module inside its ``OptimizedModule``
WRAPPED = "_orig_mod"


def _dynamo_attr(module: str, name: str) -> Any:
    return getattr(sys.modules.get(module), name, None)


def is_wrapper(m: nn.Module) -> bool:
    """An ``OptimizedModule``: ``torch.compile(module)``'s wrapper around the user's module."""
    cls = _dynamo_attr("torch._dynamo.eval_frame", "OptimizedModule")
    return cls is not None and isinstance(m, cls)


def unwrap(m: nn.Module) -> nn.Module:
    """The user's module inside any ``torch.compile`` wrappers."""
    while is_wrapper(m):
        m = getattr(m, WRAPPED)
    return m


def type_name(m: nn.Module) -> str:
    """The user's class name, also for a compiled module."""
    return type(unwrap(m)).__name__


def compiled_in_place(m: nn.Module) -> bool:
    """``module.compile()`` (torch >= 2.2): the module's whole call, hooks included, is compiled."""
    return getattr(m, "_compiled_call_impl", None) is not None


def user_named_modules(root: nn.Module) -> Iterator[tuple[str, nn.Module]]:
    """``root.named_modules()`` with the names the user gave: a wrapper's ``_orig_mod`` segment
    is dropped, so a wrapper and the module it wraps share one name (the wrapper first)."""
    named = list(root.named_modules())
    wrappers = {name for name, m in named if is_wrapper(m)}
    for name, m in named:
        yield strip(name, wrappers), m


def user_named_parameters(root: nn.Module) -> Iterator[tuple[str, nn.Parameter]]:
    """``root.named_parameters()`` under the user's names (see :func:`user_named_modules`)."""
    wrappers = {name for name, m in root.named_modules() if is_wrapper(m)}
    for name, p in root.named_parameters():
        yield strip(name, wrappers), p


def strip(name: str, wrappers: set[str]) -> str:
    """``name`` without the ``_orig_mod`` segments that follow a wrapper's own path."""
    if not wrappers:
        return name
    parts = name.split(".") if name else []
    kept = [p for i, p in enumerate(parts) if not (p == WRAPPED and ".".join(parts[:i]) in wrappers)]
    return ".".join(kept)
