"""Data rules on synthetic recordings: fire on the bug, quiet on the healthy shape."""

import math

import numpy as np

from rnndoctor.finding import Severity
from rnndoctor.rules import get_rule
from synth import classification_run, make_run, with_signal

resampled = get_rule("resampled-parameters")
inconsistent = get_rule("inconsistent-labels")
constant = get_rule("constant-input")
duplicates = get_rule("duplicate-samples")
lengths = get_rule("length-range-bug")
unnormalized = get_rule("unnormalized-inputs")


def refetch_rows(same_input, same_label):
    return [
        {"index": i, "same_input": si, "same_label": sl, "draw1": {"head": [1.0]}, "draw2": {"head": [2.0]}, "label1": 0, "label2": 1, "step": 0, "dataset": "D"}
        for i, (si, sl) in enumerate(zip(same_input, same_label))
    ]


def test_resampled_parameters_is_an_error_only_when_the_run_learns_nothing():
    """A new sample and label per fetch is seed 004's redrawn parameters when the model stays
    at chance, and normal online generation (a fixed rule, fresh inputs) when it learns."""
    redrawn = refetch_rows([0] * 8, [1, 0, 0, 1, 0, 1, 1, 0])
    (f,) = resampled(with_signal(classification_run(300, acc=0.5, loss=math.log(2)), refetch=redrawn))
    assert f.severity is Severity.ERROR and f.evidence["different_label"] == 4 and "learns nothing" in f.title
    assert f.where["dataset"] == "D" and "first" in f.evidence["example"]
    learning = classification_run(300, acc=np.linspace(0.5, 0.99, 300), loss=np.linspace(0.69, 0.05, 300))
    (f,) = resampled(with_signal(learning, refetch=redrawn))
    assert f.severity is Severity.INFO and "online generation" in f.explanation
    (f,) = resampled(make_run(refetch=redrawn))  # no loss to judge by: not an error either
    assert f.severity is Severity.INFO


def test_resampled_parameters_quiet_for_deterministic_or_label_preserving_augmentation():
    assert list(resampled(make_run(refetch=refetch_rows([1] * 8, [1] * 8)))) == []
    assert list(resampled(make_run(refetch=refetch_rows([0] * 8, [1] * 8)))) == []


def sample_rows(x, y, mode="train", step=0):
    return [{"step": step, "mode": mode, "x1": float(a), "x2": float(a) * 2 + 1, "y": float(b)} for a, b in zip(x, y)]


def test_inconsistent_labels():
    rng = np.random.default_rng(0)
    x = rng.integers(0, 50, 2000)
    (f,) = inconsistent(make_run(samples=sample_rows(x, rng.integers(0, 2, 2000))))
    assert f.evidence["share"] > 0.5
    assert list(inconsistent(make_run(samples=sample_rows(x, x % 2)))) == []


def test_duplicate_samples_against_draws_and_dataset_size():
    rng = np.random.default_rng(0)
    small = rng.integers(0, 100, 2000)
    (f,) = duplicates(make_run(samples=sample_rows(small, small % 2)))
    assert f.evidence["distinct"] == 100 and f.evidence["drawn"] == 2000
    # no dataset size: epochs over in-memory data look the same, so information
    assert f.severity is Severity.INFO
    # 2000 draws over epochs of a 120-sample Dataset: repeats by design, quiet
    run = make_run(samples=sample_rows(small, small % 2), datasets=[{"step": 0, "dataset": "D", "size": 120, "map_style": 1}])
    assert list(duplicates(run)) == []
    # a Dataset claiming 1000 samples that holds 100 distinct ones (copies): a warning
    run = make_run(samples=sample_rows(small, small % 2), datasets=[{"step": 0, "dataset": "D", "size": 1000, "map_style": 1}])
    (f,) = duplicates(run)
    assert f.severity is Severity.WARNING and f.evidence["dataset_size"] == 1000
    wide = rng.random(2000)
    assert list(duplicates(make_run(samples=sample_rows(wide, wide > 0.5)))) == []


def test_duplicate_samples_eval_overlap():
    x = np.arange(1000) / 7.0
    rows = sample_rows(x, x > 50) + sample_rows(x[:100], x[:100] > 50, mode="eval", step=10)
    (f,) = duplicates(make_run(samples=rows))
    assert "evaluation" in f.title and f.evidence["overlap_share"] == 1.0


def rnn_rows(std, all_zero=0, hist=None, t=5, packed=0, frac_large=0.0, fstd=1.0, n=10):
    return [
        {"step": s, "module": "lstm", "packed": packed, "std": std, "all_zero": all_zero, "abs_mean": 0.0 if all_zero else 0.5,
         "abs_max": 1.0, "feature_std_max": fstd, "frac_large": frac_large, "seq_len": t, "length_hist": hist}
        for s in range(n)
    ]


def test_constant_input():
    (f,) = constant(make_run(rnn_inputs=rnn_rows(0.0, all_zero=1)))
    assert f.where["module"] == "lstm" and f.evidence["all_zero"]
    assert list(constant(make_run(rnn_inputs=rnn_rows(0.5)))) == []


def test_constant_input_one_fixed_vector_per_sequence():
    """LayerNorm over a single feature returns its bias, and a convolution of that constant
    gives each channel its own constant: std across features > 0, but every feature is one
    value over batch and time, while training moves those values between steps."""
    rows = [dict(r, fstd=None, feature_std_max=0.0, mean=0.03 + 0.001 * r["step"]) for r in rnn_rows(0.06, t=40)]
    (f,) = constant(make_run(rnn_inputs=rows))
    assert "one fixed vector" in f.title
    # a batch of one stepped one element at a time: one row per call, spread 0 by construction
    single = [dict(r, feature_std_max=0.0, mean=0.1 * r["step"]) for r in rnn_rows(0.06, t=1)]
    assert list(constant(make_run(rnn_inputs=single))) == []
    varying = [dict(r, feature_std_max=0.4) for r in rnn_rows(0.06, t=40)]
    assert list(constant(make_run(rnn_inputs=varying))) == []


def test_constant_input_one_value_per_call_that_changes_is_data():
    """A batch of one stepped one bit per call: every call's std is 0, its values are not
    the same. The same value in every call is constant."""
    bits = [dict(r, mean=float(r["step"] % 2), abs_mean=float(r["step"] % 2), all_zero=int(r["step"] % 2 == 0))
            for r in rnn_rows(0.0)]
    assert list(constant(make_run(rnn_inputs=bits))) == []
    ones = [dict(r, mean=1.0, abs_mean=1.0) for r in rnn_rows(0.0)]
    (f,) = constant(make_run(rnn_inputs=ones))
    assert "constant 1" in f.title


def test_duplicate_samples_with_an_iterable_dataset_that_has_no_size():
    x = np.random.default_rng(0).integers(0, 20, 1000)  # a stream drawing from a small space
    run = make_run(samples=sample_rows(x, x % 2), datasets=[{"dataset": "Stream", "size": None, "map_style": 0}])
    (f,) = duplicates(run)
    assert f.evidence["distinct"] == 20 and f.evidence["dataset_size"] is None


def test_duplicate_samples_tells_epochs_over_distinct_samples_from_a_small_space():
    """No dataset size: 800 distinct windows drawn in shuffled epochs (each once before any
    repeats) are a training set, not a small space; the same 800 drawn at random with
    replacement repeat within the first pass (seed 002's shape) and stay information."""
    rng = np.random.default_rng(0)
    epochs = np.concatenate([rng.permutation(800) for _ in range(3)])
    assert list(duplicates(make_run(samples=sample_rows(epochs, epochs % 2)))) == []
    drawn = rng.integers(0, 800, 2400)
    (f,) = duplicates(make_run(samples=sample_rows(drawn, drawn % 2)))
    assert f.severity.value == "info" and f.evidence["distinct"] <= 800


def test_duplicate_samples_stands_aside_when_the_input_never_varies():
    """Min-max scaling over the wrong axis makes every input 0: one distinct input among
    thousands is constant-input's finding, not a small data set. The same fingerprints with
    an input that varies are duplicates."""
    zeros = np.zeros(2000)
    constant_run = make_run(samples=sample_rows(zeros, np.arange(2000) % 2), rnn_inputs=rnn_rows(0.0, all_zero=1))
    assert [f.id for f in constant(constant_run)] == ["constant-input"]
    assert list(duplicates(constant_run)) == []
    varying = make_run(samples=sample_rows(zeros, np.arange(2000) % 2), rnn_inputs=rnn_rows(0.5))
    (f,) = duplicates(varying)
    assert f.evidence["distinct"] == 1


def test_length_range_bug_exclusive_upper_bound():
    hist = [0, 10, 10, 10, 10, 0]  # lengths 1..4, padded to 5
    (f,) = lengths(make_run(rnn_inputs=rnn_rows(0.5, hist=hist)))
    assert f.evidence["padded_length"] == 5 and f.evidence["longest_seen"] == 4
    full = [0, 8, 8, 8, 8, 8]
    assert list(lengths(make_run(rnn_inputs=rnn_rows(0.5, hist=full)))) == []
    assert list(lengths(make_run(rnn_inputs=rnn_rows(0.5, hist=hist, packed=1)))) == []
    fixed = [0, 0, 0, 0, 0, 40]
    assert list(lengths(make_run(rnn_inputs=rnn_rows(0.5, hist=fixed)))) == []
    # padded to a fixed width (MAX_LENGTH 10) well beyond every sequence: not a range bug
    wide = [0, 0, 0, 0, 15, 284, 1333, 0, 0, 0, 0]
    assert list(lengths(make_run(rnn_inputs=rnn_rows(0.5, hist=wide, t=10)))) == []


def test_length_range_bug_when_no_sequence_uses_half_the_padded_width():
    """Reviews cut to 48 characters where 48 tokens were meant: 8-12 tokens of 48. A width
    a little above the data (4-6 of 10, a tutorial's MAX_LENGTH) stays quiet (above)."""
    cut = [0] * 8 + [60, 60, 60, 60, 60] + [0] * 36
    (f,) = lengths(make_run(rnn_inputs=rnn_rows(0.5, hist=cut, t=48)))
    assert f.evidence["longest_seen"] == 12 and f.evidence["padded_length"] == 48
    assert "half" in f.explanation
    half = [0] * 20 + [60, 60, 60, 60, 60] + [0] * 24  # lengths 20..24 of 48: past its half
    assert list(lengths(make_run(rnn_inputs=rnn_rows(0.5, hist=half, t=48)))) == []


def test_length_range_bug_on_packed_batches_against_the_padded_width():
    """Packed, the RNN sees only each batch's longest (4 here): the width the model was given
    (5) is what the lengths fall one short of. Batches padded to their own longest reach it."""
    short = [dict(r, padded_width=5) for r in rnn_rows(0.5, hist=[0, 10, 10, 10, 10], t=4, packed=1)]
    (f,) = lengths(make_run(rnn_inputs=short))
    assert f.evidence["padded_length"] == 5 and f.evidence["longest_seen"] == 4
    own = [dict(r, padded_width=4) for r in rnn_rows(0.5, hist=[0, 10, 10, 10, 10], t=4, packed=1)]
    assert list(lengths(make_run(rnn_inputs=own))) == []
    full = [dict(r, padded_width=5) for r in rnn_rows(0.5, hist=[0, 8, 8, 8, 8, 8], t=5, packed=1)]
    assert list(lengths(make_run(rnn_inputs=full))) == []


def test_unnormalized_inputs():
    (f,) = unnormalized(make_run(rnn_inputs=rnn_rows(50.0, frac_large=0.4, fstd=60.0)))
    assert f.evidence["share_above_10"] == 0.4
    assert list(unnormalized(make_run(rnn_inputs=rnn_rows(1.0, frac_large=0.001, fstd=1.2)))) == []
    # unit scale at the start, grown later by training (an embedding a large rate inflates)
    grown = rnn_rows(1.0, fstd=1.2, n=5) + [dict(r, step=r["step"] + 5) for r in rnn_rows(50.0, frac_large=0.4, fstd=60.0, n=20)]
    assert list(unnormalized(make_run(rnn_inputs=grown))) == []


def test_unnormalized_inputs_before_the_loss_blew_up():
    """A diverging run that feeds its predictions back: inputs after the blow-up say nothing."""
    steps = [{"step": s, "mode": "train", "loss": 0.5 if s < 2 else 10.0 ** (10 * s)} for s in range(10)]
    rows = rnn_rows(1.0, fstd=1.2, n=2) + [dict(r, step=r["step"] + 2) for r in rnn_rows(1e30, frac_large=0.5, fstd=1e30, n=8)]
    # the first 5 steps include 3 after the blow-up: only steps 0 and 1 are judged
    assert list(unnormalized(make_run(steps=steps, rnn_inputs=rows))) == []


def test_no_recurrence():
    from rnndoctor.rules import get_rule

    no_rec = get_rule("no-recurrence")
    rows = [{"step": s, "module": "lstm", "seq_len": 1, "hx_given": 0} for s in range(10)]
    (f,) = no_rec(make_run(rnn_inputs=rows))
    assert f.severity is Severity.ERROR and f.where == {"module": "lstm"}
    zero_state = [{"step": s, "module": "cell", "seq_len": 1, "hx_given": 1, "hx_zero": 1} for s in range(10)]
    assert len(list(no_rec(make_run(rnn_inputs=zero_state)))) == 1
    carried = [{"step": s, "module": "cell", "seq_len": 1, "hx_given": 1, "hx_zero": int(s == 0)} for s in range(10)]
    assert list(no_rec(make_run(rnn_inputs=carried))) == []
    sequences = [{"step": s, "module": "lstm", "seq_len": 20, "hx_given": 0} for s in range(10)]
    assert list(no_rec(make_run(rnn_inputs=sequences))) == []


def test_inconsistent_labels_from_a_refetch_that_redraws_only_the_label():
    """__getitem__ returns the same input with a label drawn at random (18 of 24 in the
    real-programs issue): the same input, two labels. Not resampled-parameters: the input
    did not change."""
    rows = refetch_rows([1] * 8, [0, 0, 1, 0, 0, 1, 0, 0])
    (f,) = inconsistent(make_run(refetch=rows))
    assert f.evidence["same_input_other_label"] == 6 and f.where["dataset"] == "D"
    assert list(resampled(make_run(refetch=rows))) == []


def test_inconsistent_labels_quiet_when_a_refetch_gives_the_same_label():
    assert list(inconsistent(make_run(refetch=refetch_rows([1] * 8, [1] * 8)))) == []
    assert list(inconsistent(make_run(refetch=refetch_rows([1] * 8, [1, 1, 1, 1, 1, 1, 1, 0])))) == []


def test_constant_input_judges_the_calls_that_trained():
    """An augmentation callback whose inverted mask blanks every training batch: the
    evaluation calls (no gradient) see the real data, the training calls only zeros."""
    train = [dict(r, backward=1) for r in rnn_rows(0.0, all_zero=1)]
    evaluation = [dict(r, backward=0, step=r["step"] + 1) for r in rnn_rows(0.5)][:3]
    (f,) = constant(make_run(rnn_inputs=train + evaluation))
    assert "training call" in f.title
    trained_on_data = [dict(r, backward=1) for r in rnn_rows(0.5)]
    blank_evaluation = [dict(r, backward=0) for r in rnn_rows(0.0, all_zero=1)]
    assert list(constant(make_run(rnn_inputs=trained_on_data + blank_evaluation))) == []
