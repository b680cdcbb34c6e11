"""Gradient rules on synthetic recordings."""

import numpy as np

from rnndoctor.finding import Severity
from rnndoctor.rules import get_rule
from synth import classification_run, make_run, param_rows, update_rows, with_signal

exploding = get_rule("exploding-gradients")
dead = get_rule("dead-parameters")
lr_scale = get_rule("learning-rate-scale")


def _with_grad_norms(norms, loss=0.3):
    run = classification_run(len(norms), acc=0.8, loss=loss)
    steps = run["steps"].copy()
    steps["grad_norm"] = norms
    return make_run(steps=steps, predictions=run["predictions"], params=param_rows(len(norms)))


def test_exploding_gradients_spikes_that_set_the_loss_back():
    g = np.ones(200)
    loss = np.full(200, 0.3)
    for s in (60, 90, 120):
        g[s] = 30.0
        loss[s : s + 10] = 0.6
    (f,) = exploding(_with_grad_norms(g, loss))
    assert f.evidence["spikes"] == 3 and f.first_step == 60


def test_exploding_gradients_quiet_on_spikes_the_run_shrugs_off():
    g = np.ones(200)
    g[[60, 90, 120]] = 30.0
    assert list(exploding(_with_grad_norms(g, np.linspace(0.7, 0.1, 200)))) == []


def test_exploding_gradients_without_a_recorded_loss_counts_only_huge_spikes():
    """A hand-written loss is not recorded, so no setback can be read: three 30x spikes
    say nothing by themselves, one of 150x does."""
    g = np.ones(200)
    g[[60, 90, 120]] = 30.0
    steps = _with_grad_norms(g)["steps"].drop(columns=["loss"])
    assert list(exploding(make_run(steps=steps, params=param_rows(200)))) == []
    g[150] = 150.0
    steps = _with_grad_norms(g)["steps"].drop(columns=["loss"])
    (f,) = exploding(make_run(steps=steps, params=param_rows(200)))
    assert f.evidence["worst_step"] == 150 and f.evidence["spikes"] == 1


def test_exploding_gradients_an_early_spike_that_throws_the_loss_back():
    """pytorch/examples word_language_model without clipping at lr 20: at step 5 the norm
    jumps ~40x the median of the first steps and the loss goes from 7.5 to 11-25."""
    g = np.full(200, 0.2)
    g[5] = 8.0
    loss = np.full(200, 7.5)
    loss[5:15] = 12.0
    (f,) = exploding(_with_grad_norms(g, loss))
    assert f.evidence["worst_step"] == 5
    mild = np.full(200, 7.5)
    mild[5:15] = 8.5  # set back by 13 %: one such spike is the texture of training
    assert list(exploding(_with_grad_norms(g, mild))) == []


def test_exploding_gradients_a_batch_of_one_hard_sample_is_not_a_setback():
    """Batch size 1: a hard sample gives a large loss and a large gradient in the same step,
    and 10-step means of single samples scatter widely; the spike's own loss is not harm,
    and a later mean within that noise is not either. The same spikes with the loss truly
    thrown back (every step after them higher) still count."""
    rng = np.random.default_rng(0)
    loss = np.where(rng.random(400) < 0.1, rng.uniform(0.3, 1.0, 400), rng.uniform(0.001, 0.05, 400))
    g = np.ones(400)
    for s in (150, 250, 350):
        g[s], loss[s] = 30.0, 1.5
    assert list(exploding(_with_grad_norms(g, loss))) == []
    thrown = loss.copy()
    for s in (150, 250, 350):
        thrown[s + 1:s + 11] = 0.9
    (f,) = exploding(_with_grad_norms(g, thrown))
    assert f.evidence["spikes"] == 3


def test_exploding_gradients_near_convergence_a_doubled_tiny_loss_is_no_harm():
    """A run that went from 0.69 to 0.002: a spike that takes it to 0.006 for a while is far
    below where it started (setbacks are measured from a tenth of the starting loss)."""
    loss = np.concatenate([np.linspace(0.69, 0.002, 100), np.full(200, 0.002)])
    g = np.ones(300)
    g[200] = 40.0
    loss[201:211] = 0.006
    assert list(exploding(_with_grad_norms(g, loss))) == []
    loss[201:211] = 0.5  # thrown back to most of the way it came: harm
    (f,) = exploding(_with_grad_norms(g, loss))
    assert f.evidence["worst_step"] == 200


def test_exploding_gradients_one_huge_spike():
    g = np.ones(200)
    g[150] = 500.0
    (f,) = exploding(_with_grad_norms(g))
    assert f.evidence["worst_step"] == 150


def test_exploding_gradients_quiet_on_noise_and_two_small_spikes():
    rng = np.random.default_rng(0)
    g = np.exp(rng.normal(0, 0.5, 300))
    g[[100, 200]] = 30.0
    assert list(exploding(_with_grad_norms(g))) == []


def test_exploding_gradients_steady_growth():
    g = 1.5 ** (np.arange(300) / 10)
    (f,) = exploding(_with_grad_norms(g))
    assert "window_medians" in f.evidence or f.evidence["spikes"] >= 1


def test_dead_parameters():
    grad = {"lstm.weight_hh_l0": 1.0, "lstm.bias_hh_l0": 0.5, "out.weight": float("nan")}
    run = make_run(params=param_rows(20, grad=grad, grad_none={"out.weight": 1}))
    (f,) = dead(run)
    assert f.evidence["params"] == ["out.weight"]
    assert list(dead(make_run(params=param_rows(20)))) == []


def test_dead_parameters_zero_gradients_count_too():
    grad = {"lstm.weight_hh_l0": 0.0, "lstm.bias_hh_l0": 0.5, "out.weight": 1.0}
    (f,) = dead(make_run(params=param_rows(20, grad=grad)))
    assert f.evidence["params"] == ["lstm.weight_hh_l0"]


def test_learning_rate_scale_bands():
    (small,) = lr_scale(make_run(updates=update_rows(param_rows(100, update_ratio=1e-7))))
    assert "barely" in small.title
    (large,) = lr_scale(make_run(updates=update_rows(param_rows(100, update_ratio=0.5))))
    assert "thrash" in large.title
    assert list(lr_scale(make_run(updates=update_rows(param_rows(100, update_ratio=1e-3))))) == []
    assert list(lr_scale(make_run(updates=update_rows(param_rows(100, update_ratio=2e-5))))) == []


def test_dead_parameters_ignores_nan_gradients():
    grad = {"lstm.weight_hh_l0": float("nan"), "lstm.bias_hh_l0": 0.5, "out.weight": 1.0}
    assert list(dead(make_run(params=param_rows(20, grad=grad)))) == []


def test_learning_rate_scale_withheld_on_a_single_update():
    """A script that crashed at step 1 recorded one update: no "multiply the learning rate
    by 0.0071" from it (real-programs issue); a few more are enough."""
    assert list(lr_scale(make_run(updates=update_rows(param_rows(1, update_ratio=0.5))))) == []
    assert [f.id for f in lr_scale(make_run(updates=update_rows(param_rows(12, update_ratio=0.5))))] == ["learning-rate-scale"]


def test_dead_parameters_judged_before_the_loss_blew_up():
    """LBFGS at a rate of 5 blows the loss up within its first step: the LSTM's units saturate
    and their gradients are exactly zero from then on. That is the blow-up, not wiring."""
    grad = {"lstm.weight_hh_l0": 0.0, "lstm.bias_hh_l0": 0.5, "out.weight": 1.0}
    blown = [{"step": s, "mode": "train", "loss": 0.5 if s == 0 else 10.0 ** (3 + 10 * min(s, 25))} for s in range(20)]
    assert list(dead(make_run(steps=blown, params=param_rows(20, grad=grad)))) == []
    calm = [{"step": s, "mode": "train", "loss": 0.5 - 0.01 * s} for s in range(20)]
    (f,) = dead(make_run(steps=calm, params=param_rows(20, grad=grad)))
    assert f.evidence["params"] == ["lstm.weight_hh_l0"]


def test_learning_rate_scale_does_not_call_an_lbfgs_step_too_large():
    """One LBFGS step is up to max_iter line-searched iterations: a healthy one moves the
    weights by a tenth (pytorch/examples time_sequence_prediction). Too small still counts."""
    from rnndoctor.run import Run

    def with_opt(run, name):
        return Run(meta={**run.meta, "optimizers": [name]}, signals=run.signals)

    large = make_run(updates=update_rows(param_rows(100, update_ratio=0.15)))
    assert list(lr_scale(with_opt(large, "LBFGS"))) == []
    assert [f.id for f in lr_scale(with_opt(large, "Adam"))] == ["learning-rate-scale"]
    small = make_run(updates=update_rows(param_rows(100, update_ratio=1e-7)))
    assert [f.id for f in lr_scale(with_opt(small, "LBFGS"))] == ["learning-rate-scale"]


def test_learning_rate_scale_a_slow_bulk_with_a_flat_loss_is_too_small():
    """Adam at 1e-6 (spro/char-rnn at lr 1e-6): weights move ~1e-4.8 per step and the loss
    stays at ln K. The same ratio while the loss falls is a slow, working rate."""
    ups = update_rows(param_rows(100, update_ratio=10 ** -4.8))
    flat = [{"step": s, "mode": "train", "loss": 4.6 + 0.01 * np.sin(s)} for s in range(100)]
    falling = [{"step": s, "mode": "train", "loss": 4.6 * np.exp(-s / 50)} for s in range(100)]
    (f,) = lr_scale(make_run(updates=ups, steps=flat))
    assert "barely" in f.title
    assert list(lr_scale(make_run(updates=ups, steps=falling))) == []
    healthy = update_rows(param_rows(100, update_ratio=10 ** -3.3))
    assert list(lr_scale(make_run(updates=healthy, steps=flat))) == []


def test_learning_rate_scale_below_tdc_edge_while_no_better_than_ignoring_the_input():
    """SGD kept Adam's lr=1e-3 (a POS tagger): the bulk moves ~1e-4.4 per step and the loss
    creeps down, yet it ends above the label entropy (not even the tag frequencies learned).
    The same ratio with a loss well below the entropy is a slow rate that works."""
    ups = update_rows(param_rows(300, update_ratio=10 ** -4.4))
    creeping = np.linspace(0.80, 0.70, 300)  # ln 2 = 0.693: still above it
    stuck = with_signal(classification_run(300, acc=0.5, loss=creeping), updates=ups)
    (f,) = lr_scale(stuck)
    assert f.evidence["side"] == "small"
    learned = with_signal(classification_run(300, acc=0.9, loss=np.linspace(0.7, 0.3, 300)), updates=ups)
    assert list(lr_scale(learned)) == []


def test_learning_rate_scale_a_vanished_gradient_is_not_a_slow_rate():
    """Adam on inputs in the hundreds (zoo airline_lstm_forecast without scaling): the gates
    saturate, the gradient falls from ~1 to ~1e-8 and the updates with it, to 1e-8 of the
    weights. Raising the rate would not help; the same updates with a steady gradient are slow."""
    n = 100
    ups = update_rows(param_rows(n, update_ratio=1e-8))
    vanished = make_run(updates=ups, params=param_rows(n, grad={k: [1.0] * 20 + [1e-8] * 80 for k in
                                                                 ("lstm.weight_hh_l0", "lstm.bias_hh_l0", "out.weight")}))
    assert list(lr_scale(vanished)) == []
    steady = make_run(updates=ups, params=param_rows(n))
    assert [f.id for f in lr_scale(steady)] == ["learning-rate-scale"]


def test_learning_rate_scale_reads_only_the_updates_before_the_blow_up():
    """A run whose loss turns NaN at step 30: the 70 steps after it have NaN or overflowing
    update ratios (weights NaN, Adam's moments wrecked). They describe the blow-up, not the
    rate; the 30 healthy steps before it are judged, and a rate too large before it still is."""
    steps = [{"step": s, "mode": "train", "loss": 0.7 - 0.001 * s if s < 30 else float("nan")} for s in range(100)]

    def updates(before, after):
        rows = update_rows(param_rows(100, update_ratio=before))
        for r in rows:
            if r["step"] >= 30:
                r["update_ratio"] = after
        return rows

    assert list(lr_scale(make_run(steps=steps, updates=updates(1e-3, float("nan"))))) == []
    assert list(lr_scale(make_run(steps=steps, updates=updates(1e-3, float("inf"))))) == []
    assert list(lr_scale(make_run(steps=steps, updates=updates(1e-3, 0.9)))) == []
    (f,) = lr_scale(make_run(steps=steps, updates=updates(0.5, float("nan"))))
    assert "thrash" in f.title


def _scheduled_run(lr, loss, ratio_of_lr=0.05):
    """400 steps; updates every step for 20, then every 40 (the default schedule), each
    ratio proportional to the step's learning rate (float32 rounds tiny ones to 0)."""
    n = len(lr)
    steps = [{"step": s, "mode": "train", "loss": float(loss[s]), "loss_kind": "cross_entropy", "lr": float(lr[s])} for s in range(n)]
    upd = []
    for s in [*range(1, 20), *range(40, n, 40)]:
        r = ratio_of_lr * lr[s] / lr.max()
        upd += [{"step": s, "param": p, "weight_norm": 1.0, "update_ratio": r if r > 1e-9 else 0.0, "numel": 256, "ndim": 2}
                for p in ("rnn.weight_ih_l0", "rnn.weight_hh_l0")]
    return make_run(steps=steps, updates=upd)


def test_learning_rate_scale_a_schedule_stepped_per_micro_batch():
    """ExponentialLR(0.95) meant per epoch, stepped on every micro-batch: the rate is 10^-4
    of its peak by step ~180 and training stops there; annealing to zero at the end, or a
    decay while the loss keeps falling, is not that."""
    s = np.arange(400)
    rng = np.random.default_rng(0)
    flat = 1.0 + 0.02 * rng.standard_normal(400)
    (f,) = lr_scale(_scheduled_run(0.04 * 0.95 ** (4 * s), flat))
    assert "decayed" in f.title and f.evidence["decayed_from_step"] < 200
    cosine = 0.04 * 0.5 * (1 + np.cos(np.pi * s / 399))
    assert "decayed" not in " ".join(x.title for x in lr_scale(_scheduled_run(cosine, flat)))
    falling = np.linspace(1.0, 0.2, 400) + 0.01 * rng.standard_normal(400)
    assert "decayed" not in " ".join(x.title for x in lr_scale(_scheduled_run(0.04 * 0.95 ** (4 * s), falling)))


def test_exploding_gradients_a_setback_the_run_undoes_and_learns_past_is_texture():
    """One 70x spike that more than doubles the loss for ten steps: a run that is back below
    its pre-spike loss within 50 steps and ends far lower (an LSTM on its way to 0.002)
    shrugged it off (information); the same spike in a run that stays set back, or that
    recovers and is thrown back again by the end, is a warning."""
    g = np.ones(300)
    g[100] = 70.0
    learning = np.linspace(0.7, 0.01, 300)
    learning[100:110] *= 2.5
    (f,) = exploding(_with_grad_norms(g, learning))
    assert f.severity is Severity.INFO and f.evidence["recovered"] is True
    stays = np.linspace(0.7, 0.01, 300)
    stays[100:] = 0.9
    (f,) = exploding(_with_grad_norms(g, stays))
    assert f.severity is Severity.WARNING
    thrown_back = learning.copy()
    thrown_back[250:] = 0.8  # recovered for a while, then the run ends above where the spike found it
    (f,) = exploding(_with_grad_norms(g, thrown_back))
    assert f.severity is Severity.WARNING


def test_exploding_gradients_a_blow_up_before_any_history():
    """A ReLU RNN without clipping: 595 at step 0, ~1e13 from step 2 on (step 1's norm
    overflowed). Before 5 steps of history the steps so far are the median, and only a
    100x spike counts; a 20x rise there does not."""
    g = np.r_[595.0, np.inf, np.geomspace(1.9e13, 4.8e13, 198)]
    (f,) = exploding(_with_grad_norms(g, np.geomspace(9.4, 5e26, 200)))
    assert f.evidence["worst_step"] == 2 and f.first_step == 2
    mild = np.r_[1.0, 20.0, np.full(198, 20.0)]
    assert list(exploding(_with_grad_norms(mild, np.linspace(0.7, 0.1, 200)))) == []


def test_learning_rate_scale_not_too_large_where_the_loss_fell_tenfold():
    """An RMSprop head of 32 weights moving ~10 % per step while the loss falls from 0.22 to
    0.013: the rate works. The same ratios on a loss that stays put thrash."""
    ups = update_rows(param_rows(100, update_ratio=10 ** -0.9))
    falling = [{"step": s, "mode": "train", "loss": 0.22 * np.exp(-s / 30)} for s in range(100)]
    flat = [{"step": s, "mode": "train", "loss": 1.1 + 0.05 * np.sin(s)} for s in range(100)]
    assert list(lr_scale(make_run(updates=ups, steps=falling))) == []
    (f,) = lr_scale(make_run(updates=ups, steps=flat))
    assert f.evidence["side"] == "large"


def test_learning_rate_scale_two_thrashing_updates_before_a_blow_up():
    """SGD at 0.2 on a predator-prey LSTM: the first two updates move the weights by their
    own size and more, and the loss blows up at step 2. One such update before a crash says
    nothing; two that thrash before the blow-up name the rate. Small updates before a
    blow-up do not."""
    blown = [{"step": s, "mode": "train", "loss": 0.74 * 100.0 ** s} for s in range(20)]
    thrash = update_rows(param_rows(20, update_ratio=3.0))
    (f,) = lr_scale(make_run(steps=blown, updates=thrash))
    assert f.evidence["side"] == "large" and f.evidence["before_blow_up"] == 2
    calm_updates = update_rows(param_rows(20, update_ratio=1e-3))
    assert list(lr_scale(make_run(steps=blown, updates=calm_updates))) == []
    crashed_at_one = [{"step": s, "mode": "train", "loss": 0.74 * 1e4 ** s} for s in range(20)]  # blown at step 1
    assert list(lr_scale(make_run(steps=crashed_at_one, updates=thrash))) == []


def test_exploding_gradients_a_setback_in_the_last_steps_is_too_early_to_tell():
    """One 13x spike 12 steps before the end throws the loss from 0.05 to 0.5: whether the
    run would undo it is not recorded, so it is information. The same spike mid-run, never
    undone, is a warning."""
    g = np.full(400, 3.0)
    g[388] = 39.0
    loss = np.full(400, 0.05)
    loss[389:] = 0.5
    (f,) = exploding(_with_grad_norms(g, loss))
    assert f.severity is Severity.INFO and f.evidence["too_late_to_tell"]
    g2, loss2 = np.full(400, 3.0), np.full(400, 0.05)
    g2[200], loss2[201:] = 39.0, 0.5
    (f,) = exploding(_with_grad_norms(g2, loss2))
    assert f.severity is not Severity.INFO and "too_late_to_tell" not in f.evidence


def test_learning_rate_scale_a_first_step_that_threw_the_weights_out():
    """RMSprop at lr 0.5 (typed for 5e-3): its first step moves every weight by ~5, 48x
    their size; the saturated model's later updates shrink to 1e-3 of the grown weights and
    the loss never beats ignoring the input. The same start in a run that then learns (a
    tiny initialisation), and seed 000's 1.1x start, are not reported."""
    def ups(first):
        rows = update_rows(param_rows(300, update_ratio=1e-3))
        for r in rows:
            if r["step"] == 0:
                r["update_ratio"] = first
        return rows

    (f,) = lr_scale(with_signal(classification_run(300, acc=0.5, loss=0.70), updates=ups(48.0)))
    assert f.evidence["side"] == "large" and f.first_step == 0 and "threw" in f.title
    learned = classification_run(300, acc=0.9, loss=np.linspace(0.7, 0.2, 300))
    assert list(lr_scale(with_signal(learned, updates=ups(48.0)))) == []
    assert list(lr_scale(with_signal(classification_run(300, acc=0.5, loss=0.70), updates=ups(1.1)))) == []


def test_a_converged_runs_hard_batch_is_not_an_explosion():
    """After convergence the median norm is tiny: a 300x spike no larger than the gradients
    the run started with is a hard batch (heldout10 z_review_sigmoid_bce_clipped); one 50x
    larger than them is an explosion."""
    g = np.concatenate([np.full(30, 1.0), np.geomspace(1.0, 0.004, 60), np.full(210, 0.004)])
    loss = np.concatenate([np.linspace(0.7, 0.01, 90), np.full(210, 1e-4)])
    hard = g.copy()
    hard[250] = 1.2  # 300x the median, the size of the first steps' norms
    assert list(exploding(_with_grad_norms(hard, loss))) == []
    blown = g.copy()
    blown[250] = 50.0
    (f,) = exploding(_with_grad_norms(blown, loss))
    assert f.evidence["worst_step"] == 250
