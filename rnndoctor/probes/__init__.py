"""The probes rnndoctor runs, in the order they are called, and the dispatcher that calls them.

The contract a probe implements is documented in ``base.py``.
"""

from __future__ import annotations

from typing import Any, Callable, Iterable, Sequence

from .activations import ActivationsProbe
from .carried_state import CarriedStateProbe
from .base import EVENTS, SCHEDULED_EVENTS, Clock, Context, Probe, implements
from .eval_pass import EvalPassProbe
from .gate_replay import GatesProbe
from .inputs import InputsProbe
from .loader import LoaderProbe
from .loss import LossProbe
from .nonfinite import LocalizeProbe
from .params import ParamsProbe
from .stale_grads import StaleGradsProbe
from .time_grad import TimeGradProbe

#: every probe, in call order (the loss probe first: others read what it recorded of the step)
DEFAULT_PROBES: tuple[type[Probe], ...] = (
    LossProbe,
    ParamsProbe,
    StaleGradsProbe,
    LocalizeProbe,
    InputsProbe,
    LoaderProbe,
    GatesProbe,
    TimeGradProbe,
    ActivationsProbe,
    EvalPassProbe,
    CarriedStateProbe,
)

__all__ = ["DEFAULT_PROBES", "Context", "Probe", "ProbeSet", "probe_names", "select"]


def probe_names(probes: Iterable[type[Probe] | Probe] = DEFAULT_PROBES) -> list[str]:
    return [p.name for p in probes]


def select(probes: Sequence[type[Probe] | Probe] | None, disable: Iterable[str] = ()) -> list[Probe]:
    """Instances of ``probes`` (default: ``DEFAULT_PROBES``) but those named in ``disable``;
    an unknown name is an error (a typo must not silently keep a probe on)."""
    chosen = list(DEFAULT_PROBES if probes is None else probes)
    known = set(probe_names(chosen))
    unknown = sorted(set(disable) - known)
    if unknown:
        raise ValueError(f"no probe named {', '.join(map(repr, unknown))}; probes: {', '.join(probe_names(chosen))}")
    off = set(disable)
    return [p if isinstance(p, Probe) else p() for p in chosen if p.name not in off]


class ProbeSet:
    """Calls the probes' hooks: only the hooks a probe implements, only on steps its schedule
    is due; an error of a probe is reported through ``on_error`` and skips that call."""

    def __init__(self, probes: list[Probe], on_error: Callable[[str, Exception], None]) -> None:
        self.probes = probes
        self._on_error = on_error
        self._implementing = {e: [p for p in probes if implements(p, e)] for e in EVENTS}
        self._active: dict[str, list[Probe]] = dict(self._implementing)

    def reschedule(self, clock: Clock) -> None:
        """At every step start: the probes whose schedule is due get this step's events."""
        for event in SCHEDULED_EVENTS:
            self._active[event] = [p for p in self._implementing[event] if p.schedule is None or clock.due(p.schedule)]

    def implemented(self, event: str) -> bool:
        """Some probe implements ``event`` (whether or not it is due now)."""
        return bool(self._implementing[event])

    def call(self, event: str, *args: Any) -> None:
        for p in self._active[event]:
            try:
                getattr(p, event)(*args)
            except Exception as exc:
                self._on_error(f"{p.name}.{event}", exc)

    def model_args(self, module: Any, args: tuple[Any, ...]) -> "tuple[Any, ...] | None":
        """Each probe sees the arguments the ones before it returned."""
        replaced = None
        for p in self._active["model_args"]:
            try:
                out = p.model_args(module, args)
            except Exception as exc:
                self._on_error(f"{p.name}.model_args", exc)
                continue
            if out is not None:
                replaced = args = out
        return replaced

    def rnn_call(self, name: str, module: Any, args: Any, kwargs: Any) -> "tuple[Any, Any] | None":
        """Each probe sees the arguments the ones before it returned."""
        replaced = None
        for p in self._active["rnn_call"]:
            try:
                out = p.rnn_call(name, module, args, kwargs)
            except Exception as exc:
                self._on_error(f"{p.name}.rnn_call", exc)
                continue
            if out is not None:
                replaced = args, kwargs = out
        return replaced

    def lifetime(self, hook: str, *args: Any) -> list[Any]:
        """``start``/``attach``/``stop`` of every probe; returns what they returned."""
        results = []
        for p in self.probes:
            try:
                results.append(getattr(p, hook)(*args))
            except Exception as exc:
                self._on_error(f"{p.name}.{hook}", exc)
        return results
