"""Rules, one module per family, registered in this explicit order."""

from __future__ import annotations

from . import outcome, gradients, gates, data, recurrence, wiring  # noqa: F401  (registration side effect, explicit list)
from .registry import REGISTRY, RuleSpec, rule

FAMILIES = ("outcome", "gradients", "gates", "data", "recurrence", "wiring")

__all__ = ["FAMILIES", "REGISTRY", "RuleSpec", "all_rules", "get_rule", "rule"]


def all_rules() -> list[RuleSpec]:
    return list(REGISTRY.values())


def get_rule(rule_id: str) -> RuleSpec:
    try:
        return REGISTRY[rule_id]
    except KeyError:
        raise KeyError(f"no rule with id {rule_id!r}; `rnndoctor rules` lists them") from None
