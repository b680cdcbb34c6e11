"""Data and generators: can the model see the data, and does the data mean the same thing twice?"""

from __future__ import annotations

from typing import Iterator

import numpy as np
import pandas as pd

from ..finding import Severity
from ..run import Run
from ._common import before_blow_up, constant_inputs, fmt, judgement_window, learns_nothing, stuck_evidence
from .registry import Found, rule

#: fingerprints are float64 projections; round before comparing so identical samples that
#: went through differently blocked matmuls still match
_FP_DIGITS = 9


def _fingerprints(run: Run) -> pd.DataFrame:
    s = run["samples"]
    if s.empty:
        return s
    return s.assign(
        x=[f"{a:.{_FP_DIGITS}g}/{b:.{_FP_DIGITS}g}" for a, b in zip(s["x1"], s["x2"])],
        yk=[f"{v:.{_FP_DIGITS}g}" for v in s["y"]],
    )


@rule(
    "resampled-parameters",
    Severity.ERROR,
    signals=("refetch",),
    fix=(
        "Draw the task's parameters once in __init__ and make __getitem__(i) deterministic for i (seed it "
        "from the index or precompute the samples)."
    ),
    plots=("samples",),
)
def resampled_parameters(run: Run, *, min_changed_labels: float = 0.25, min_indices: int = 4,
                         min_new_inputs: float = 0.75) -> Iterator[Found]:
    """The same dataset index returns a different sample — and a different label.

    What it detects: rnndoctor fetches a few indices of each map-style Dataset twice (RNG
    state saved and restored). When at least a quarter of them come back with a different
    label, ``__getitem__`` ignores its index and draws a new sample on every call: an error
    when the run also sits at the input-independent baseline (``stuck-at-chance``'s reading:
    the parameters that decide the label are redrawn per sample) or, read from the loss
    alone, its loss after the warm-up stays at 90 % or more of the input-independent loss and
    does not fall by 10 % (a batch of one, whose accuracy is sampled too sparsely to judge);
    information otherwise. When the label stays with its index but at least three quarters
    come back as a new input *and* the run is stuck at the input-independent baseline (``stuck-at-chance``'s reading), what makes a class (its templates, its
    slope) is redrawn per call: a label-preserving augmentation or a generator that draws
    inputs per class also returns new inputs, but the model then learns from them.

    Legitimate look-alikes: a Dataset that ignores the index and draws a fresh sample with a
    fixed input->target rule (normal online generation); a label-preserving random
    augmentation; a generator that draws inputs per class. The last two keep the label, and
    a kept label with a new input is reported only when the run also sits at the
    input-independent baseline (``stuck-at-chance``'s reading). Online generation with a new
    label per fetch is told apart the same way: a run that learns (a GRU learning the XOR of
    two of six fresh random bits) gets an information finding, a run that learns nothing (a
    target drawn from another line than its input) the error. Seed 004 is in between: it
    redraws the slope and offset of every curve, but the curve's family still decides the
    class, and the run learns slowly from inputs in the hundreds (``unnormalized-inputs``
    names that): information. Not told apart: a run too young or too noisy to be judged is
    information, whichever it is.

    Why it matters: when what decides the label is redrawn per sample and never shown, the
    input->label mapping changes faster than it can be learned, and nothing is ever seen
    twice, so accuracy plateaus wherever the input alone happens to give the class away.

    How to fix: draw the task's hidden parameters once (in ``__init__``), generate or seed each
    sample from its index (``torch.Generator().manual_seed(base_seed + index)``), or build the
    whole dataset up front. Random augmentation that keeps the label is fine.
    """
    r = _refetched(run, min_indices)
    if r is None:
        return
    changed = r[(r["same_input"] == 0) & (r["same_label"] == 0)]
    share = len(changed) / len(r)
    if share < min_changed_labels:
        yield from _redrawn_with_label_kept(run, r, min_new_inputs)
        return
    ex = changed.iloc[0]
    differs = r[r["same_input"] == 0]
    # a fresh sample per fetch is also normal online generation (a fixed input->target rule,
    # new inputs every time): it is the bug only when nothing is learned from it
    w = judgement_window(len(run.train_steps()))
    stuck = (stuck_evidence(run, w) if w is not None else None) or learns_nothing(run)
    fetched = (f"Fetching {len(r)} indices of {ex.get('dataset', 'the dataset')} twice gave a different input for "
               f"{len(differs)} and a different label for {len(changed)}: __getitem__ ignores its index and draws "
               "a new sample")
    yield Found(
        title=(f"Dataset index {int(ex['index'])} returned a different sample and label on a second fetch"
               + (", and the model learns nothing" if stuck is not None else "")),
        explanation=(
            f"{fetched}, and over steps {stuck['window'][0]}-{stuck['window'][1]} the model stayed at the input-independent baseline "
            f"(loss {fmt(stuck['loss'])}): the task's parameters are redrawn with each sample, so the input->label "
            "mapping is never the same twice."
            if stuck is not None else
            f"{fetched}. That is normal online generation when the rule from input to label is fixed, and the "
            "run shows no sign of failing; it is the bug when the parameters that decide the label are redrawn "
            "per sample (the model then stays at chance)."
        ),
        severity=Severity.ERROR if stuck is not None else Severity.INFO,
        evidence={
            "indices_checked": int(len(r)),
            "different_input": int(len(differs)),
            "different_label": int(len(changed)),
            "example": {"index": int(ex["index"]), "first": ex["draw1"], "second": ex["draw2"],
                        "label_first": ex.get("label1"), "label_second": ex.get("label2")},
        },
        where={"dataset": str(ex.get("dataset", "")), "index": int(ex["index"])},
        first_step=int(ex.get("step", 0)),
    )


def _redrawn_with_label_kept(run: Run, r: pd.DataFrame, min_new_inputs: float) -> Iterator[Found]:
    """Every fetch a new input, the label kept, and nothing learned from them."""
    kept = r[(r["same_input"] == 0) & (r["same_label"] == 1)]
    if len(kept) / len(r) < min_new_inputs:
        return
    w = judgement_window(len(run.train_steps()))
    stuck = stuck_evidence(run, w) if w is not None else None
    if stuck is None:
        return
    ex = kept.iloc[0]
    yield Found(
        title=f"Dataset index {int(ex['index'])} returned a new input for the same label on a second fetch, and the model learns nothing",
        explanation=(
            f"Fetching {len(r)} indices of {ex.get('dataset', 'the dataset')} twice gave a different input with the same "
            f"label for {len(kept)}, and over steps {w.start}-{w.end} the model stayed at the input-independent baseline "
            f"(loss {fmt(stuck['loss'])}). If __getitem__ redraws what defines a class (templates, curve parameters) on "
            "every call, the inputs of a label share nothing to learn."
        ),
        evidence={"indices_checked": int(len(r)), "different_input_same_label": int(len(kept)),
                  "example": {"index": int(ex["index"]), "first": ex["draw1"], "second": ex["draw2"]},
                  "stuck_window": [w.start, w.end], "loss": stuck["loss"]},
        where={"dataset": str(ex.get("dataset", "")), "index": int(ex["index"])},
        first_step=int(ex.get("step", 0)),
    )


@rule(
    "inconsistent-labels",
    Severity.ERROR,
    signals=("steps",),
    fix="Make the label a function of exactly what the model receives; check shuffling keeps inputs and labels aligned.",
    plots=("samples",),
)
def inconsistent_labels(run: Run, *, min_repeated: int = 20, min_share: float = 0.1, min_indices: int = 4) -> Iterator[Found]:
    """Identical inputs arrive with different labels.

    What it detects: among inputs seen more than once (by fingerprint, as they reach the
    model and the loss), at least 10 % come with more than one distinct target (needs at
    least 20 repeated inputs; only samples with one target each: a target per time step, as
    a language model's next tokens, may rightly differ after the same window); or a map-style dataset fetched twice at the same index
    returned the same input with a different label for at least a quarter of the indices
    (``__getitem__`` draws the label at random).

    Legitimate look-alikes: language models and taggers, whose targets per time step rightly
    differ after the same window; tasks where one input has several correct answers (a
    next-character model with one target per fixed-length window, a short prefix of a noisy
    process); a Dataset that returns one of several reference targets at random (one of five
    captions). Targets per time step are told apart: only samples with one target each are
    compared. Not told apart: a one-target task whose answer is legitimately not a function
    of the input (at least 10 % of repeated inputs with more than one target), and the
    random choice among references on re-fetch (the same input with another label for a
    quarter of the indices); both are errors.

    Why it matters: no function of the input can fit contradicting labels; the best the model
    can do is the label frequency per input, so accuracy caps below 100 % and the loss stays
    high. Usual causes: a generator bug, targets computed from something the model never
    sees, misaligned input/label shuffling.

    How to fix: check the label is a function of exactly what the model receives (same
    slicing, same order after shuffling); feed the model the information the label depends on.
    """
    redrawn = list(_labels_redrawn(run, min_indices))
    if redrawn:  # the re-fetch is the direct evidence
        yield from redrawn
        return
    s = _fingerprints(run)
    if s.empty:
        return
    s = s[s["mode"] == "train"]
    if "label_size" in s:  # a target per time step (a language model's next tokens) is a
        s = s[s["label_size"].fillna(1) <= 1]  # distribution over continuations, not a label
    groups = s.groupby("x")["yk"].nunique()
    counts = s.groupby("x").size()
    repeated = groups[counts >= 2]
    if len(repeated) < min_repeated:
        return
    bad = repeated[repeated > 1]
    share = len(bad) / len(repeated)
    if share < min_share:
        return
    first = s[s["x"].isin(bad.index)]["step"].min()
    yield Found(
        title=f"{share:.0%} of repeated inputs came with different labels",
        explanation=(
            f"{len(repeated)} distinct inputs were seen more than once; {len(bad)} of them arrived with more than one "
            "target. No model can fit that; accuracy is capped by the label noise."
        ),
        evidence={"repeated_inputs": int(len(repeated)), "inconsistent": int(len(bad)), "share": share},
        where={"data": "model input / loss target"},
        first_step=int(first),
    )


def _refetched(run: Run, min_indices: int) -> pd.DataFrame | None:
    """Indices fetched twice whose labels could be compared, when there are enough of them."""
    r = run["refetch"]
    if r.empty or "same_label" not in r or "same_input" not in r:
        return None
    r = r[r["same_label"].notna()]
    return r if len(r) >= min_indices else None


def _labels_redrawn(run: Run, min_indices: int, min_share: float = 0.25) -> Iterator[Found]:
    """The re-fetch's evidence: the same index, the same input, another label."""
    r = _refetched(run, min_indices)
    if r is None:
        return
    redrawn = r[(r["same_input"] == 1) & (r["same_label"] == 0)]
    if len(redrawn) / len(r) < min_share:
        return
    ex = redrawn.iloc[0]
    yield Found(
        title=f"Dataset index {int(ex['index'])} returned the same input with a different label on a second fetch",
        explanation=(
            f"Fetching {len(r)} indices of {ex.get('dataset', 'the dataset')} twice gave the same input with a different "
            f"label for {len(redrawn)}: the label is drawn at random, not computed from the input."
        ),
        evidence={"indices_checked": int(len(r)), "same_input_other_label": int(len(redrawn)),
                  "share": len(redrawn) / len(r), "example": {"index": int(ex["index"]), "label_first": ex.get("label1"),
                                                              "label_second": ex.get("label2")}},
        where={"dataset": str(ex.get("dataset", "")), "index": int(ex["index"])},
        first_step=int(ex.get("step", 0)),
    )


@rule(
    "constant-input",
    Severity.ERROR,
    signals=("steps",),
    fix="Pass the data as the RNN's sequence input (lstm(x)), not only through the initial state; check the tensor right before the call.",
    plots=("inputs",),
)
def constant_input(run: Run) -> Iterator[Found]:
    """The recurrent layer's input never varies (all zeros, or one constant).

    What it detects: every sampled training call of a recurrent module (one whose output a
    gradient reached) received a sequence input with
    zero standard deviation over batch, time and features (or over batch and time within
    every feature: one fixed vector, as a convolution of a constant gives, even where
    training moves that vector between steps), and the same value in all of them; for a
    model without an nn.RNN /
    LSTM / GRU module (a hand-written cell), every sampled training call of the model itself.

    Legitimate look-alikes: a decoder or generator fed zeros at every step and driven by a
    conditioning initial state (a sequence autoencoder's unconditioned decoder), and a loop
    that steps an RNN one element at a time with a batch of one and one feature, whose every
    call holds a single value (standard deviation 0) although the values differ from call to
    call. The second is told apart: the input must also have the same mean in every sampled
    call. Not told apart: the zero-input decoder (the rule does not read the initial state).
    Evaluation calls are not read: a training-only transform (an augmentation callback whose
    inverted mask blanks every training batch) leaves them the real data.

    Why it matters: the RNN cannot see the data. Seed 001 feeds the LSTM a zero tensor and the
    bits only through the initial hidden state; the gate input weights then get no gradient
    and the recurrence has nothing to carry.

    How to fix: feed the data as the sequence input (``lstm(x)``), not through ``h0``; check
    the tensor just before the RNN call (Karpathy: "visualise just before the net").
    """
    for module, rows in constant_inputs(run).items():
        zero = bool((rows["all_zero"] == 1).all())
        flat = bool((pd.to_numeric(rows["std"], errors="coerce") == 0).all())
        value = "all zeros" if zero else f"constant {fmt(float(rows['abs_mean'].iloc[0]))}" if flat else "one fixed vector"
        yield Found(
            title=f"The input of '{module}' is {value} in every sampled training call",
            explanation=(
                f"Across {len(rows)} sampled training calls the sequence fed to '{module}' had standard deviation 0"
                + ("" if flat else " within every feature (each feature one value over batch and time)")
                + ": the recurrent layer never sees the data."
            ),
            evidence={"calls": int(len(rows)), "all_zero": zero, "std": 0.0 if flat else None, "feature_std_max": 0.0},
            where={"module": module},
            first_step=int(rows["step"].min()),
        )


@rule(
    "duplicate-samples",
    Severity.WARNING,
    signals=("samples",),
    fix="Enumerate the input space and split it into disjoint train/validation/test sets, or enlarge it.",
    plots=("samples",),
)
def duplicate_samples(run: Run, *, min_drawn: int = 500, max_unique_share: float = 0.5, max_eval_overlap: float = 0.1,
                      max_first_pass_share: float = 0.9) -> Iterator[Found]:
    """Far fewer distinct samples than samples drawn, or evaluation samples seen in training.

    What it detects: among the training inputs fingerprinted (at least 500), fewer than half
    as many are distinct as were drawn (or as the Dataset's length, when epochs over a
    Dataset repeat samples by design); or at least 10 % of distinct evaluation inputs also
    occurred in training.

    Legitimate look-alikes: many epochs over a small dataset; an input space small by nature
    and meant to be covered (lookup or memorisation tasks); a no-grad pass over the training
    data to measure training accuracy. Epochs are told apart when the data comes through a
    DataLoader over a map-style Dataset: distinct inputs are then compared with
    ``len(dataset)``, not with the draws, and fewer distinct inputs than the dataset claims is
    a warning. Without a dataset size (in-memory tensors sliced or sampled with replacement,
    generators, iterable datasets) epochs show in the order of the draws: a fixed set of
    distinct samples (at least 20) is drawn once (90 % of as many first draws distinct)
    before anything repeats, and is not reported. Repeats within that first pass are information: a
    generator whose space is small (seed 002) and a fixed list sampled with replacement are
    not told apart. Not told apart either: a small space covered on purpose,
    and training-set evaluation, whose inputs count as evaluation inputs seen in training
    (every no-grad pass is an evaluation); leakage stays a warning. An input that never
    varies (every sample the same tensor) is constant-input's finding, and this rule stands
    aside.

    Why it matters: "100 000 random samples" of 5-bit pairs hold only 1024 distinct ones
    (seed 002); the run is really many epochs over a small set, and an evaluation on samples
    from training measures memory, not generalisation.

    How to fix: enumerate the small input space and split it into train/validation/test
    without overlap; or draw from a space large enough that repeats are rare.
    """
    s = _fingerprints(run)
    if s.empty or constant_inputs(run):
        return  # identical inputs because the input never varies: constant-input's finding
    train = s[s["mode"] == "train"]
    n, unique = len(train), train["x"].nunique()
    sizes = pd.to_numeric(run["datasets"]["size"], errors="coerce").dropna() if run.has("datasets") and "size" in run["datasets"] \
        else pd.Series(dtype=float)  # an IterableDataset has no length
    # epochs over a finite dataset repeat samples by design: compare with the dataset size
    pool = min(n, int(sizes.max())) if not sizes.empty else n
    # without a size, epochs over a fixed set of distinct samples draw each once before any
    # repeats: the first ``unique`` draws are (nearly) all distinct, where a small space
    # sampled at random (seed 002), or a set holding copies, repeats within them (a first
    # pass under 20 cannot tell: 20 random draws from 20 give about 13 distinct)
    first_pass = train["x"].iloc[:unique].nunique() if sizes.empty else 0
    epochs_only = sizes.empty and unique >= 20 and first_pass >= max_first_pass_share * unique
    if n >= min_drawn and unique < max_unique_share * pool and not epochs_only:
        yield Found(
            title=f"Only {unique} distinct inputs among {n} training samples drawn",
            explanation=(
                f"{n} training samples were fingerprinted and only {unique} ({unique / n:.1%}) were distinct"
                + (f", though the dataset claims {int(sizes.max())} samples" if not sizes.empty else "")
                + (": the dataset holds fewer distinct samples than it claims (copies, a shard concatenated twice)."
                   if not sizes.empty else
                   ": if these are meant as fresh samples, the generator draws from a small space and 'more data' is "
                   "the same data again; epochs or sampling with replacement over a fixed set look the same.")
            ),
            # without a dataset size, repeats are what any epoch over in-memory data looks like
            severity=None if not sizes.empty else Severity.INFO,
            evidence={"drawn": int(n), "distinct": int(unique), "distinct_share": unique / n,
                      "dataset_size": int(sizes.max()) if not sizes.empty else None},
            where={"data": "training inputs"},
            first_step=int(train["step"].min()),
        )
    ev = s[s["mode"] == "eval"]
    if not ev.empty and not train.empty:
        ev_unique = set(ev["x"])
        overlap = len(ev_unique & set(train["x"])) / len(ev_unique)
        if overlap >= max_eval_overlap and len(ev_unique) >= 20:
            yield Found(
                title=f"{overlap:.0%} of evaluation inputs also occur in training",
                explanation="Evaluation samples were also trained on: the evaluation measures memory, not generalisation.",
                evidence={"eval_distinct": len(ev_unique), "overlap_share": overlap},
                where={"data": "evaluation inputs"},
                first_step=int(ev["step"].min()),
                fix="Split the data so evaluation inputs never occur in training.",
            )


@rule(
    "length-range-bug",
    Severity.WARNING,
    signals=("rnn_inputs",),
    fix="Draw lengths with an inclusive upper bound (randint(1, T + 1)); pack padded batches with pack_padded_sequence.",  # each finding names T
    plots=("lengths",),
)
def length_range_bug(run: Run, *, min_sequences: int = 200, min_padded_share: float = 0.2) -> Iterator[Found]:
    """Sequence lengths never reach the padded maximum.

    What it detects: in recurrent inputs where at least 20 % of sequences end before the
    padded length T (trailing zeros; for packed inputs, T is the width of the padded batch
    the model was given, and lengths are exact), no sequence among at least 200 reached T
    and the longest reached T - 1: the range stops exactly one short, the mark of an
    exclusive upper bound; or none reached even T / 2: something cuts every sequence short
    (a text truncated to a number of characters where tokens were meant). Sequences that
    stop short of T but past its half are padded to a fixed width (a tutorial's
    MAX_LENGTH), a choice rather than a range bug.

    Legitimate look-alikes: padding to the longest sequence of each batch; a fixed pad width
    well above the data (a tutorial's MAX_LENGTH); a width exactly one above the longest
    sequence on purpose (room for an end token added later, inputs shifted by one for
    next-step prediction but padded to the full length). The first two are told apart: a
    batch padded to its own longest has a sequence reaching T, and a gap of more than one
    step but less than half the width reads as a fixed width. Not told apart: the
    deliberate one-step gap, which looks exactly like an exclusive upper bound, and a fixed
    width more than twice the longest sequence the data holds (then the warning says the
    recurrence runs through that much padding).

    Why it matters: the intended range is not what is generated — seed 001 draws lengths
    with ``randint(1, bits)``, whose upper bound is exclusive, so a string of ``bits`` bits
    never occurs — and every sequence carries padding the model must learn to ignore.

    How to fix: use ``randint(1, bits + 1)`` (exclusive upper bounds) or check the length
    histogram; pad to the longest sequence in the batch, and pack (``pack_padded_sequence``)
    so padding is not fed through the recurrence.
    """
    r = run["rnn_inputs"]
    if r.empty or "length_hist" not in r:
        return
    r = r[r["length_hist"].notna()]
    # the width lengths are judged against: a padded input's own T; a packed one's is the
    # padded batch the model was given (packing shows only each batch's longest)
    packed_width = pd.to_numeric(r["padded_width"], errors="coerce") if "padded_width" in r else pd.Series(np.nan, index=r.index)
    r = r.assign(width=np.where(r["packed"] == 0, pd.to_numeric(r["seq_len"], errors="coerce"), packed_width)).dropna(subset=["width"])
    for module, rows in r.groupby("module", sort=False):
        for t, same_t in rows.groupby("width"):
            t = int(t)
            hist = np.sum([_widened(h, t) for h in same_t["length_hist"]], axis=0)
            total = hist.sum()
            if total < min_sequences or len(hist) != t + 1:
                continue
            padded_share = hist[:t].sum() / total
            nonzero = np.nonzero(hist)[0]
            longest = int(nonzero.max()) if len(nonzero) else 0
            if padded_share < min_padded_share or longest == 0:
                continue  # (an all-zero input is constant-input's finding)
            shortest = int(nonzero.min())
            if longest != t - 1:
                if longest * 2 < t:  # not one sequence reaches half the width
                    yield _never_half(module, t, longest, shortest, total, hist, int(same_t["step"].min()))
                continue  # a gap short of that is a fixed pad width (a tutorial's MAX_LENGTH)
            yield Found(
                title=f"Sequences fed to '{module}' are padded to {t} but never longer than {longest}",
                explanation=(
                    f"Of {int(total)} sequences, {padded_share:.0%} end before the padded length {t} (trailing zeros) and "
                    f"none reaches it: lengths run {shortest}..{longest}. An exclusive upper bound (randint(1, {t})) "
                    "produces exactly this."
                ),
                evidence={"padded_length": t, "longest_seen": longest, "shortest_seen": shortest, "sequences": int(total),
                          "length_histogram": [int(v) for v in hist]},
                where={"module": module},
                first_step=int(same_t["step"].min()),
                fix=f"Draw lengths with randint(1, {t} + 1) if {t} is meant to occur; pack padded batches with pack_padded_sequence.",
            )


def _never_half(module: str, t: int, longest: int, shortest: int, total: float, hist: np.ndarray, step: int) -> Found:
    return Found(
        title=f"Sequences fed to '{module}' are padded to {t} but never longer than {longest}",
        explanation=(
            f"Of {int(total)} sequences none uses even half of the padded length {t}: lengths run "
            f"{shortest}..{longest}. Something shortens them before padding (a text cut to a number of "
            "characters where tokens were meant, a window or maximum set too small), or the width is far "
            "larger than the data: either way the part of each sequence that the task may need is not there, "
            f"or the recurrence runs through at least {t - longest} padding steps."
        ),
        evidence={"padded_length": t, "longest_seen": longest, "shortest_seen": shortest, "sequences": int(total),
                  "length_histogram": [int(v) for v in hist]},
        where={"module": module},
        first_step=step,
        fix=(f"Check where sequences are cut to {longest} or less (truncate after tokenising, to the number of "
             f"tokens meant); if {longest} is all the data has, pad to the batch's longest and pack."),
    )


def _widened(hist: object, t: int) -> np.ndarray:
    """A length histogram over 0..``t`` (a packed batch's covers 0..its longest only)."""
    h = np.asarray(hist, float)
    return np.pad(h, (0, t + 1 - len(h))) if len(h) < t + 1 else h


@rule(
    "unnormalized-inputs",
    Severity.WARNING,
    signals=("rnn_inputs",),
    fix="Standardise each input feature with training-set mean and std (or scale to [-1, 1]).",
    plots=("inputs",),
)
def unnormalized_inputs(run: Run, *, large_share: float = 0.01, feature_std_limit: float = 10.0,
                        first_steps: int = 5) -> Iterator[Found]:
    """Input features far from unit scale.

    What it detects: in the input of a recurrent module over its first 5 recorded steps, more
    than 1 % of values have |x| > 10 (the 99th percentile of |x| is above 10) or a feature's
    standard deviation exceeds 10. The scale of the data is what it is from the first batch;
    an input that grows only later is made by training (an embedding a too-large rate
    inflates, predictions fed back in a diverging run), and its cause is elsewhere.

    Legitimate look-alikes: raw data that the model normalises itself before its RNN (a
    LayerNorm, a learned scaling); standardised data with a heavy tail; inputs that only
    grow during training (an embedding a high rate inflates, fed-back predictions), whose
    cause is elsewhere. The first is told apart because the rule reads the recurrent
    module's own input, after the model's normalisation; the second by needing more than 1 %
    of values beyond 10 or a feature standard deviation above 10; the third by reading only
    the first 5 recorded steps, before any blow-up. Not told apart: a raw feature kept large
    on purpose (a time index, a count) that the input weights are meant to absorb.

    Why it matters: gate pre-activations W x + b then land deep in the flat ends of sigmoid
    and tanh from the first step, where gradients vanish (seed 004 feeds points whose y
    reaches the hundreds).

    How to fix: standardise each feature (subtract the training mean, divide by the std),
    or scale to [-1, 1]; keep the statistics from the training set for evaluation.
    """
    r = before_blow_up(run, run["rnn_inputs"])
    if r.empty or "frac_large" not in r:
        return
    for module, rows in r.groupby("module", sort=False):
        rows = rows[rows["step"].isin(sorted(rows["step"].unique())[:first_steps])]
        frac = float(pd.to_numeric(rows["frac_large"], errors="coerce").mean())
        fstd = float(pd.to_numeric(rows["feature_std_max"], errors="coerce").max())
        if frac <= large_share and fstd <= feature_std_limit:
            continue
        yield Found(
            title=f"Inputs of '{module}' are far from unit scale: max |x| {fmt(float(rows['abs_max'].max()))}, {frac:.0%} above 10",
            explanation=(
                f"{frac:.1%} of the values fed to '{module}' exceed 10 in magnitude and the widest feature has standard "
                f"deviation {fmt(fstd)}; gate pre-activations start saturated."
            ),
            evidence={"share_above_10": frac, "feature_std_max": fstd, "abs_max": float(rows["abs_max"].max()),
                      "abs_mean": float(rows["abs_mean"].mean())},
            where={"module": module},
            first_step=int(rows["step"].min()),
        )
