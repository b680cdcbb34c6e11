"""Outcome rules on synthetic recordings: each fires at its threshold and stays quiet below it."""

import math

import numpy as np
import pytest

from rnndoctor.finding import Severity
from rnndoctor.rules import get_rule
from synth import classification_run, grad_rows, param_rows, update_rows, with_signal

stuck = get_rule("stuck-at-chance")
collapse = get_rule("prediction-collapse")
imbalance = get_rule("label-imbalance")
non_finite = get_rule("non-finite")
divergence = get_rule("divergence")


def test_stuck_at_chance_fires_on_parity_plateau():
    (f,) = stuck(classification_run(300, acc=0.5, loss=math.log(2)))
    assert f.severity is Severity.ERROR
    assert f.evidence["baseline"] == 0.5
    assert f.evidence["baseline_kind"] == "chance 1/K"
    assert f.evidence["window"] == [200, 299]
    assert f.first_step <= 200


def test_stuck_at_chance_quiet_when_learning():
    acc = np.linspace(0.5, 1.0, 300)
    loss = np.linspace(0.693, 0.05, 300)
    assert list(stuck(classification_run(300, acc=acc, loss=loss))) == []


def test_stuck_at_chance_quiet_when_accuracy_clearly_above_baseline():
    assert list(stuck(classification_run(300, acc=0.56, loss=0.69))) == []


def test_stuck_at_chance_quiet_when_loss_well_below_entropy():
    assert list(stuck(classification_run(300, acc=0.5, loss=0.5))) == []


def test_stuck_at_chance_majority_baseline_under_mse():
    run = classification_run(300, acc=0.75, loss=0.18, label_shares=(0.25, 0.75), pred_shares=(0.0, 1.0), kind="mse", out_range=(0.4, 1.1))
    (f,) = stuck(run)
    assert f.evidence["baseline"] == 0.75
    assert f.evidence["baseline_kind"] == "majority-class share"
    assert f.evidence["reference_loss_kind"] == "target variance"
    assert math.isclose(f.evidence["reference_loss"], 0.1875)


def test_stuck_at_chance_a_noisy_loss_sitting_at_the_entropy_is_stuck():
    """A 93/7 stream in batches of 28: the loss scatters ~30 % per step around the label
    entropy (0.25), too much to be known flat within 5 %, but it is known not to fall."""
    h = -(0.93 * math.log(0.93) + 0.07 * math.log(0.07))
    run = classification_run(400, acc=0.93, loss=h, label_shares=(0.93, 0.07), pred_shares=(1.0, 0.0), batch=28, noise=0.08, seed=3)
    (f,) = stuck(run)
    assert f.evidence["baseline_kind"] == "majority-class share"
    assert f.evidence["loss_relative_decrease_upper"] < 0.1


def test_stuck_at_chance_a_noisy_loss_still_falling_is_not_stuck():
    """The same noise on a loss that falls 15 % across the window: not stuck, though the
    window's halves alone cannot show it is falling beyond noise."""
    h = -(0.93 * math.log(0.93) + 0.07 * math.log(0.07))
    loss = np.concatenate([np.full(300, h), np.linspace(h, 0.85 * h, 100)])
    run = classification_run(400, acc=0.93, loss=loss, label_shares=(0.93, 0.07), pred_shares=(1.0, 0.0), batch=28, noise=0.08, seed=3)
    assert list(stuck(run)) == []


def test_stuck_at_chance_needs_enough_steps():
    assert list(stuck(classification_run(60, acc=0.5, loss=0.693))) == []


def test_prediction_collapse_fires_and_names_the_class():
    run = classification_run(300, acc=0.75, loss=0.18, label_shares=(0.25, 0.75), pred_shares=(0.02, 0.98))
    (f,) = collapse(run)
    assert f.where["class"] == 1 and f.evidence["prediction_share"] >= 0.95
    assert f.evidence["label_share"] == 0.75


def test_prediction_collapse_quiet_when_predictions_follow_labels():
    run = classification_run(300, acc=0.9, loss=0.2, label_shares=(0.25, 0.75), pred_shares=(0.22, 0.78))
    assert list(collapse(run)) == []


def test_prediction_collapse_quiet_when_labels_are_that_skewed():
    run = classification_run(300, acc=0.96, loss=0.2, label_shares=(0.04, 0.96), pred_shares=(0.0, 1.0))
    assert list(collapse(run)) == []


def test_label_imbalance_threshold():
    (f,) = imbalance(classification_run(100, label_shares=(0.25, 0.75)))
    assert f.severity is Severity.INFO and f.evidence["majority_share"] == 0.75
    assert list(imbalance(classification_run(100, label_shares=(0.35, 0.65)))) == []
    assert list(imbalance(classification_run(100, label_shares=(0.5, 0.5)))) == []


def test_non_finite_names_the_module_and_time_step():
    run = classification_run(10, loss=[float("nan")] * 10)
    run = with_signal(run, nonfinite=[{"step": 0, "any": 1, "module": "cell", "call": 212, "t": None, "outputs_bad": 1, "calls_checked": 900}])
    (f,) = non_finite(run)
    assert f.where == {"module": "cell", "call": 212, "step": 0}
    assert f.first_step == 0


def _act(module: str, frac_large: float, step: int = 0) -> dict:
    return {"step": step, "module": module, "calls": 400, "numel": 12800, "mean": 1.0, "std": 1.0,
            "abs_max": 10.0, "frac_large": frac_large, "frac_zero": 0.0, "frac_nonfinite": 0.0}


@pytest.mark.parametrize("gate_share,named", [(1.0, True), (0.3, False)])
def test_non_finite_names_saturated_submodules_of_a_hand_written_cell(gate_share, named):
    """Seed 003: the overflowing cell's gate Linears sat at |z| = 10; a cell whose gates did
    not is named without that sentence; modules outside the cell never are."""
    run = classification_run(10, loss=[float("nan")] * 10)
    acts = [_act("cell.forgetgate", gate_share), _act("cell.ingate", gate_share), _act("readout", 1.0), _act("cell.forgetgate", 1.0, step=1)]
    run = with_signal(run, nonfinite=[{"step": 0, "any": 1, "module": "cell", "call": 297, "t": None, "outputs_bad": 1, "calls_checked": 900}],
                      activations=acts)
    (f,) = non_finite(run)
    if named:
        assert set(f.evidence["saturated_inside"]) == {"cell.forgetgate", "cell.ingate"}
        assert "'cell.forgetgate'" in f.explanation and "pinned gates" in f.explanation
    else:
        assert "saturated_inside" not in f.evidence and "pinned gates" not in f.explanation


def test_non_finite_names_a_parameter_made_nan_by_an_update():
    weight = {"lstm.weight_hh_l0": [5.0] * 4 + [float("nan")] * 6, "lstm.bias_hh_l0": [1.0] * 10, "out.weight": [1.0] * 4 + [float("nan")] * 6}
    loss = [0.7] * 5 + [float("nan")] * 5
    run = with_signal(classification_run(10, loss=loss), params=grad_rows(param_rows(10, weight_norm=weight)), updates=update_rows(param_rows(10, weight_norm=weight)))
    (f,) = non_finite(run)
    assert f.where["step"] == 4 and f.where["param"] in ("lstm.weight_hh_l0", "out.weight")
    assert f.evidence["source"] == "optimizer-step"


def test_non_finite_quiet_on_finite_run():
    run = with_signal(classification_run(50), params=param_rows(50), nonfinite=[{"step": 0, "any": 0, "module": None, "call": None, "t": None, "outputs_bad": 0, "calls_checked": 3}])
    assert list(non_finite(run)) == []


def test_divergence_on_exploding_loss():
    loss = list(np.linspace(1.0, 0.5, 50)) + [0.5 * 10 ** (i / 5) for i in range(30)]
    (f,) = divergence(classification_run(80, loss=loss))
    assert f.first_step > 50
    assert list(divergence(classification_run(80, loss=np.linspace(1.0, 0.2, 80)))) == []


def test_divergence_is_not_three_hard_samples_of_a_batch_of_one():
    """Batch size 1 on a 20 %-positive task: most samples cost ~0.01, a hard one ~2. Three
    hard ones in a row sit 10x above the best step and 3x above the first: noise, not a
    climb. A loss that really climbs by orders of magnitude still diverges."""
    rng = np.random.default_rng(0)
    n = 600
    loss = np.where(rng.random(n) < 0.2, rng.uniform(1.0, 2.5, n), rng.uniform(0.005, 0.05, n))
    loss[:3] = 0.5
    loss[300:303] = 2.0
    assert list(divergence(classification_run(n, loss=loss))) == []
    climbing = loss.copy()
    climbing[400:] = 0.5 * 10 ** (np.arange(200) / 20)
    (f,) = divergence(classification_run(n, loss=climbing))
    assert 400 <= f.first_step < 430


def test_divergence_on_huge_weights():
    w = {"lstm.weight_hh_l0": [5.0] * 5 + [1e12] * 5, "lstm.bias_hh_l0": [1.0] * 10, "out.weight": [1.0] * 10}
    run = with_signal(classification_run(10, loss=0.7), updates=update_rows(param_rows(10, weight_norm=w)))
    (f,) = divergence(run)
    assert f.where["param"] == "lstm.weight_hh_l0" and f.first_step == 5


def test_stuck_at_chance_waits_for_evidence_when_the_loss_is_noisy():
    """Batch size 1 (the real-programs issue's name classifier): per-step losses scatter by
    ±0.6 around the entropy. Its halves cannot show the loss is flat: too early to tell."""
    noisy = classification_run(300, acc=0.5, loss=math.log(2), batch=2, noise=0.6, seed=3)
    assert list(stuck(noisy)) == []
    calm = classification_run(300, acc=0.5, loss=math.log(2), batch=2, noise=0.01, seed=1)
    assert [f.id for f in stuck(calm)] == ["stuck-at-chance"]


def test_prediction_collapse_waits_while_the_loss_still_falls():
    """A young model that predicts the majority class while its loss falls beyond noise is
    learning its way out; the same shares with a flat loss are a collapse."""
    shares = dict(label_shares=(0.25, 0.75), pred_shares=(0.02, 0.98))
    falling = classification_run(300, acc=0.75, loss=np.linspace(0.9, 0.45, 300), noise=0.05, **shares)
    assert list(collapse(falling)) == []
    flat = classification_run(300, acc=0.75, loss=0.56, noise=0.05, **shares)
    assert [f.id for f in collapse(flat)] == ["prediction-collapse"]


def test_prediction_collapse_a_negative_nll_is_not_a_loss_that_learns():
    """NLL fed raw logits falls without bound below zero: its fall is no excuse."""
    shares = dict(label_shares=(0.31, 0.35, 0.34), pred_shares=(1.0, 0.0, 0.0))
    unbounded = classification_run(300, acc=0.31, loss=np.linspace(-1, -35, 300), kind="nll", **shares)
    assert [f.id for f in collapse(unbounded)] == ["prediction-collapse"]
    valid = classification_run(300, acc=0.31, loss=np.linspace(1.5, 0.6, 300), kind="nll", noise=0.02, **shares)
    assert list(collapse(valid)) == []


def _with_class_weights(run, weights):
    steps = run["steps"].copy()
    steps["class_weight"] = [list(weights) if s % 10 == 0 else None for s in steps["step"]]
    frames = dict(run.signals)
    frames["steps"] = steps
    return type(run)(meta=run.meta, signals=frames)


def test_prediction_collapse_class_weights_that_favour_the_majority():
    """Frequencies passed as class weights push a 95/5 task onto its majority: the 80 % cap
    (a calibrated model may rightly predict that majority) no longer excuses it; inverse
    weights, or a model that still predicts the minority now and then, stay quiet."""
    shares = dict(label_shares=(0.95, 0.05), pred_shares=(1.0, 0.0))
    run = classification_run(300, acc=0.95, loss=0.02, noise=0.002, **shares)
    assert list(collapse(run)) == []  # no weights: the cap holds
    (f,) = collapse(_with_class_weights(run, (0.95, 0.05)))
    assert f.where["class"] == 0 and f.evidence["class_weights"] == [0.95, 0.05]
    assert list(collapse(_with_class_weights(run, (0.53, 10.2)))) == []
    mixed = classification_run(300, acc=0.95, loss=0.02, noise=0.002, label_shares=(0.95, 0.05), pred_shares=(0.96, 0.04))
    assert list(collapse(_with_class_weights(mixed, (0.95, 0.05)))) == []


def _regression_run(loss, *, kind="mse", pooled_var=1.0, chan_sqdev=None, l1_dev=None, n=300, noise=0.002, seed=0):
    """Continuous targets (not labels): detail rows every 10th step carry the pooled moments
    and, when given, the per-channel spreads (per element)."""
    rng = np.random.default_rng(seed)
    losses = np.broadcast_to(np.asarray(loss, float), (n,)) + noise * rng.standard_normal(n)
    steps = []
    for s in range(n):
        row = {"step": s, "mode": "train", "loss": float(losses[s]), "loss_finite": 1, "loss_kind": kind, "loss_calls": 1, "lr": 0.01}
        if s % 10 == 0:
            row.update(out_min=-1.0, out_max=1.0, tgt_n=100, tgt_sum=0.0, tgt_sqsum=100 * pooled_var, tgt_min=-3.1, tgt_max=3.3,
                       tgt_integral=0)
            if chan_sqdev is not None or l1_dev is not None:
                row["tgt_elems"] = 100
            if chan_sqdev is not None:
                row["tgt_spread_sq"] = 100 * chan_sqdev
            if l1_dev is not None:
                row["tgt_spread_abs"] = 100 * l1_dev
        steps.append(row)
    from synth import make_run
    return make_run(steps=steps)


def test_stuck_at_chance_several_outputs_are_judged_within_each_channel():
    """Eight outputs with different means: the pooled variance (0.6) counts the gaps between
    the channels' means, which predicting each channel's mean already closes (0.3). A run at
    0.3 learned nothing from its input."""
    assert list(stuck(_regression_run(0.30, pooled_var=0.6))) == []  # older record: pooled only
    (f,) = stuck(_regression_run(0.30, pooled_var=0.6, chan_sqdev=0.3))
    assert f.evidence["reference_loss"] == 0.3 and "MSE" in f.title
    assert list(stuck(_regression_run(0.05, pooled_var=0.6, chan_sqdev=0.3))) == []


def test_stuck_at_chance_under_l1_reads_the_median_predictor():
    (f,) = stuck(_regression_run(0.637, kind="l1", l1_dev=0.636))
    assert "L1" in f.title and f.evidence["reference_loss_kind"].startswith("target mean absolute deviation")
    assert list(stuck(_regression_run(0.05, kind="l1", l1_dev=0.636))) == []


def test_stuck_at_chance_a_noisy_regression_loss_is_compared_batch_by_batch():
    """Sensor windows in physical units: the per-batch MSE scatters 0.06-0.75, too much for a
    trend, but on every class-count step it equals what each channel's batch mean scores on
    that batch: stuck. A model at a fifth of it on the same batches learned."""
    rng = np.random.default_rng(1)
    spread = rng.uniform(0.05, 0.8, 300)  # the mean predictor's MSE on each batch

    def run(ratio):
        r = _regression_run(0.0, pooled_var=0.6)  # the spreads: every 4th step, below
        steps = r["steps"].copy()
        steps["loss"] = spread * ratio * (1 + 0.02 * rng.standard_normal(300))
        every4 = steps["step"] % 4 == 0
        steps.loc[every4, "tgt_elems"] = 100
        steps.loc[every4, "tgt_spread_sq"] = 100 * spread[every4.to_numpy()]
        from synth import make_run
        return make_run(steps=steps)

    (f,) = stuck(run(1.0))
    assert f.evidence["paired_ratio_lower"] > 0.9 and f.evidence["paired_steps"] == 25
    assert list(stuck(run(0.2))) == []


def test_non_finite_an_overflowed_norm_of_finite_weights_is_not_non_finite():
    """Weights beyond ~1e19 per element are finite, but their float32 norm is inf: with the
    loss still finite on the next steps the values were huge, not NaN/Inf. The same inf
    norm followed at once by a non-finite loss is a non-finite parameter."""
    weight = {"lstm.weight_hh_l0": [5.0] + [float("inf")] * 9, "lstm.bias_hh_l0": [1.0] * 10, "out.weight": [1.0] * 10}
    rows = param_rows(10, weight_norm=weight)
    huge = with_signal(classification_run(10, loss=[0.7] + [1e26] * 9), params=grad_rows(rows), updates=update_rows(rows))
    assert list(non_finite(huge)) == []
    blown = with_signal(classification_run(10, loss=[0.7, 0.7] + [float("nan")] * 8), params=grad_rows(rows),
                        updates=update_rows(rows))
    (f,) = non_finite(blown)
    assert f.evidence["first_nonfinite_parameter"]["step"] == 1
