"""The seed reproductions under watch(): the acceptance evidence of each diagnosis.

(`test_checks.py` runs every fixture through the CLI against checks/*.toml; here three
seeds are run in-process under `watch()` and their evidence is checked in detail.)
"""

import importlib.util
from pathlib import Path

import pytest

import rnndoctor
from rnndoctor.finding import Severity

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"


def run_fixture(name, tmp_path, *argv):
    spec = importlib.util.spec_from_file_location(f"fixture_{name}", FIXTURES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    with rnndoctor.watch(out=tmp_path / name, summary=False, strict=True) as run:
        module.main(list(argv))
    return run


def by_id(run):
    return {f.id: f for f in run.findings}


def test_seed_000_parity_is_stuck_at_chance_with_baseline_half(tmp_path):
    found = by_id(run_fixture("parity_stuck", tmp_path))
    f = found["stuck-at-chance"]
    assert f.severity is Severity.ERROR
    assert f.evidence["baseline"] == pytest.approx(0.5, abs=0.03)
    assert f.evidence["baseline_kind"] == "chance 1/K"
    assert f.evidence["reference_loss"] == pytest.approx(0.693, abs=0.01)


def test_seed_002_or_under_mse_is_reported_against_the_majority_share(tmp_path):
    found = by_id(run_fixture("or_mse_stuck", tmp_path))
    assert found["loss-output-mismatch"].severity is Severity.ERROR
    assert found["prediction-collapse"].evidence["label_share"] == pytest.approx(0.75, abs=0.02)
    assert found["stuck-at-chance"].evidence["baseline"] == pytest.approx(0.75, abs=0.02)
    assert found["label-imbalance"].evidence["majority_share"] == pytest.approx(0.75, abs=0.02)


def test_seed_003_nan_is_traced_to_the_cell_and_its_time_step(tmp_path):
    run = run_fixture("identity_lstm_nan", tmp_path, "--steps", "3")
    f = by_id(run)["non-finite"]
    assert f.where["module"] == "cell"
    assert f.where["step"] == 0
    assert 200 <= f.where["call"] <= 400  # the time step at which |h| overflows
    assert run.record.meta["status"] == "completed"
    # its Linears' outputs show the ±10
    assert {"cell.ingate", "cell.forgetgate", "cell.outgate"} <= set(f.evidence["saturated_inside"])
    # and the cell, read by dataflow on the weights of its first step, is the cause: forget
    # gates pinned shut on the pass-through units and open on the rest, the cell state
    # growing until it overflows
    lead = run.findings[0]
    assert lead.id == "forget-gate-saturation" and lead.where["units"] == "0-6 closed; 7-63 open of 64"
    assert f.explained_by and "forget-gate-saturation" in by_id(run)["cell-state-growth"].explained_by


def test_seed_003_on_a_fused_lstm_names_the_pinned_units(tmp_path):
    """The recipe shuts the forget gate on the 7 pass-through units and opens it on the rest."""
    f = by_id(run_fixture("lstm_saturated_gates", tmp_path, "--steps", "20"))["forget-gate-saturation"]
    assert f.where["units"] == "0-6 closed; 7-31 open of 32"


@pytest.mark.parametrize("name", ["parity_healthy", "or_bce_healthy", "identity_lstm_healthy"])
def test_healthy_twins_have_no_errors(tmp_path, name):
    run = run_fixture(name, tmp_path)
    assert [f.id for f in run.findings if f.severity is Severity.ERROR] == []
