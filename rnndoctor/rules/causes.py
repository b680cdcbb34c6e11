"""Cause and consequence: which finding explains which, decided from the measured run.

Users read the first line of a diagnosis and act on it, so the first line must be the
*cause*: a stuck parity run's headline is the gradient that reaches 5 of 50 steps back, not
``stuck-at-chance``. Each :class:`Relation` says "A can explain B" and carries the evidence
test that must agree before it is believed in one run (same module, the cause's onset not
after the consequence's, the cause's own numbers pointing the right way): two findings'
ids alone never make a link.

* An explained finding is kept (ids and severities are a CI contract) and marked
  ``explained_by``; the diagnosis lists each primary cause with its consequences beneath it.
* A relation marked ``withdraw`` says the consequence's signal *means nothing* given the
  cause (a gradient-through-time profile of an input that never varies): that finding is
  withdrawn from the findings, with the reason, into ``Diagnosis.suppressed``.

Adding a relation is one row in :data:`RELATIONS` and two tests (it holds when the evidence
agrees, and not when it does not). Pure functions of findings and the run, like rules.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Callable, Sequence

from ..finding import Finding, Link, Suppressed, worst_first
from ..run import Run

__all__ = ["RELATIONS", "Relation", "relate"]

#: the evidence test of a relation: does this cause explain this consequence in this run?
Agrees = Callable[[Finding, Finding, Run], bool]


def always(cause: Finding, effect: Finding, run: Run) -> bool:
    """none: both are states of the whole run (a stuck outcome, constant data)"""
    return True


def _module(f: Finding) -> str | None:
    m = f.where.get("module")
    return str(m) if m not in (None, "") else None


def _within(a: str, b: str) -> bool:
    """``lstm`` and ``lstm`` or ``enc.lstm`` and ``enc.lstm.l0``: one names the other's part."""
    return a == b or a.startswith(b + ".") or b.startswith(a + ".")


def same_module(cause: Finding, effect: Finding, run: Run) -> bool:
    """the same module"""
    a, b = _module(cause), _module(effect)
    return a is not None and b is not None and _within(a, b)


def same_cell(cause: Finding, effect: Finding, run: Run) -> bool:
    """the same module, layer and direction"""
    if not same_module(cause, effect, run):
        return False
    return all(cause.where[k] == effect.where[k] for k in ("layer", "direction") if k in cause.where and k in effect.where)


def not_later(cause: Finding, effect: Finding, run: Run) -> bool:
    """the cause detectable no later than the consequence"""
    if cause.first_step is None or effect.first_step is None:
        return True
    return cause.first_step <= effect.first_step


def dead_under_module(cause: Finding, effect: Finding, run: Run) -> bool:
    """the parameters without a gradient belong to the cause's module"""
    module = _module(cause)
    params = effect.evidence.get("params") or []
    return module is not None and any(str(p).startswith(module + ".") for p in params)


def no_gradient_enters(cause: Finding, effect: Finding, run: Run) -> bool:
    """parameters of the profiled module get no gradient, and the profile reaches no step back"""
    module = _module(effect)
    params = [str(p) for p in cause.evidence.get("params") or []]
    return (module is not None and effect.evidence.get("horizon") == 0
            and any(p.startswith(module + ".") for p in params))


def side(*sides: str, of: str = "cause") -> Agrees:
    """The cause's (or, ``of="effect"``, the consequence's) evidence says which way it points
    (updates too large, gates open...)."""

    def agrees(cause: Finding, effect: Finding, run: Run) -> bool:
        return (cause if of == "cause" else effect).evidence.get("side") in sides

    agrees.__doc__ = f"the {'cause' if of == 'cause' else 'consequence'}'s side is {' or '.join(sides)}"
    return agrees


def mostly(which: str) -> Agrees:
    def agrees(cause: Finding, effect: Finding, run: Run) -> bool:
        return cause.evidence.get("mostly") == which

    agrees.__doc__ = f"the gates are mostly {which}"
    return agrees


def gate_in(*gates: str) -> Agrees:
    def agrees(cause: Finding, effect: Finding, run: Run) -> bool:
        return str(cause.where.get("gate")) in gates

    agrees.__doc__ = f"the saturated gate is {' or '.join(gates)}"
    return agrees


def all_zero(cause: Finding, effect: Finding, run: Run) -> bool:
    """the input is all zeros (a constant non-zero input still gives the input weights a gradient)"""
    return bool(cause.evidence.get("all_zero"))


def nan_source_here(cause: Finding, effect: Finding, run: Run) -> bool:
    """the first non-finite value came from the cause's module (or its source is not named)"""
    return _module(effect) is None or same_module(cause, effect, run)


def measured_after(cause: Finding, effect: Finding, run: Run) -> bool:
    """the consequence was measured on or after the step at which the cause began"""
    return cause.first_step is not None and effect.first_step is not None and effect.first_step >= cause.first_step


def small_only_while_flat(cause: Finding, effect: Finding, run: Run) -> bool:
    """the updates are small only by the edge a flat loss lowers (none below the plain band)"""
    ratios = effect.evidence.get("median_log10_update_ratio")
    band = effect.evidence.get("band")
    if effect.evidence.get("side") != "small" or not isinstance(ratios, dict) or not ratios or not band:
        return False
    return all(float(v) >= float(band[0]) for v in ratios.values())


def every(*tests: Agrees) -> Agrees:
    def agrees(cause: Finding, effect: Finding, run: Run) -> bool:
        return all(t(cause, effect, run) for t in tests)

    agrees.__doc__ = "; ".join((t.__doc__ or t.__name__).strip().splitlines()[0] for t in tests)
    return agrees


@dataclass(frozen=True)
class Relation:
    """``cause`` can explain ``effect``, when ``agrees`` says the evidence of both agrees."""

    cause: str
    effect: str
    why: str  #: the mechanism, in one line a reader understands
    agrees: Agrees = always
    withdraw: bool = False  #: the effect's signal is meaningless given the cause


_OUTCOME = ("stuck-at-chance", "prediction-collapse")


def _both(cause: str, why: str, agrees: Agrees = always) -> tuple[Relation, ...]:
    return tuple(Relation(cause, e, why, agrees) for e in _OUTCOME)


#: the table: read top to bottom as "A explains B". It must stay acyclic over ids (tested).
RELATIONS: tuple[Relation, ...] = (
    # the model cannot see the data or carry it
    *_both("constant-input", "the recurrent layer never sees anything that varies, so nothing can be learned from the input"),
    Relation("constant-input", "dead-parameters", "an all-zero input gives the input weights a zero gradient", every(all_zero, dead_under_module)),
    Relation("constant-input", "vanishing-gradient-through-time",
             "a gradient-through-time profile of an input that never varies says nothing about memory", same_module, withdraw=True),
    *_both("no-recurrence", "the recurrent module never carries anything from one element to the next"),
    Relation("no-recurrence", "dead-parameters", "without a carried state the recurrent weights get no gradient", dead_under_module),
    Relation("no-recurrence", "vanishing-gradient-through-time",
             "with length-1 calls there is no time axis for a gradient to travel along", same_module, withdraw=True),
    # the data cannot be learned as given
    *_both("resampled-parameters", "the input-to-label mapping is redrawn per sample, so there is no fixed mapping to learn"),
    Relation("resampled-parameters", "inconsistent-labels", "redrawn task parameters give one input different labels"),
    *_both("inconsistent-labels", "identical inputs with different labels cap what any model can reach"),
    # the loss does not fit the output
    *_both("loss-output-mismatch", "a loss that does not fit the output gives gradients that cannot separate the classes"),
    Relation("loss-output-mismatch", "poor-initial-loss", "the loss is computed on outputs it was not made for"),
    # memory over time
    *_both("vanishing-gradient-through-time", "the error signal never reaches the steps the answer depends on"),
    Relation("padding-not-masked", "vanishing-gradient-through-time",
             "the answer is read after the padding, so the gradient must cross it to reach the real inputs", same_module),
    *_both("padding-not-masked", "the answer is read after the padding, which washes out what the sequence said"),
    # gates
    Relation("forget-gate-saturation", "cell-state-growth", "forget gates pinned open keep adding to the cell state", every(mostly("open"), same_cell)),
    Relation("forget-gate-saturation", "vanishing-gradient-through-time", "forget gates pinned shut wipe the memory every step",
             every(mostly("closed"), same_module)),
    *_both("forget-gate-saturation", "pinned gates pass (almost) no gradient, so the layer cannot learn"),
    Relation("gate-saturation", "cell-state-growth", "input gates stuck open and a saturated candidate add ±1 to the cell at every step",
             every(gate_in("i", "g"), same_cell)),
    Relation("unnormalized-inputs", "gate-saturation", "inputs far from unit scale drive the gate pre-activations into saturation", same_module),
    Relation("unnormalized-inputs", "forget-gate-saturation", "inputs far from unit scale drive the forget gates into saturation", same_module),
    Relation("unnormalized-inputs", "cell-state-growth", "inputs far from unit scale saturate the gates that feed the cell state", same_module),
    Relation("unnormalized-inputs", "dead-parameters", "gates saturated by the inputs' scale pass no gradient to the weights feeding them",
             dead_under_module),
    Relation("forget-gate-saturation", "dead-parameters", "pinned gates pass no gradient to the weights feeding them", dead_under_module),
    Relation("cell-state-growth", "non-finite", "a cell state that grows without bound overflows", every(not_later, nan_source_here)),
    # step size
    Relation("gradients-not-zeroed", "learning-rate-scale", "summed stale gradients make every update far too large", every(side("large", of="effect"), not_later)),
    Relation("gradients-not-zeroed", "exploding-gradients", "the gradient used at each step is the sum of every earlier one", not_later),
    Relation("gradients-not-zeroed", "divergence", "updates from summed stale gradients grow until the loss climbs", not_later),
    Relation("gradients-not-zeroed", "non-finite", "updates from summed stale gradients grow until the weights overflow", not_later),
    *_both("gradients-not-zeroed", "every update follows every earlier batch's gradient instead of this one's"),
    Relation("learning-rate-scale", "exploding-gradients", "steps far too large throw the weights where gradients are huge", every(side("large"), not_later)),
    Relation("learning-rate-scale", "divergence", "steps far too large overshoot until the loss climbs", every(side("large"), not_later)),
    Relation("learning-rate-scale", "non-finite", "steps far too large throw the weights to overflow", every(side("large"), not_later)),
    *_both("learning-rate-scale", "updates far too small (or too large) for the weights to settle anywhere useful", side("small", "none", "large")),
    Relation("undetached-state", "exploding-gradients", "backprop through every earlier batch multiplies the gradient again and again", not_later),
    Relation("undetached-state", "non-finite", "backprop through every earlier batch overflows", not_later),
    Relation("exploding-gradients", "divergence", "a gradient spike throws the weights off and the loss climbs", not_later),
    Relation("exploding-gradients", "non-finite", "a gradient spike overflows the weights", not_later),
    Relation("divergence", "non-finite", "a climbing loss ends in overflow", not_later),
    # the learning-rate rule calls updates between 10^-5 and 10^-4.5 too small only because
    # the loss is flat: when another finding explains the flat loss, that reading is void
    *(Relation(c, "learning-rate-scale", "the loss is flat for another reason, so slowish updates say nothing about the rate",
               small_only_while_flat, withdraw=True)
      for c in ("constant-input", "no-recurrence", "padding-not-masked", "loss-output-mismatch", "resampled-parameters",
                "inconsistent-labels", "forget-gate-saturation")),
    Relation("dead-parameters", "vanishing-gradient-through-time",
             "no gradient enters the module at all, so a profile that reaches no step back measures that, not fading memory",
             no_gradient_enters, withdraw=True),
    # a broken run's statistics
    Relation("non-finite", "vanishing-gradient-through-time",
             "a gradient profile measured after the run produced NaN/Inf measures the overflow, not memory", measured_after, withdraw=True),
)


def relate(findings: Sequence[Finding], run: Run, relations: Sequence[Relation] = RELATIONS) -> tuple[tuple[Finding, ...], tuple[Link, ...], tuple[Suppressed, ...]]:
    """The findings in verdict order (each primary cause, its consequences beneath it, then
    the findings that stand alone), marked ``explained_by``; the links between them (indices
    into the returned findings); and the findings withdrawn, with the reason."""
    found = list(findings)
    by_id: dict[str, list[int]] = {}
    for i, f in enumerate(found):
        by_id.setdefault(f.id, []).append(i)
    edges: list[tuple[int, int, Relation]] = [
        (c, e, r)
        for r in relations
        for c in by_id.get(r.cause, ())
        for e in by_id.get(r.effect, ())
        if c != e and r.agrees(found[c], found[e], run)
    ]
    gone: dict[int, Suppressed] = {}
    for c, e, r in edges:
        if r.withdraw and c not in gone and e not in gone:
            gone[e] = Suppressed(finding=found[e], cause=found[c].id, reason=r.why)
    edges = [(c, e, r) for c, e, r in edges if not r.withdraw and c not in gone and e not in gone]
    order = _verdict_order([i for i in range(len(found)) if i not in gone], edges, found)
    place = {old: new for new, old in enumerate(order)}
    causes_of: dict[int, list[str]] = {}
    for c, e, _ in edges:
        if found[c].id not in causes_of.setdefault(e, []):
            causes_of[e].append(found[c].id)
    ordered = tuple(replace(found[i], explained_by=tuple(causes_of.get(i, ()))) for i in order)
    links = tuple(sorted({(place[c], place[e]): Link(place[c], place[e], r.why) for c, e, r in edges}.values(), key=lambda k: (k.cause, k.effect)))
    return ordered, links, tuple(gone[i] for i in sorted(gone))


def _verdict_order(kept: list[int], edges: list[tuple[int, int, Relation]], found: list[Finding]) -> list[int]:
    """Roots (findings nothing explains) first, the one whose consequences are worst leading;
    each root followed depth-first by what it explains, every finding once."""
    children: dict[int, list[int]] = {i: [] for i in kept}
    parents: dict[int, set[int]] = {i: set() for i in kept}
    for c, e, _ in edges:
        if e not in children[c]:
            children[c].append(e)
        parents[e].add(c)

    def key(i: int) -> tuple:
        return (*worst_first(found[i]), i)

    def reach(i: int, seen: set[int]) -> set[int]:
        for j in children[i]:
            if j not in seen:
                seen.add(j)
                reach(j, seen)
        return seen

    def root_key(i: int) -> tuple:
        below = reach(i, set())
        worst = max([found[j].severity.rank for j in below | {i}])
        return (-worst, -found[i].severity.rank, -len(below), *key(i))

    order: list[int] = []
    placed: set[int] = set()

    def visit(i: int, family: set[int]) -> None:
        """Place ``i``, then each consequence whose causes in this family are all placed: a
        chain reads cause → consequence → its consequence."""
        placed.add(i)
        order.append(i)
        for j in sorted(children[i], key=key):
            if j not in placed and parents[j] & family <= placed:
                visit(j, family)

    for root in sorted((i for i in kept if not parents[i]), key=root_key):
        if root not in placed:
            visit(root, reach(root, {root}))
    for i in sorted(kept, key=key):  # a cycle (not in the table, but never lose a finding)
        if i not in placed:
            visit(i, {i})
    return order
