"""Gradient rules on synthetic recordings."""

import numpy as np

from rnndoctor.rules import get_rule
from synth import classification_run, make_run, param_rows, update_rows

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
