"""The rule registry: ``@rule`` records a rule under its stable id.

The contract of a rule:

* It is registered once, with everything that is the same for all of its findings::

      @rule("divergence", Severity.ERROR, signals=("steps",),
            fix="Lower the learning rate, clip gradients, ...", plots=("loss",))
      def divergence(run: Run, *, over_min: float = 10.0) -> Iterator[Found]:
          ...
          yield Found(title=..., explanation=..., evidence=ev, where=where, first_step=step)

  ``id`` is the finding id (a public contract: stable, unique); ``severity`` the default
  severity; ``signals`` the recorded signals it reads (it is skipped when one is missing;
  ``"a|b"`` is satisfied by either);
  ``fix`` the default one-line fix; ``plots`` every plot a finding of it may ask for (names
  in ``rnndoctor.report.plots.PLOTS``), in the order the report shows them.
* It is a function ``(run, **thresholds) -> Iterator[Found]``. Its keyword-only parameters
  are its thresholds (the signature is the config schema); its docstring, in the sections
  *What it detects / Why it matters / How to fix*, is its documentation.
* It yields :class:`Found`: only what varies from one finding to the next (title,
  explanation, evidence, where, first_step), plus an override of ``severity`` where it
  escalates or softens, of ``fix`` where the fix depends on the case, and of ``plots`` (a
  subset of the declared ones) where a finding shows fewer plots.
* Calling the :class:`RuleSpec` (``get_rule(id)(run)``) runs the rule and completes each
  ``Found`` into a :class:`~rnndoctor.finding.Finding` carrying the spec's id, so a rule
  cannot report under another rule's id. Yielding anything but a ``Found`` (a ready-made
  ``Finding`` included), or asking for an undeclared plot, is an error. Calling the bare
  function yields the ``Found`` objects themselves.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Iterator

from ..finding import Finding, Severity
from ..run import Run

__all__ = ["Found", "REGISTRY", "RuleFunc", "RuleSpec", "rule"]


@dataclass(frozen=True)
class Found:
    """What one finding of a rule says that its registration does not: the rest (id,
    default severity, default fix, plots) comes from the rule's :class:`RuleSpec`.

    ``severity``, ``fix`` and ``plots`` are overrides; None keeps the rule's default."""

    title: str
    explanation: str
    evidence: dict[str, Any] = field(default_factory=dict)
    where: dict[str, Any] = field(default_factory=dict)
    first_step: int | None = None
    severity: Severity | None = None
    fix: str | None = None
    plots: tuple[str, ...] | None = None


RuleFunc = Callable[..., Iterator[Found]]


class RuleError(TypeError):
    """A rule broke the contract of the registry (see the module docstring)."""


@dataclass(frozen=True)
class RuleSpec:
    id: str
    severity: Severity
    signals: tuple[str, ...]
    func: RuleFunc
    family: str
    fix: str
    plots: tuple[str, ...] = ()

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

    def finding(self, found: Found) -> Finding:
        """``found`` completed with this rule's id and its defaults."""
        if not isinstance(found, Found):
            raise RuleError(
                f"rule {self.id!r} yielded {type(found).__name__} {_id_of(found)}; a rule yields Found "
                "and its spec supplies the id, severity, fix and plots"
            )
        plots = self.plots if found.plots is None else tuple(found.plots)
        undeclared = [p for p in plots if p not in self.plots]
        if undeclared:
            raise RuleError(f"rule {self.id!r} asked for plots {undeclared} it does not declare (declared: {list(self.plots)})")
        if found.severity is not None and not isinstance(found.severity, Severity):
            raise RuleError(f"rule {self.id!r} gave severity {found.severity!r}, not a Severity")
        return Finding(
            id=self.id,
            severity=self.severity if found.severity is None else found.severity,
            title=found.title,
            explanation=found.explanation,
            fix=self.fix if found.fix is None else found.fix,
            evidence=found.evidence,
            where=found.where,
            first_step=found.first_step,
            plots=plots,
        )

    def __call__(self, run: Run, **options: Any) -> Iterator[Finding]:
        found: Iterable[Found] = self.func(run, **options)  # thresholds are bound (and refused) here, as before
        return map(self.finding, found)


def _id_of(obj: object) -> str:
    rid = getattr(obj, "id", None)
    return f"(id {rid!r})" if rid is not None else ""


REGISTRY: dict[str, RuleSpec] = {}


def rule(
    id: str,
    severity: Severity,
    *,
    signals: tuple[str, ...],
    fix: str,
    plots: tuple[str, ...] = (),
) -> Callable[[RuleFunc], RuleFunc]:
    """Register ``func`` as the rule for finding ``id``; ids are unique. ``fix`` is the
    default one-line fix of its findings and ``plots`` every plot they may ask for."""
    if not fix or "\n" in fix:
        raise ValueError(f"rule {id!r}: fix must be one non-empty line")
    plots = tuple(plots)

    def decorate(func: RuleFunc) -> RuleFunc:
        if id in REGISTRY:
            raise ValueError(f"duplicate rule id {id!r}")
        family = func.__module__.rsplit(".", 1)[-1]
        REGISTRY[id] = RuleSpec(
            id=id, severity=severity, signals=signals, func=func, family=family, fix=fix, plots=plots
        )
        return func

    return decorate
