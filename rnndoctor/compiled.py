"""torch.compile: our hooks stay out of the user's compiled graphs; modules keep the user's names.

While a compiled region runs, Dynamo compiles every Python frame it meets, our hook bodies
included, and compiles them again whenever what they read changes (the reliability issue:
``_all_finite`` recompiled 8 times, 60 steps in 16-49 s instead of 1.1-1.7 s). So no callable
we hand to torch is ever compiled:

- module hooks (:func:`outside_graph`) are left out of what Dynamo traces: the user's graph is
  the one they get without us. Where a module's call is traced its probes do not see it;
  where it runs eagerly (a wrapper, a fused RNN that Dynamo hands back to eager, any module
  outside the compiled code) they do, with Dynamo kept off our frames.
- the discovery, model pre-hook and loss callbacks (:class:`Deferred`) must see calls from
  traced code too: there their arguments are stored (a side effect Dynamo replays after the
  graph: no graph break, ``fullgraph=True`` still compiles) and the watcher runs them at its
  next eager hook. Optimizer hooks run eagerly (:func:`eager`; a graph break in a compiled
  ``optimizer.step``).

Hooks being there at all changes what Dynamo decides (it guards on the hook dicts of modules
it traces, ignores hooks added to an empty dict, compiles other frames when hooks exist), so
modules whose calls run inside a compiled region keep the hooks they got at adoption: the
per-step hooks go on the region's wrapper (``OptimizedModule``), whose own call runs outside.

Importing Dynamo costs about a second, so nothing here imports it: callables are wrapped once
the user's program has loaded it, and :class:`CompilePatch` tells the watcher when
``torch.compile`` is called inside a watch, before anything it returns can run.
"""

from __future__ import annotations

import functools
import sys
import warnings
from typing import Any, Callable, Iterable, Iterator, TypeVar

import torch
from torch import nn

F = TypeVar("F", bound=Callable[..., Any])

#: the name ``torch.compile`` gives the wrapped module inside its ``OptimizedModule``
WRAPPED = "_orig_mod"

#: whether the hook running now was called inside a compiled region (see :func:`in_region`)
_region = False


def dynamo_loaded() -> bool:
    """Whether anything could be compiled yet (``torch.compile`` imports ``torch._dynamo``)."""
    return "torch._dynamo" in sys.modules


def _dynamo_attr(module: str, name: str) -> Any:
    return getattr(sys.modules.get(module), name, None)


def _disable() -> Callable[[Any], Any] | None:
    return getattr(getattr(torch, "compiler", None), "disable", None) or _dynamo_attr("torch._dynamo", "disable")


def _is_tracing() -> Callable[[], bool] | None:
    """True only while Dynamo traces the caller (constant-folded there), False when run."""
    found = getattr(getattr(torch, "compiler", None), "is_dynamo_compiling", None)
    return found or _dynamo_attr("torch._dynamo.external_utils", "is_compiling")  # torch < 2.3


def _compile_running() -> Callable[[], bool]:
    """True while a compilation runs (torch >= 2.3 with ``is_dynamo_compiling``): a call made
    then, when run for real, comes from the compiler itself (on fake tensors), not the user."""
    compiler = getattr(torch, "compiler", None)
    if getattr(compiler, "is_dynamo_compiling", None) is None:
        return lambda: False
    return getattr(compiler, "is_compiling", lambda: False)


def _eval_frame_callback() -> Callable[[], Any] | None:
    return getattr(getattr(getattr(torch._C, "_dynamo", None), "eval_frame", None), "get_eval_frame_callback", None)


def in_region() -> bool:
    """Whether the hook of ours that is running was called inside a compiled region: from
    traced code (deferred, see :class:`Deferred`) or eagerly while Dynamo was on (code that
    Dynamo handed back to eager, the user's module inside a wrapper). Set by our hooks, read by
    their bodies; False on torch without the API."""
    return _region


def eager(fn: F) -> F:
    """``fn`` as Dynamo must see it: run eagerly, never compiled (a graph break where a traced
    region calls it). Until Dynamo is loaded nothing can trace ``fn``: it comes back as is."""
    if not dynamo_loaded() or getattr(fn, "_rnndoctor_eager", False):
        return fn
    disable = _disable()
    if disable is None:
        return fn
    wrapped = disable(fn)
    try:
        wrapped._rnndoctor_eager = True
    except (AttributeError, TypeError):
        pass
    return wrapped


def _hook(fn: F, *, unless: list[bool] | None = None, slot: list[Any] | None = None) -> F:
    """``fn`` behind a frame Dynamo never compiles (``skip_code``) but does trace. Traced, it
    is left out, or (``slot``) its arguments go to an empty ``slot[0]`` unless ``unless[0]``.
    Called on its own it notes whether a compiled region is running (:func:`in_region`) and
    runs ``fn`` eagerly."""
    if not dynamo_loaded() or getattr(fn, "_rnndoctor_eager", False):
        return fn
    body, tracing, compile_running = eager(fn), _is_tracing(), _compile_running()
    skip, callback = _dynamo_attr("torch._dynamo.eval_frame", "skip_code"), _eval_frame_callback()
    if tracing is None or skip is None:
        return body  # older torch: a graph break where traced, still never compiled

    def hook(*args: Any, **kwargs: Any) -> Any:
        global _region
        if tracing():  # constant True while Dynamo traces this frame
            if slot is not None and slot[0] is None and not (unless is not None and unless[0]):
                slot[0] = (args, kwargs)
            return None
        if compile_running():  # the compiler's own call (a decomposition calling a loss)
            return None
        _region = callback is not None and callback() is not None
        return body(*args, **kwargs)

    skip(hook.__code__)
    hook._rnndoctor_eager = True  # type: ignore[attr-defined]
    return hook  # type: ignore[return-value]


def outside_graph(fn: F) -> F:
    """A module hook left out of every traced graph, run eagerly wherever it runs."""
    return _hook(fn)


class Deferred:
    """Calls that traced code makes to our callbacks, run at the watcher's next eager hook.

    Each callback has one slot that its first call since the last :meth:`drain` fills (later
    calls until then are not kept): a slot, not a list, because Dynamo guards on the length of
    a list it appends to, and a length that differs between calls would recompile the user's
    graph. Dynamo guards on whether the slot is empty: at most one more variant."""

    def __init__(self) -> None:
        self._slots: list[tuple[int, list[Any], Callable[..., Any]]] = []

    def wrap(self, fn: F, order: int, unless: list[bool] | None = None) -> F:
        """``fn`` as a callback traced code defers; drained by ``order`` (discovery, then the
        model's pre-hook, then its loss). ``unless[0]``, read while tracing (Dynamo guards on
        it), stops the deferral once true: what traced code does stays in compiled code for
        good (Dynamo does not guard on hook dicts)."""
        slot: list[Any] = [None]
        hook = _hook(fn, unless=unless, slot=slot)
        if hook is not fn:
            self._slots.append((order, slot, eager(fn)))
            self._slots.sort(key=lambda s: s[0])
        return hook

    def __bool__(self) -> bool:
        return any(slot[0] is not None for _, slot, _ in self._slots)

    def drain(self) -> None:
        """Run the deferred calls, each as called inside a compiled region (:func:`in_region`)."""
        global _region
        for _, slot, fn in self._slots:
            if slot[0] is not None:
                (args, kwargs), slot[0] = slot[0], None
                _region = True
                fn(*args, **kwargs)


def make_eager(handles: Iterable[Any], wrap: Callable[[Any], Any] = eager) -> None:
    """Swap the callables behind registered hook handles for their ``wrap`` versions, in place
    (same id, same order): for hooks placed before the program loaded Dynamo."""
    for handle in handles:
        ref = getattr(handle, "hooks_dict_ref", None)
        hooks = ref() if ref is not None else None
        if hooks is not None and handle.id in hooks:
            hooks[handle.id] = wrap(hooks[handle.id])


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


#: meta["model"]["compiled"]["note"]: what the probes see of compiled modules
NOTE = (
    "modules: run inside a torch.compile region; they keep the hooks they got at adoption and "
    "get no per-step ones, so NaN localisation and activation statistics see a compiled module "
    "only where its wrapper (torch.compile(module)) is called, not the modules inside it. "
    "unseen: Dynamo traced their calls, and our hooks are left out of traced code: their input, "
    "gate and gradient-through-time probes saw nothing (fused RNN/LSTM/GRU modules run eagerly "
    "inside compiled code and are seen; cells and plain layers are traced)"
)


def as_wrapped(hook: Callable[[nn.Module, Any, Any], Any]) -> Callable[[nn.Module, Any, Any], Any]:
    """A forward hook placed on a wrapper that the probe sees as placed on the wrapped module."""

    def on_wrapper(wrapper: nn.Module, args: Any, output: Any) -> Any:
        return hook(unwrap(wrapper), args, output)

    return on_wrapper


def inside_compiled(roots: Iterable[nn.Module]) -> set[int]:
    """Ids of the modules whose calls run inside a compiled region: everything a wrapper wraps,
    and a module compiled in place with everything under it. Wrappers themselves run outside."""
    inside: set[int] = set()
    for root in roots:
        for m in root.modules():
            if is_wrapper(m):
                inside.update(id(x) for x in getattr(m, WRAPPED).modules())
            elif compiled_in_place(m):
                inside.update(id(x) for x in m.modules())
    return inside


class Hidden:
    """The global hook behind ``handle_of()`` (discovery), taken out of the global hook dict
    while a wrapper's compiled region runs (the outermost, when wrappers nest) and put back
    after. Dynamo traces the region without it, and it guards on the dict's length:
    discovery's removal (once the trained modules are adopted) then costs no recompile."""

    def __init__(self, handle_of: Callable[[], Any]) -> None:
        self.handle_of = handle_of
        self._depth = 0
        self._held: list[tuple[dict[int, Any], int, Any]] = []

    def hooks(self, wrapper: nn.Module) -> list[Any]:
        """Hide for each call of ``wrapper``, restore after it (also after a failed call)."""
        pre = wrapper.register_forward_pre_hook(outside_graph(self.hide))
        try:
            post = wrapper.register_forward_hook(outside_graph(self.restore), always_call=True)
        except TypeError:  # torch < 2.1
            post = wrapper.register_forward_hook(outside_graph(self.restore))
        return [pre, post]

    def hide(self, *_: Any) -> None:
        self._depth += 1
        handle = self.handle_of()
        hooks = handle.hooks_dict_ref() if handle is not None else None
        if self._depth == 1 and hooks is not None and handle.id in hooks:
            self._held.append((hooks, handle.id, hooks.pop(handle.id)))

    def restore(self, *_: Any) -> None:
        self._depth = max(self._depth - 1, 0)
        while self._depth == 0 and self._held:
            hooks, key, hook = self._held.pop()
            hooks[key] = hook


#: torch warns when a compiled module is called while a global module hook exists; ours
#: (discovery) adopts the wrapper at its first call and ignores the extra call it warns about
_GLOBAL_HOOK_WARNING = r"Using `torch.compile\(module\)` when there are global hooks"


class QuietHandle:
    """The handle of our global module pre-hook (discovery): while the hook is registered,
    torch's warning about global hooks on compiled modules (a warning about our hook, not
    the user's) stays quiet."""

    def __init__(self, handle: Any) -> None:
        self.handle = handle
        self.hooks_dict_ref = handle.hooks_dict_ref
        self.id = handle.id
        warnings.filterwarnings("ignore", message=_GLOBAL_HOOK_WARNING, category=UserWarning)
        self._filter: Any = warnings.filters[0]

    def remove(self) -> None:
        self.handle.remove()
        if self._filter is None:
            return
        try:
            warnings.filters.remove(self._filter)
        except ValueError:
            pass
        self._filter = None
        getattr(warnings, "_filters_mutated", lambda: None)()


class CompilePatch:
    """While active, the first ``torch.compile`` call first lets ``on_compile`` wrap our hooks
    (Dynamo is loaded by then), so that nothing compiled ever traces an unwrapped hook of ours.
    Not needed (nothing patched) when Dynamo was loaded before the watch started."""

    def __init__(self, on_compile: Callable[[], None]) -> None:
        self.on_compile: Callable[[], None] | None = on_compile
        self._original: Callable[..., Any] | None = None
        self._patched: Callable[..., Any] | None = None

    def __enter__(self) -> "CompilePatch":
        original = getattr(torch, "compile", None)
        if original is None or dynamo_loaded():
            return self
        patch = self

        @functools.wraps(original)
        def compile(*args: Any, **kwargs: Any) -> Any:
            import torch._dynamo  # noqa: F401 - what torch.compile imports first anyway

            if patch.on_compile is not None:
                on_compile, patch.on_compile = patch.on_compile, None
                try:
                    on_compile()
                except Exception:  # never break the user's compile call
                    pass
            return original(*args, **kwargs)

        self._original, self._patched = original, compile
        torch.compile = compile  # type: ignore[assignment]
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._original is not None and torch.compile is self._patched:
            torch.compile = self._original  # type: ignore[assignment]
        self._original = self._patched = None
