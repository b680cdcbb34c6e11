"""Gate and cell-state rules on synthetic recordings."""

import numpy as np

from rnndoctor.finding import Severity
from rnndoctor.rules import get_rule
from synth import classification_run, make_run, with_signal

forget = get_rule("forget-gate-saturation")
saturation = get_rule("gate-saturation")
growth = get_rule("cell-state-growth")


def gate_rows(gate, low, high, steps=(0, 1, 2, 25, 50, 75, 100)):
    sat = low + high
    return [{"step": s, "module": "lstm", "layer": 0, "direction": 0, "gate": gate, "frac_low": low, "frac_high": high,
             "frac_saturated": sat, "mean": 0.5, "p10": 0.1, "p50": 0.5, "p90": 0.9} for s in steps]


def cell_rows(profile, bias, steps=(0, 1, 2, 25, 50)):
    return [{"step": s, "module": "lstm", "layer": 0, "direction": 0, "c_norm": list(profile), "forget_bias": list(bias)} for s in steps]


def test_forget_gates_pinned_by_extreme_bias_is_an_error():
    run = make_run(gates=gate_rows("f", 0.2, 0.8), cell=cell_rows(np.ones(30), [10.0] * 25 + [-10.0] * 7))
    (f,) = forget(run)
    assert f.severity is Severity.ERROR and f.evidence["mean_abs_forget_bias"] == 10.0
    assert f.where["gate"] == "f" and f.evidence["share_pinned"] == 1.0


def test_forget_gate_finding_names_the_pinned_unit_ranges():
    """Seed 003: the forget gate is shut on the 7 pass-through units and open on the rest."""
    rows = gate_rows("f", 0.2, 0.8)
    for r in rows:
        r["unit_mean"] = [0.0001] * 7 + [0.9999] * 25
    (f,) = forget(make_run(gates=rows, cell=cell_rows(np.ones(30), [-10.0] * 7 + [10.0] * 25)))
    assert f.where["units"] == "0-6 closed; 7-31 open of 32"
    assert f.evidence["units_pinned"] == {"low": list(range(7)), "high": list(range(7, 32))}
    middle = gate_rows("f", 0.2, 0.8)
    for r in middle:
        r["unit_mean"] = [0.5] * 32  # pinned entries spread over units that are not pinned on average
    (g,) = forget(make_run(gates=middle, cell=cell_rows(np.ones(30), [10.0] * 32)))
    assert "units" not in g.where


def test_forget_gates_pinned_without_extreme_bias_warns_only_when_not_learning():
    stuck = classification_run(300, acc=0.5, loss=0.693)
    run = with_signal(stuck, gates=gate_rows("f", 0.0, 0.95), cell=cell_rows(np.ones(30), [2.0] * 32))
    (f,) = forget(run)
    assert f.severity is Severity.WARNING
    learning = classification_run(300, acc=np.linspace(0.5, 1, 300), loss=np.linspace(0.7, 0.05, 300))
    assert list(forget(with_signal(learning, gates=gate_rows("f", 0.0, 0.95), cell=cell_rows(np.ones(30), [2.0] * 32)))) == []


def test_forget_gates_in_the_middle_are_fine():
    assert list(forget(make_run(gates=gate_rows("f", 0.01, 0.1), cell=cell_rows(np.ones(30), [1.0] * 32)))) == []


def test_forget_gates_saturating_late_in_training_are_fine():
    rows = gate_rows("f", 0.0, 0.2, steps=(0, 1, 2, 25)) + gate_rows("f", 0.0, 0.99, steps=(75, 100, 125, 150))
    assert list(forget(make_run(gates=rows, cell=cell_rows(np.ones(30), [10.0] * 32)))) == []


def test_gate_saturation():
    (f,) = saturation(make_run(gates=gate_rows("i", 0.1, 0.6) + gate_rows("f", 0.0, 1.0)))
    assert f.where["gate"] == "i" and f.evidence["share_saturated"] == 0.7
    assert list(saturation(make_run(gates=gate_rows("i", 0.1, 0.2)))) == []


def test_gate_saturation_of_a_run_that_solved_its_task_is_information():
    """Chrono initialisation shuts the input gates on purpose; the model then solves its task
    (loss 0.1 % of the label entropy): information. The same gates with a loss at chance,
    or at 67 % of it (seed 003's pinned gates), stay a warning."""
    gates = gate_rows("i", 0.57, 0.0)
    for loss, severity in ((0.0015, Severity.INFO), (0.9, Severity.WARNING), (0.693, Severity.WARNING)):
        acc = 1.0 if loss < 0.01 else 0.5
        run = classification_run(300, acc=acc, loss=loss, noise=0.0001)
        (f,) = saturation(with_signal(run, gates=gates))
        assert f.severity is severity, loss


def test_cell_state_growth():
    t = np.arange(1, 301)
    (f,) = growth(make_run(cell=cell_rows(1.5 * t, [10.0] * 32)))
    assert f.evidence["sequence_length"] == 300 and f.evidence["c_norm_last"] > 3 * f.evidence["c_norm_quarter"]
    bounded = 2.5 * (1 - np.exp(-t / 5))
    assert list(growth(make_run(cell=cell_rows(bounded, [1.0] * 32)))) == []
    short = np.arange(1, 9) * 1.0  # 8 steps: accumulating evidence over a short sequence is fine
    assert list(growth(make_run(cell=cell_rows(short, [1.0] * 32)))) == []


def test_cell_state_growth_is_read_up_to_the_overflow():
    """A cell that accumulates until it overflows (seed 003): judged on the finite part."""
    t = np.arange(1, 301, dtype=float)
    grows = np.where(t < 150, np.exp(t / 10), np.nan)
    (f,) = growth(make_run(cell=cell_rows(grows, [10.0] * 32)))
    assert f.evidence["sequence_length"] == 149
    nan_only = np.full(300, np.nan)
    assert list(growth(make_run(cell=cell_rows(nan_only, [10.0] * 32)))) == []
