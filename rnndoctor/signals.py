"""THE contract between probes and rules: every recorded signal, its keys and values.

Each signal is a tidy (long-format) table. Probes write rows through the ``Recorder``; rules
read them as pandas DataFrames from a ``Run``. Columns listed in ``explode`` are written as
lists (one entry per class / parameter) and expanded into one row each on load.
"""

from __future__ import annotations

from dataclasses import dataclass

from .schedule import (
    DEFAULT_CARRIED,
    DEFAULT_DATA,
    DEFAULT_GATES,
    DEFAULT_LOCALIZE,
    DEFAULT_STEP_STATS,
    DEFAULT_TIME_GRAD,
    DEFAULT_UPDATE_RATIO,
)


# Saturation thresholds. Karpathy, Johnson & Fei-Fei 2015, "Visualizing and Understanding
# Recurrent Networks" (arXiv 1506.02078) plot per-gate left/right saturation fractions; we use
# the tighter 0.05/0.95 bounds as the recorded statistic (see shared/research-notes.md, "Gate
# statistics": the rules apply their own, stricter verdict thresholds to these fractions).
SIGMOID_LOW = 0.05
SIGMOID_HIGH = 0.95
#: |tanh| above this counts as saturated (same origin as the sigmoid bounds)
TANH_SATURATED = 0.95

#: |z| above this counts as "large" in the ``activations`` signal: a sigmoid of it is outside
#: [SIGMOID_LOW, SIGMOID_HIGH] and a tanh of it within 0.005 of ±1 (the bounds above, as
#: pre-activations)
LARGE_PREACTIVATION = 2.944

#: |x| above this counts as "far from unit scale" in the input signals (``frac_large``;
#: AUTOTRAINER's ω1 = 10)
LARGE_INPUT = 10.0


@dataclass(frozen=True)
class Signal:
    name: str
    keys: tuple[str, ...]
    values: dict[str, str]  # column -> meaning and unit
    when: str
    explode: tuple[str, ...] = ()
    #: list columns written only when they change (parameter names, sizes): a row without
    #: them has the previous row's, filled in on load
    carried: tuple[str, ...] = ()
    #: list columns left out while all zero: filled with zeros as long as ``carried[0]``
    zeros_if_absent: tuple[str, ...] = ()


STEPS = Signal(
    "steps",
    keys=("step", "mode"),
    values={
        "loss": "mean of the loss values computed in the step (train) or since the last step (eval)",
        "loss_calls": "how many loss computations were seen",
        "loss_mixed": "1 when the step's loss calls differ in kind or class count (a main and an auxiliary loss): the mean is no one loss's",
        "loss_kind": "cross_entropy | nll | bce_logits | bce | mse | l1 | smooth_l1 | huber | logged",
        "n_classes": "K for classification losses (2 for binary / 0-1 regression targets); on class-count steps",
        "correct": "correctly predicted targets (argmax, >0 for logits, >0.5 for probabilities and for a sigmoid fed to BCEWithLogitsLoss); on class-count steps",
        "total": "targets counted (ignore_index excluded); on class-count steps",
        "tgt_n": "number of target elements",
        "tgt_sum": "sum of targets (for the mean predictor baseline of regression losses)",
        "tgt_sqsum": "sum of squared targets",
        "tgt_min": "smallest target",
        "tgt_max": "largest target",
        "tgt_elems": "regression targets: elements in the step's loss calls (on class-count steps)",
        "tgt_spread_sq": "... their squared deviations from each channel's (last dim's) batch mean, summed (the mean predictor's loss x elements)",
        "tgt_spread_abs": "... their absolute deviations from each channel's batch median, summed (the median predictor's L1 x elements)",
        "tgt_integral": "1 when every target is a whole number in [0, 15] (class labels)",
        "out_min": "smallest model output fed to the loss",
        "out_max": "largest model output fed to the loss",
        "out_op": "autograd op that produced the loss input (SigmoidBackward0, AddmmBackward0, ...)",
        "out_is_prob": "1 when outputs are in [0,1] and sum to 1 over the class dim",
        "class_weight": "per-class weights of a cross-entropy / NLL loss (weight=...), on detail steps",
        "out_is_logprob": "1 when outputs are <= 0 and logsumexp to 0 over the class dim",
        "grad_norm": "global L2 norm of all watched gradients before the update; on gradient-norm steps",
        "loss_finite": "1 when every loss value in the step was finite",
        "lr": "learning rate of the first param group of the first optimizer",
        "time": "seconds since watch() started",
    },
    when=(
        "every optimizer step (mode=train); per step with evaluation passes (mode=eval). Class counts and the "
        f"gradient norm: {DEFAULT_STEP_STATS}, every step after a NaN"
    ),
)

PREDICTIONS = Signal(
    "predictions",
    keys=("step", "mode", "cls"),
    values={"n_pred": "how often class cls was predicted", "n_label": "how often it was the label"},
    when=f"steps with a classification-like loss: {DEFAULT_STEP_STATS}, every step after a NaN",
    explode=("cls", "n_pred", "n_label"),
)

PARAMS = Signal(
    "params",
    keys=("step", "param"),
    values={
        "grad_norm": "L2 norm of the gradient before the update (NaN when grad is None)",
        "grad_none": "1 when the parameter had no gradient",
        "grad_lost": "1 when held gradients were modified in place before their norms were taken (no values)",
    },
    when=f"optimizer steps: {DEFAULT_STEP_STATS}, every step after a NaN",
    explode=("param", "grad_norm", "grad_none"),
    carried=("param",),
    zeros_if_absent=("grad_none",),
)

UPDATES = Signal(
    "updates",
    keys=("step", "param"),
    values={
        "weight_norm": "L2 norm of the parameter after the update",
        "update_ratio": "||w_after - w_before|| / ||w_before|| (over every k-th row of a parameter above 2^20 elements)",
        "numel": "number of elements",
        "ndim": "number of dimensions",
    },
    when=f"sampled steps (a copy of the weights is taken before the step): {DEFAULT_UPDATE_RATIO}, every step after a NaN",
    explode=("param", "weight_norm", "update_ratio", "numel", "ndim"),
    carried=("param", "numel", "ndim"),
)

STALE_GRADS = Signal(
    "stale_grads",
    keys=("step",),
    values={
        "stale_norm": "L2 norm of the gradients the optimizer's parameters already held when the step's first backward began (0 when zeroed or None)",
        "with_grad": "how many of those parameters had a .grad then",
    },
    when=f"from the second optimizer step on: {DEFAULT_STEP_STATS}",
)

NONFINITE = Signal(
    "nonfinite",
    keys=("step",),
    values={
        "module": "first module (in call order) whose inputs were finite and outputs were not",
        "call": "which call of that module within the step (0-based; the time step for cells)",
        "t": "first non-finite time step of a recurrent module's output sequence (-1: n/a)",
        "calls_checked": "module calls checked in the step",
        "outputs_bad": "1 when some checked call's output was non-finite, even one whose inputs were not finite too",
    },
    when=f"steps on the localisation schedule ({DEFAULT_LOCALIZE}, every step after a NaN)",
)

_INPUT_STATS = {
    "abs_max": "largest |x|",
    "abs_mean": "mean |x|",
    "mean": "mean x (calls of one element each: whether the value changes from call to call)",
    "std": "standard deviation over every element (0: constant input)",
    "feature_std_max": "largest per-feature standard deviation (features = last dim)",
    "frac_large": f"share of elements with |x| > {LARGE_INPUT:g}",
    "all_zero": "1 when every element is exactly 0",
}

INPUTS = Signal(
    "inputs",
    keys=("step", "mode", "module"),
    values={**_INPUT_STATS,
            "seq_len": "a 3-D training input of a model without a fused RNN: its dimension 1 (read batch-first)",
            "length_hist": "as rnn_inputs' length_hist, read batch-first", "interior_zero": "as rnn_inputs', read batch-first",
            "seq_len_tb": "the same, read time-first (dimension 0)", "length_hist_tb": "read time-first",
            "interior_zero_tb": "read time-first"},
    when=f"the model's first argument, on the data schedule ({DEFAULT_DATA})",
)

RNN_INPUTS = Signal(
    "rnn_inputs",
    keys=("step", "module"),
    values={**_INPUT_STATS, "packed": "1 for a PackedSequence", "seq_len": "padded (or longest packed) length T",
            "padded_width": "packed input: time width of the padded batch the model was given (its declared maximum)",
            "length_hist": "how many sequences had each length 0..T (last data step, data.data_steps; exact when packed)",
            "interior_zero": "share of padding-like steps (all zero, or the batch's pad vector) before each sequence's last data step (padded inputs)",
            "hx_given": "1 when an initial state was passed", "hx_zero": "1 when the passed state was all zeros",
            "backward": "1 when a gradient reached the call's output by the end of its step (it trained)"},
    when=f"every recurrent module call on the data schedule ({DEFAULT_DATA})",
)

SAMPLES = Signal(
    "samples",
    keys=("step", "mode"),
    values={"x1": "fingerprint of each input sample (projection 1)", "x2": "projection 2", "y": "fingerprint of its target",
            "label_size": "target elements per sample (1: one class or value; more: a target per time step)"},
    when="on the data schedule, when input and target batch sizes match",
    explode=("x1", "x2", "y"),
)

REFETCH = Signal(
    "refetch",
    keys=("index",),
    values={"dataset": "type name of the dataset",
            "same_input": "1 when fetching the index twice gave the same input", "same_label": "... the same label",
            "draw1": "summary of the first fetch", "draw2": "summary of the second",
            "label1": "summary of the first fetch's label", "label2": "summary of the second fetch's label"},
    when="once per DataLoader over a map-style dataset, before its first batch",
)

TIME_GRAD = Signal(
    "time_grad",
    keys=("step", "module"),
    values={"grad_norm": "mean over the batch of ||dL/dx_t|| for every time step t of the recurrent (or model) input (list)",
            "backward_step": "the step whose backward() produced it (> step: gradient reached an earlier batch)",
            "packed": "1 when the recurrent input was a PackedSequence",
            "pad_grad_share": "share of the input gradient on trailing all-zero steps (padding) of padded input"},
    when=(f"first fused-RNN call of the step, or, in a model without one (a cell loop, a hand-written "
          f"recurrence), the model's first float [B, T, F] input of the step; {DEFAULT_TIME_GRAD} (training passes only)"),
)

GATES = Signal(
    "gates",
    keys=("step", "module", "layer", "direction", "gate"),
    values={"frac_low": "share of entries < 0.05 (sigmoid) / < -0.95 (tanh) / == 0 (relu)",
            "frac_high": "share > 0.95", "frac_saturated": "frac_low + frac_high",
            "activation": "sigmoid | tanh | relu: the gate's nonlinearity",
            "mean": "mean activation", "p10": "10th percentile", "p50": "median", "p90": "90th percentile",
            "unit_mean": "mean activation of each unit (list over the hidden units)",
            "replay_err": "max |h_n(replay) - h_n(module)|: the replay checks itself (NaN: a hand-written cell, read, not replayed)",
            "exact": "0 when dropout makes replay inexact"},
    when=(f"gate replay of fused RNNs (first call of the step) and of *Cell modules (every call of the step), and the "
          f"gates of hand-written cells read by dataflow (models without a torch recurrent module), {DEFAULT_GATES} "
          "(training passes, padding excluded)"),
)

CELL = Signal(
    "cell",
    keys=("step", "module", "layer", "direction"),
    values={"c_norm": "mean over the batch of ||c_t|| for every t (list; LSTM only)",
            "forget_bias": "b_ih + b_hh of the forget gate, or of a GRU's update gate z (list; NaN: not known)"},
    when="with the gate replay (LSTM and GRU layers)",
)

HAND_CELLS = Signal(
    "hand_cells",
    keys=("step", "module"),
    values={"read": "1 when its calls read as LSTM- or GRU-style gates (then judged as gates/cell rows); "
                    "-1 for a module called repeatedly with the same state and never fed back its output, or "
                    "a loop inside a forward whose steps hand nothing on",
            "reason": "why not, when not read (the gate rules do not judge it)",
            "gate_biases": "where each gate's bias lives, as JSON {gate: [[parameter, start, stop, sign], ...]} "
                           "(the terms summed into it; gates whose bias is not a parameter slice are absent)",
            "state_fed_back": "0: every call of the step got the same state tensor, never the module's own output",
            "state_abs_max": "largest |value| of that state (0: an all-zero initial state on every call)"},
    when="the first gates step on which a module fed back its own output, or a forward with a loop inside "
         "(module: that forward's), is observed (once per module); every gates step on which a repeatedly "
         "called module was never fed back, or a loop's steps handed nothing on",
)

ACTIVATIONS = Signal(
    "activations",
    keys=("step", "module"),
    values={"calls": "calls of the module in the step (a cell in a loop: one per time step)",
            "numel": "output elements summed over", "mean": "mean output", "std": "standard deviation of the output",
            "abs_max": "largest |output|", "frac_large": f"share of |output| > {LARGE_PREACTIVATION} (a sigmoid of it is outside [0.05, 0.95])",
            "frac_zero": "share of exact zeros (dead ReLU units)",
            "frac_nonfinite": "share of NaN/Inf outputs (the other values are over the finite ones)"},
    when=f"every submodule's first output tensor, summed over the step's training calls, {DEFAULT_GATES}",
)

EVAL_PASSES = Signal(
    "eval_passes",
    keys=("step", "module"),
    values={"model_training": "module.training of the model called without grad",
            "dropout_active": "1 when a Dropout (or an RNN's inter-layer dropout) was in training mode",
            "active_modules": "names of the active dropout modules"},
    when="the first model call without grad in each step",
)

CARRIED_STATE = Signal(
    "carried_state",
    keys=("step", "module"),
    values={"from_step": "the step whose call returned the state (with its graph) fed in at this step"},
    when=f"a recurrent call whose initial state was returned with its graph by an earlier step, {DEFAULT_CARRIED}",
)

DATASETS = Signal(
    "datasets",
    keys=("dataset",),
    values={"size": "len(dataset) for map-style datasets", "map_style": "1 for map-style, 0 for iterable"},
    when="once per DataLoader, at its first iteration",
)

CATALOGUE: dict[str, Signal] = {s.name: s for s in (STEPS, PREDICTIONS, PARAMS, UPDATES, STALE_GRADS, NONFINITE, INPUTS, RNN_INPUTS, SAMPLES, REFETCH, DATASETS, TIME_GRAD, GATES, CELL, HAND_CELLS, ACTIVATIONS, EVAL_PASSES, CARRIED_STATE)}


# ---------------------------------------------------------------------------- the contract
#: columns every row may carry besides its signal's keys and values
COMMON_COLUMNS = frozenset({"step"})

#: signal name -> (its Signal, the columns it allows), computed once per declaration
_ALLOWED: dict[str, tuple[Signal, frozenset[str]]] = {}


class SignalContractError(ValueError):
    """A probe wrote a row of an undeclared signal or with an undeclared column."""


def undeclared(signal: str, row: dict) -> str | None:
    """Why ``row`` breaks the contract (an undeclared signal or columns), or None."""
    spec = CATALOGUE.get(signal)
    if spec is None:
        return f"signal {signal!r} is not declared in signals.py"
    cached = _ALLOWED.get(signal)
    if cached is None or cached[0] is not spec:
        cached = _ALLOWED[signal] = (spec, frozenset(spec.keys) | frozenset(spec.values) | COMMON_COLUMNS)
    allowed = cached[1]
    extra = [k for k in row if k not in allowed]
    if extra:
        return f"signal {signal!r} has undeclared column(s) {', '.join(map(repr, sorted(extra)))}"
    return None
