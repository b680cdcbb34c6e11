"""Wiring rules (initial loss, loss/output fit) on synthetic recordings."""
import math

from rnndoctor.finding import Severity
from rnndoctor.rules import get_rule
from synth import classification_run, make_run

initial = get_rule("poor-initial-loss")
mismatch = get_rule("loss-output-mismatch")


def test_poor_initial_loss_fires_far_from_ln2():
    loss = [5.0] * 3 + [0.6] * 97
    (f,) = initial(classification_run(100, loss=loss))
    assert f.severity is Severity.WARNING and abs(f.evidence["expected"] - 0.693) < 1e-3
    (g,) = initial(classification_run(100, loss=[1.2] * 3 + [0.6] * 97))
    assert g.severity is Severity.INFO


def test_poor_initial_loss_quiet_near_ln2():
    assert list(initial(classification_run(100, loss=[0.72] * 3 + [0.3] * 97))) == []


def test_mse_on_binary_labels_from_linear_output_is_an_error():
    run = classification_run(100, kind="mse", label_shares=(0.25, 0.75), out_range=(-0.3, 1.4), loss=0.18)
    (f,) = mismatch(run)
    assert f.severity is Severity.ERROR and "unbounded linear" in f.title


def test_mse_on_binary_labels_from_sigmoid_output_is_a_warning():
    run = classification_run(100, kind="mse", label_shares=(0.25, 0.75), out_range=(0.01, 0.99), loss=0.18)
    (f,) = mismatch(run)
    assert f.severity is Severity.WARNING


def test_mse_on_real_valued_regression_targets_is_fine():
    run = classification_run(100, kind="mse", label_shares=(0.25, 0.75), out_range=(-1, 2))
    steps = run["steps"]
    steps.loc[steps["tgt_integral"].notna(), "tgt_integral"] = 0
    assert list(mismatch(run)) == []


def test_softmax_before_cross_entropy():
    (f,) = mismatch(classification_run(100, out_range=(0.0, 1.0), out_is_prob=1))
    assert "probabilities" in f.title
    assert list(mismatch(classification_run(100))) == []


def test_nll_without_log_softmax():
    (f,) = mismatch(classification_run(100, kind="nll", out_is_logprob=0))
    assert "log-probabilities" in f.title
    assert list(mismatch(classification_run(100, kind="nll", out_is_logprob=1, out_range=(-5, 0)))) == []


def test_bce_with_logits_on_probabilities():
    (f,) = mismatch(classification_run(100, kind="bce_logits", out_range=(0.02, 0.97)))
    assert f.severity is Severity.WARNING
    assert list(mismatch(classification_run(100, kind="bce_logits", out_range=(-4, 4)))) == []


def _with_op(run, op):
    steps = run["steps"]
    steps.loc[steps["out_min"].notna(), "out_op"] = op
    return run


def test_linear_output_is_judged_by_the_op_not_the_observed_range():
    # a linear output stuck at the class mean stays inside [0, 1] but is still unbounded
    run = _with_op(classification_run(100, kind="mse", label_shares=(0.25, 0.75), out_range=(0.7, 0.8)), "AddBackward0")
    (f,) = mismatch(run)
    assert f.severity is Severity.ERROR and f.evidence["output_op"] == "AddBackward0"
    run = _with_op(classification_run(100, kind="mse", label_shares=(0.25, 0.75), out_range=(0.7, 0.8)), "SigmoidBackward0")
    (g,) = mismatch(run)
    assert g.severity is Severity.WARNING


def test_softmax_op_before_cross_entropy():
    (f,) = mismatch(_with_op(classification_run(100), "SoftmaxBackward0"))
    assert "probabilities" in f.title
    assert list(mismatch(_with_op(classification_run(100), "AddmmBackward0"))) == []


def test_poor_initial_loss_reference_is_ln_k_not_the_label_entropy():
    """18 skewed classes (label entropy ~1.8): an untrained model's uniform guess scores
    ln 18 = 2.89, which is right, not "59 % away from 1.79" (real-programs issue)."""
    shares = [0.5] + [0.5 / 17] * 17
    run = classification_run(100, loss=[math.log(18)] * 3 + [1.5] * 97, label_shares=shares)
    assert list(initial(run)) == []


def test_poor_initial_loss_reads_the_loss_before_any_update():
    """Step 0's loss is the untrained one; steps 1-2 already carry big updates (LBFGS, a
    rate that diverges): their losses say nothing about the initialisation."""
    assert list(initial(classification_run(100, loss=[0.7, 40.0, 60.0] + [0.6] * 97))) == []
    (f,) = initial(classification_run(100, loss=[5.0, 0.7, 0.7] + [0.6] * 97))
    assert f.severity is Severity.WARNING


def test_a_low_initial_loss_is_only_info():
    (f,) = initial(classification_run(100, loss=[0.2] * 3 + [0.1] * 97))
    assert f.severity is Severity.INFO


def test_poor_initial_loss_under_mse_warns_only_when_the_outputs_are_badly_scaled():
    """0/1 targets (mean square 0.5) against outputs of -0.25 at the first step give a first
    MSE more than twice that from where the targets sit: info, the start is fine. The same
    gap with outputs of +-8 is a badly scaled output layer: a warning."""
    small = classification_run(100, kind="mse", out_range=(-0.25, -0.19), loss=[1.2] * 3 + [0.1] * 97)
    (f,) = initial(small)
    assert f.severity is Severity.INFO and math.isclose(f.evidence["expected"], 0.5)
    large = classification_run(100, kind="mse", out_range=(-8.0, 8.0), loss=[1.2] * 3 + [0.1] * 97)
    (g,) = initial(large)
    assert g.severity is Severity.WARNING


def test_poor_initial_loss_not_judged_on_a_mean_of_unlike_losses():
    """A main 2-class loss and an auxiliary next-token NLL in each step: the recorded loss
    is their mean (1.44), which ln 2 does not describe. The same first loss from one loss
    is reported."""
    rows = [{"step": s, "mode": "train", "loss": 1.44, "loss_kind": "cross_entropy", "n_classes": 2,
             "correct": 50, "total": 100} for s in range(50)]
    assert [f.id for f in initial(make_run(steps=rows))] == ["poor-initial-loss"]
    mixed = [dict(r, loss_calls=2, loss_mixed=1) for r in rows]
    assert list(initial(make_run(steps=mixed))) == []
