"""Wiring rules inside the recurrence, on synthetic recordings."""

import numpy as np

from rnndoctor.rules import get_rule
from synth import classification_run, make_run, with_signal

vanishing = get_rule("vanishing-gradient-through-time")
undetached = get_rule("undetached-state")
padding = get_rule("padding-not-masked")
eval_mode = get_rule("eval-in-train-mode")


def tg_rows(profile, steps=range(0, 300, 10), backward_offset=0, pad=None, packed=0):
    rows = []
    for s in steps:
        row = {"step": s, "backward_step": s + backward_offset, "module": "lstm", "packed": packed, "grad_norm": list(profile)}
        if pad is not None:
            row["pad_grad_share"] = pad
        rows.append(row)
    return rows


STUCK = classification_run(300, acc=0.5, loss=0.693)
LEARNING = classification_run(300, acc=np.linspace(0.5, 1, 300), loss=np.linspace(0.7, 0.05, 300))
DECAYING = 10.0 ** (np.arange(50) - 49) * 1.0  # falls 10x per step back from t = 49
FLAT = np.ones(50)


def test_vanishing_gradient_through_time_fires_on_short_horizon_when_stuck():
    (f,) = vanishing(with_signal(STUCK, time_grad=tg_rows(DECAYING)))
    assert f.evidence["horizon"] == 3 and f.evidence["sequence_length"] == 50  # t = 47, 48, 49 within 1 %


def test_vanishing_quiet_on_a_constant_input_or_a_blown_up_run():
    """Seed 001's zero input: the profile of a gradient on an input that carries nothing
    says nothing; a run whose loss blew up has its own findings."""
    constant = [{"step": s, "module": "lstm", "std": 0.0} for s in range(0, 300, 10)]
    varying = [{"step": s, "module": "lstm", "std": 0.5} for s in range(0, 300, 10)]
    assert list(vanishing(with_signal(STUCK, time_grad=tg_rows(DECAYING), rnn_inputs=constant))) == []
    assert len(list(vanishing(with_signal(STUCK, time_grad=tg_rows(DECAYING), rnn_inputs=varying)))) == 1
    steps = STUCK["steps"].copy()
    steps.loc[steps["step"] >= 150, "loss"] = float("nan")
    assert list(vanishing(with_signal(STUCK, steps=steps.to_dict("records"), time_grad=tg_rows(DECAYING)))) == []


def test_vanishing_quiet_when_the_labels_are_not_a_function_of_the_inputs():
    """Inputs and labels shuffled apart: the same inputs carry different labels, so no
    horizon would let the model learn them; the same inputs with their own labels keep the
    finding."""
    rng = np.random.default_rng(0)
    x = rng.integers(0, 50, 2000)

    def samples(y):
        return [{"step": 0, "mode": "train", "x1": float(a), "x2": float(a) * 2 + 1, "y": float(b)} for a, b in zip(x, y)]

    assert list(vanishing(with_signal(STUCK, time_grad=tg_rows(DECAYING), samples=samples(rng.integers(0, 2, 2000))))) == []
    assert len(list(vanishing(with_signal(STUCK, time_grad=tg_rows(DECAYING), samples=samples(x % 2))))) == 1


def test_vanishing_quiet_when_the_weights_barely_moved():
    """A learning rate left at 1e-5: the weights move 1e-7 of their size per step, so the
    profile is the initial weights' (learning-rate-scale names the rate); the same profile
    with healthy updates keeps the finding."""
    from synth import param_rows, update_rows
    frozen = with_signal(STUCK, time_grad=tg_rows(DECAYING), updates=update_rows(param_rows(300, update_ratio=1e-7)))
    assert list(vanishing(frozen)) == []
    moving = with_signal(STUCK, time_grad=tg_rows(DECAYING), updates=update_rows(param_rows(300, update_ratio=1e-3)))
    assert len(list(vanishing(moving))) == 1


def test_vanishing_quiet_when_learning_or_gradient_reaches_back_or_packed():
    assert list(vanishing(with_signal(LEARNING, time_grad=tg_rows(DECAYING)))) == []
    assert list(vanishing(with_signal(STUCK, time_grad=tg_rows(FLAT)))) == []
    assert list(vanishing(with_signal(STUCK, time_grad=tg_rows(DECAYING, packed=1)))) == []


def test_undetached_state():
    rows = tg_rows(FLAT, steps=[0, 5]) + [{"step": 0, "backward_step": 3, "module": "lstm", "packed": 0, "grad_norm": list(FLAT)}]
    (f,) = undetached(make_run(time_grad=rows))
    assert f.evidence["reach_steps"] == 3 and f.where["step"] == 3
    assert list(undetached(make_run(time_grad=tg_rows(FLAT)))) == []


def rnn_rows(hist, t=20, n=20):
    return [{"step": s, "module": "lstm", "packed": 0, "seq_len": t, "length_hist": list(hist)} for s in range(n)]


UNIFORM = [0] + [20] * 19 + [0]  # lengths 1..19 of 20
RANDOM_BITS = [0] * 15 + [1, 2, 4, 8, 16, 32]  # sequences that just happen to end in a few zeros


def test_padding_not_masked():
    (f,) = padding(make_run(rnn_inputs=rnn_rows(UNIFORM), time_grad=tg_rows(FLAT[:20], pad=0.9)))
    assert abs(f.evidence["gradient_on_padding"] - 0.9) < 1e-9 and f.evidence["padded_share"] > 0.4
    # packed / gathered: no gradient on padding
    assert list(padding(make_run(rnn_inputs=rnn_rows(UNIFORM), time_grad=tg_rows(FLAT[:20], pad=0.0)))) == []
    # fixed-length random bits ending in zeros are not padding
    assert list(padding(make_run(rnn_inputs=rnn_rows(RANDOM_BITS), time_grad=tg_rows(FLAT[:20], pad=0.4)))) == []


def test_eval_in_train_mode():
    rows = [{"step": s, "module": "M", "model_training": 1, "dropout_active": 1, "active_modules": ["drop"]} for s in (50, 100)]
    (f,) = eval_mode(make_run(eval_passes=rows))
    assert f.evidence["dropout_modules"] == ["drop"] and f.first_step == 50
    ok = [{"step": 50, "module": "M", "model_training": 0, "dropout_active": 0, "active_modules": []}]
    assert list(eval_mode(make_run(eval_passes=ok))) == []


def test_padding_not_masked_counts_late_ending_sequences_when_zero_steps_are_padding():
    """The real-programs issue's case (the seq2seq zoo encoder): every sequence ends at step
    4-6 of a padding to 10, none by half of it, and a third of the gradient lands on the
    padding. Embedded inputs have no all-zero step inside a sequence, so trailing zero
    steps are padding."""
    late = [0] * 4 + [15, 284, 1333] + [0] * 4
    rows = [dict(r, interior_zero=0.0) for r in rnn_rows(late, t=10)]
    (f,) = padding(make_run(rnn_inputs=rows, time_grad=tg_rows(FLAT[:10], pad=0.35)))
    assert f.evidence["padded_share"] == 1.0
    # where zero steps also occur inside sequences (bits), late ends may be data: not padding
    bits = [dict(r, interior_zero=0.3) for r in rnn_rows(late, t=10)]
    assert list(padding(make_run(rnn_inputs=bits, time_grad=tg_rows(FLAT[:10], pad=0.35)))) == []


def test_an_answer_read_before_the_end_is_named_as_such():
    """out[:, 0] for out[:, -1]: only time step 0 gets a gradient, the span-from-the-end
    horizon reads the whole sequence. Named with its own fix; the same profile in a run that
    learns (a task answered by the first element) is not reported."""
    first_only = np.r_[1.0, np.zeros(11)]
    (f,) = vanishing(with_signal(STUCK, time_grad=tg_rows(first_only)))
    assert f.evidence["last_step_reached"] == 0 and "read at step 0" in f.title and "out[:, -1]" in f.fix
    assert list(vanishing(with_signal(LEARNING, time_grad=tg_rows(first_only)))) == []
    # masked padding: trailing steps beyond the longest sequence get nothing, less than half
    masked = np.r_[np.linspace(0.2, 1.0, 40), np.zeros(10)]
    assert list(vanishing(with_signal(STUCK, time_grad=tg_rows(masked)))) == []
