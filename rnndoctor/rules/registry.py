"""The rule registry: ``@rule`` records a rule under its stable id.

A rule is a pure function ``(run, **thresholds) -> Iterator[Finding]``. Its keyword-only
parameters are its thresholds (the signature is the config schema); its docstring, in the
sections *What it detects / Why it matters / How to fix*, is its documentation.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any, Callable, Iterator

from ..finding import Finding, Severity
from ..run import Run

RuleFunc = Callable[..., Iterator[Finding]]


@dataclass(frozen=True)
class RuleSpec:
    id: str
    severity: Severity
    signals: tuple[str, ...]
    func: RuleFunc
    family: str

    @property
    def doc(self) -> str:
        return inspect.cleandoc(self.func.__doc__ or "")

    @property
    def summary(self) -> str:
        return self.doc.splitlines()[0] if self.doc else ""

    def thresholds(self) -> dict[str, Any]:
        """The rule's named thresholds and their defaults."""
        sig = inspect.signature(self.func)
        return {
            name: p.default
            for name, p in sig.parameters.items()
            if p.kind is inspect.Parameter.KEYWORD_ONLY
        }

    def __call__(self, run: Run, **options: Any) -> Iterator[Finding]:
        return self.func(run, **options)


REGISTRY: dict[str, RuleSpec] = {}


def rule(id: str, severity: Severity, *, signals: tuple[str, ...]) -> Callable[[RuleFunc], RuleFunc]:
    """Register ``func`` as the rule for finding ``id``; ids are unique."""

    def decorate(func: RuleFunc) -> RuleFunc:
        if id in REGISTRY:
            raise ValueError(f"duplicate rule id {id!r}")
        family = func.__module__.rsplit(".", 1)[-1]
        REGISTRY[id] = RuleSpec(id=id, severity=severity, signals=signals, func=func, family=family)
        return func

    return decorate
