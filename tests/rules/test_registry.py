"""The registry's contract: a rule states its id, severity, fix and plots once, and yields
only what varies; its spec completes each Found into a Finding under the rule's own id."""

import pytest

from rnndoctor.finding import Finding, Severity
from rnndoctor.rules import all_rules, get_rule, registry
from rnndoctor.rules.registry import Found, RuleError, RuleSpec, rule
from synth import make_run


def spec_of(func, *, severity=Severity.WARNING, fix="Do the one thing.", plots=("loss", "gates")):
    return RuleSpec(id="test-rule", severity=severity, signals=(), func=func, family="test", fix=fix, plots=plots)


def test_found_is_completed_from_the_spec():
    def body(run):
        yield Found(title="t", explanation="e", evidence={"x": 1}, where={"module": "m"}, first_step=3)

    (f,) = spec_of(body)(make_run())
    assert f == Finding(
        id="test-rule", severity=Severity.WARNING, title="t", explanation="e", fix="Do the one thing.",
        evidence={"x": 1}, where={"module": "m"}, first_step=3, plots=("loss", "gates"),
    )


def test_severity_fix_and_plots_can_be_overridden_per_finding():
    def body(run):
        yield Found(title="t", explanation="e", severity=Severity.ERROR, fix="Case-specific.", plots=("gates",))

    (f,) = spec_of(body)(make_run())
    assert (f.id, f.severity, f.fix, f.plots) == ("test-rule", Severity.ERROR, "Case-specific.", ("gates",))


def test_found_has_no_id():
    with pytest.raises(TypeError):
        Found(id="stuck-at-chance", title="t", explanation="e")  # type: ignore[call-arg]


def test_a_rule_cannot_yield_a_finding_under_another_rules_id():
    def body(run):
        yield Finding(id="stuck-at-chance", severity=Severity.ERROR, title="t", explanation="e", fix="f")

    with pytest.raises(RuleError, match="'test-rule' yielded Finding \\(id 'stuck-at-chance'\\)"):
        list(spec_of(body)(make_run()))


def test_a_rule_cannot_yield_a_ready_made_finding_even_under_its_own_id():
    def body(run):
        yield Finding(id="test-rule", severity=Severity.ERROR, title="t", explanation="e", fix="f")

    with pytest.raises(RuleError):
        list(spec_of(body)(make_run()))


def test_every_registered_rule_reports_under_its_own_id():
    for spec in all_rules():
        assert get_rule(spec.id).finding(Found(title="t", explanation="e")).id == spec.id


def test_a_finding_may_only_ask_for_declared_plots():
    def body(run):
        yield Found(title="t", explanation="e", plots=("loss", "cell_norm"))

    with pytest.raises(RuleError, match="does not declare"):
        list(spec_of(body)(make_run()))


def test_severity_override_must_be_a_severity():
    def body(run):
        yield Found(title="t", explanation="e", severity="error")  # type: ignore[arg-type]

    with pytest.raises(RuleError, match="not a Severity"):
        list(spec_of(body)(make_run()))


def test_unknown_threshold_is_refused_when_the_rule_is_called():
    with pytest.raises(TypeError):
        get_rule("divergence")(make_run(), no_such_threshold=1)


def test_the_decorator_records_id_severity_fix_and_plots(monkeypatch):
    monkeypatch.setattr(registry, "REGISTRY", {})

    @rule("test-rule", Severity.INFO, signals=("steps",), fix="One line.", plots=("loss",))
    def body(run, *, limit: float = 2.0):
        """Summary."""
        yield Found(title="t", explanation="e")

    spec = registry.REGISTRY["test-rule"]
    assert (spec.severity, spec.signals, spec.fix, spec.plots, spec.thresholds()) == (
        Severity.INFO, ("steps",), "One line.", ("loss",), {"limit": 2.0})
    assert list(body(make_run())) == [Found(title="t", explanation="e")]  # the bare function yields Found


@pytest.mark.parametrize("fix", ["", "two\nlines"])
def test_the_fix_is_one_non_empty_line(fix, monkeypatch):
    monkeypatch.setattr(registry, "REGISTRY", {})
    with pytest.raises(ValueError, match="one non-empty line"):
        rule("test-rule", Severity.INFO, signals=(), fix=fix)


def test_every_rule_has_a_one_line_fix():
    for spec in all_rules():
        assert spec.fix and "\n" not in spec.fix, spec.id


@pytest.mark.parametrize("spec", all_rules(), ids=lambda s: s.id)
def test_every_plot_a_rule_declares_is_drawn_by_the_report(spec):
    from rnndoctor.report.plots import PLOTS

    missing = [p for p in spec.plots if p not in PLOTS]
    assert not missing, f"{spec.id} declares plots {missing} that rnndoctor.report.plots.PLOTS does not draw"
