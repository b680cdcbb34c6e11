"""Cause and consequence (rules/causes.py): a link holds only when the evidence agrees."""

from __future__ import annotations

import json
import sys

import pytest

from rnndoctor.checks import CheckEntry, evaluate
from rnndoctor.diagnose import diagnose
from rnndoctor.finding import Diagnosis, Finding, Severity, finding_from_dict
from rnndoctor.report.assertion import explain
from rnndoctor.report.html import render_html
from rnndoctor.report.json import diagnosis_dict
from rnndoctor.report.terminal import render, verdict
from rnndoctor.rules import REGISTRY
from rnndoctor.rules.causes import RELATIONS, relate
from tests.synth import classification_run, make_run

RUN = make_run()


def f(id: str, severity: str = "warning", *, step: int | None = 0, **where) -> Finding:
    ev = where.pop("evidence", {})
    return Finding(id=id, severity=Severity(severity), title=f"{id} title", explanation="", fix=f"fix {id}",
                   evidence=ev, where=where, first_step=step)


def related(*findings: Finding) -> Diagnosis:
    ordered, links, suppressed = relate(findings, RUN)
    return Diagnosis(findings=ordered, links=links, suppressed=suppressed)


def test_the_table_names_real_ids_and_has_no_cycle():
    ids = set(REGISTRY)
    graph: dict[str, set[str]] = {}
    for r in RELATIONS:
        assert r.cause in ids and r.effect in ids and r.cause != r.effect
        assert r.why and "\n" not in r.why
        graph.setdefault(r.cause, set()).add(r.effect)

    def reaches(a: str, b: str, seen: set[str]) -> bool:
        return any(x == b or (x not in seen and not seen.add(x) and reaches(x, b, seen)) for x in graph.get(a, ()))

    assert not [c for c in graph if reaches(c, c, set())]


def test_a_cause_leads_and_its_consequences_follow_marked():
    d = related(f("stuck-at-chance", "error", step=400), f("dead-parameters", step=4, params=None, evidence={"params": ["lstm.weight_ih_l0"]}),
                f("constant-input", "error", module="lstm", evidence={"all_zero": True}), f("duplicate-samples", "info"))
    assert [x.id for x in d.findings] == ["constant-input", "stuck-at-chance", "dead-parameters", "duplicate-samples"]
    assert [x.explained_by for x in d.findings] == [(), ("constant-input",), ("constant-input",), ()]
    assert d.causes() == [0] and d.consequences(0) == [1, 2]
    assert {(k.cause, k.effect) for k in d.links} == {(0, 1), (0, 2)}


def test_a_constant_but_not_zero_input_does_not_explain_dead_input_weights():
    d = related(f("constant-input", "error", module="lstm", evidence={"all_zero": False}),
                f("dead-parameters", evidence={"params": ["lstm.weight_ih_l0"]}))
    assert all(not x.explained_by for x in d.findings)


def test_dead_parameters_of_another_module_are_not_explained():
    d = related(f("no-recurrence", "error", module="enc"), f("dead-parameters", evidence={"params": ["head.weight"]}))
    assert not d.links
    d = related(f("no-recurrence", "error", module="enc"), f("dead-parameters", evidence={"params": ["enc.weight_hh_l0"]}))
    assert d.findings[1].explained_by == ("no-recurrence",)


def test_modules_must_agree():
    same = related(f("padding-not-masked", module="rnn"), f("vanishing-gradient-through-time", step=300, module="rnn"))
    other = related(f("padding-not-masked", module="rnn"), f("vanishing-gradient-through-time", step=300, module="decoder.rnn"))
    assert same.findings[1].explained_by == ("padding-not-masked",)
    assert not other.links
    nested = related(f("padding-not-masked", module="enc"), f("vanishing-gradient-through-time", module="enc.l0"))
    assert nested.links


def test_onsets_must_be_in_order():
    early = related(f("divergence", "error", step=51), f("gradients-not-zeroed", step=1))
    late = related(f("divergence", "error", step=51), f("gradients-not-zeroed", step=80))
    assert [x.id for x in early.findings] == ["gradients-not-zeroed", "divergence"]
    assert early.findings[1].explained_by == ("gradients-not-zeroed",)
    assert not late.links and late.findings[0].id == "divergence"


def test_the_cause_must_point_the_right_way():
    large = related(f("learning-rate-scale", step=3, evidence={"side": "large"}), f("divergence", "error", step=40))
    small = related(f("learning-rate-scale", step=3, evidence={"side": "small"}), f("divergence", "error", step=40))
    assert large.links and not small.links
    opened = related(f("forget-gate-saturation", "error", module="lstm", layer=0, evidence={"mostly": "open"}),
                     f("cell-state-growth", module="lstm", layer=0))
    closed = related(f("forget-gate-saturation", "error", module="lstm", layer=0, evidence={"mostly": "closed"}),
                     f("cell-state-growth", module="lstm", layer=0))
    other_layer = related(f("forget-gate-saturation", "error", module="lstm", layer=1, evidence={"mostly": "open"}),
                          f("cell-state-growth", module="lstm", layer=0))
    assert opened.links and not closed.links and not other_layer.links


def test_a_chain_reads_cause_then_consequence_then_its_consequence():
    d = related(f("divergence", "error", step=51), f("exploding-gradients", step=38), f("gradients-not-zeroed", step=1))
    assert [x.id for x in d.findings] == ["gradients-not-zeroed", "exploding-gradients", "divergence"]
    assert d.findings[2].explained_by == ("exploding-gradients", "gradients-not-zeroed") or \
        set(d.findings[2].explained_by) == {"exploding-gradients", "gradients-not-zeroed"}
    assert d.causes() == [0] and d.consequences(0) == [1, 2]


def test_the_cause_whose_consequences_are_worst_leads_even_when_it_is_only_a_warning():
    d = related(f("stuck-at-chance", "error", step=0), f("eval-in-train-mode", "warning", step=0),
                f("vanishing-gradient-through-time", "warning", step=200, module="lstm"))
    assert [x.id for x in d.findings] == ["vanishing-gradient-through-time", "stuck-at-chance", "eval-in-train-mode"]
    assert verdict(d).startswith("1 error, 2 warnings — cause: vanishing-gradient-through-time title (vanishing-gradient-through-time), which explains stuck-at-chance")


def test_a_meaningless_signal_is_withdrawn_with_its_reason_not_dropped():
    d = related(f("constant-input", "error", module="lstm"), f("vanishing-gradient-through-time", step=200, module="lstm"),
                f("stuck-at-chance", "error"))
    assert [x.id for x in d.findings] == ["constant-input", "stuck-at-chance"]
    (s,) = d.suppressed
    assert s.finding.id == "vanishing-gradient-through-time" and s.cause == "constant-input" and "never varies" in s.reason
    # its own links go with it: it no longer explains stuck-at-chance
    assert d.findings[1].explained_by == ("constant-input",)
    kept = related(f("constant-input", "error", module="lstm"), f("vanishing-gradient-through-time", step=200, module="decoder"))
    assert not kept.suppressed and len(kept.findings) == 2


def test_a_profile_measured_before_the_overflow_is_kept():
    before = related(f("non-finite", "error", step=120), f("vanishing-gradient-through-time", step=100, module="lstm"))
    after = related(f("non-finite", "error", step=120), f("vanishing-gradient-through-time", step=200, module="lstm"))
    assert not before.suppressed and [s.finding.id for s in after.suppressed] == ["vanishing-gradient-through-time"]


def test_findings_without_relations_keep_worst_first_order():
    d = related(f("duplicate-samples", "info"), f("stuck-at-chance", "error", step=10), f("exploding-gradients", step=1))
    assert [x.id for x in d.findings] == ["stuck-at-chance", "exploding-gradients", "duplicate-samples"]
    assert not d.links and not d.causes()


def test_two_causes_of_one_consequence_show_it_once():
    d = related(f("loss-output-mismatch", "error"), f("stuck-at-chance", "error", step=400),
                f("learning-rate-scale", step=80, evidence={"side": "small"}))
    assert [x.id for x in d.findings] == ["loss-output-mismatch", "stuck-at-chance", "learning-rate-scale"]
    assert set(d.findings[1].explained_by) == {"loss-output-mismatch", "learning-rate-scale"}
    text = render(RUN, d)
    assert text.count("stuck-at-chance title") == 1
    assert "also explains stuck-at-chance (above)" in text
    lines = text.splitlines()
    assert lines[0].startswith("rnndoctor: 2 errors, 1 warning — cause: loss-output-mismatch title")
    assert lines.index("      which explains:") < next(i for i, l in enumerate(lines) if "↳ ERROR   stuck-at-chance" in l)


def test_findings_json_pytest_message_and_report_carry_the_verdict(tmp_path):
    d = related(f("constant-input", "error", module="lstm"), f("vanishing-gradient-through-time", step=200, module="lstm"),
                f("stuck-at-chance", "error"), f("duplicate-samples", "info"))
    data = json.loads(json.dumps(diagnosis_dict(RUN, d), allow_nan=False))
    assert [x["explained_by"] for x in data["findings"]] == [[], ["constant-input"], []]
    assert data["verdict"]["causes"] == [{"finding": 0, "id": "constant-input", "explains": [1], "explains_ids": ["stuck-at-chance"]}]
    assert data["verdict"]["alone"] == [2]
    assert data["suppressed"][0]["id"] == "vanishing-gradient-through-time" and data["suppressed"][0]["suppressed_by"] == "constant-input"
    assert finding_from_dict(data["findings"][1]).explained_by == ("constant-input",)
    message = explain("run is not healthy", diagnosis=d, meta={}, run_dir=tmp_path)
    assert "  cause: constant-input — constant-input title; which explains stuck-at-chance\n    fix: fix constant-input" in message
    assert "explained by: constant-input" in message and "withdrawn: vanishing-gradient-through-time" in message
    page = render_html(RUN, d)
    assert 'data-chain="constant-input"' in page and 'data-explained="stuck-at-chance"' in page
    assert 'data-explained-by="constant-input"' in page and 'data-withdrawn="vanishing-gradient-through-time"' in page


def test_a_check_can_demand_the_leading_cause(tmp_path):
    entry = CheckEntry(name="x", path=tmp_path / "x.toml", script=tmp_path / "x.py", cause="constant-input", fail_on="never")
    d = related(f("stuck-at-chance", "error"), f("constant-input", "error", module="lstm"))
    assert evaluate(entry, d.findings).passed
    r = evaluate(entry, related(f("constant-input", "error", step=5, module="lstm"), f("non-finite", "error", step=0)).findings)
    assert not r.passed and "leads with non-finite" in r.reasons[0]  # found, but it is not the headline
    assert "no findings" in evaluate(entry, ()).reasons[0]


def test_diagnose_relates_real_rule_findings_and_a_broken_relation_costs_only_the_verdict(monkeypatch):
    run = classification_run(400, acc=0.5, loss=0.693)
    d = diagnose(run, strict=True)
    assert "stuck-at-chance" in d.ids()

    def broken(findings, run):
        raise RuntimeError("boom")

    monkeypatch.setattr(sys.modules["rnndoctor.diagnose"], "relate", broken)  # the package's name is the function
    with pytest.raises(RuntimeError):
        diagnose(run, strict=True)
    d2 = diagnose(run)
    assert d2.ids() == d.ids() and any("relating the findings failed" in n for n in d2.notes)


def test_a_run_with_only_context_is_called_healthy():
    d = related(f("label-imbalance", "info"), f("duplicate-samples", "info"))
    assert verdict(d) == "healthy: nothing at warning or error (2 infos for context: duplicate-samples, label-imbalance)"


def test_slowish_updates_read_off_a_flat_loss_are_withdrawn_when_another_cause_flattens_it():
    slowish = {"side": "small", "median_log10_update_ratio": {"embedding.weight": -4.17}, "band": [-5.0, -1.0]}
    tiny = {"side": "small", "median_log10_update_ratio": {"lstm.weight_hh_l0": -5.54}, "band": [-5.0, -1.0]}
    d = related(f("padding-not-masked", module="lstm"), f("stuck-at-chance", "error"), f("learning-rate-scale", evidence=slowish))
    assert [s.finding.id for s in d.suppressed] == ["learning-rate-scale"] and "flat for another reason" in d.suppressed[0].reason
    kept = related(f("loss-output-mismatch", "error"), f("stuck-at-chance", "error"), f("learning-rate-scale", evidence=tiny))
    assert not kept.suppressed and "learning-rate-scale" in kept.ids()


def test_saturation_explains_dead_weights_of_its_own_module_only():
    raw = f("unnormalized-inputs", module="gru")
    own = related(raw, f("dead-parameters", evidence={"params": ["gru.weight_ih_l0", "gru.weight_hh_l0"]}))
    other = related(raw, f("dead-parameters", evidence={"params": ["head.weight"]}))
    assert own.findings[1].explained_by == ("unnormalized-inputs",) and not other.links


def test_a_horizon_of_zero_into_a_module_that_gets_no_gradient_at_all_is_withdrawn():
    """Raw inputs saturate an LSTM so that none of its parameters gets a gradient: its
    gradient-through-time profile reaches 0 steps because nothing enters it (heldout11
    y_machine_csv_windows), not because memory fades."""
    dead = f("dead-parameters", evidence={"params": ["rnn.weight_ih_l0", "rnn.weight_hh_l0"]})
    none_in = related(dead, f("vanishing-gradient-through-time", module="rnn", evidence={"horizon": 0}))
    assert [s.finding.id for s in none_in.suppressed] == ["vanishing-gradient-through-time"]
    assert "no gradient enters" in none_in.suppressed[0].reason
    fading = related(dead, f("vanishing-gradient-through-time", module="rnn", evidence={"horizon": 3}))
    elsewhere = related(f("dead-parameters", evidence={"params": ["head.weight"]}),
                        f("vanishing-gradient-through-time", module="rnn", evidence={"horizon": 0}))
    assert not fading.suppressed and not elsewhere.suppressed


def test_stale_gradients_explain_updates_that_are_too_large_not_too_small():
    """The side read is the consequence's own (learning-rate-scale's), not the cause's."""
    large = related(f("gradients-not-zeroed", step=1), f("learning-rate-scale", step=5, evidence={"side": "large"}))
    small = related(f("gradients-not-zeroed", step=1), f("learning-rate-scale", step=5, evidence={"side": "small"}))
    assert large.findings[1].explained_by == ("gradients-not-zeroed",)
    assert not small.links
