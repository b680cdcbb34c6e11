"""Loss, logits and targets: captured from torch.nn.functional, reduced on the device.

Loss modules (``nn.CrossEntropyLoss`` & co.) call their functional form through the
``torch.nn.functional`` namespace, so wrapping the functional forms while a watch is active
captures both ways of computing a loss exactly once. The wrappers are installed when the
first watch starts and removed when the last one ends.

``torch.autograd.backward`` (which ``Tensor.backward`` calls) is wrapped the same way: a
scalar back-propagated with no functional loss since the last backward is a hand-written
loss (``hand_loss`` reads it before the backward frees what it saved).
"""

from __future__ import annotations

import contextlib
import functools
from dataclasses import dataclass
from typing import Any, Callable, Iterator

import torch
import torch.nn.functional as F

from ..recorder import Part
from .patches import SharedPatch
from .precision import as_stat, wide

#: functional name -> loss kind recorded in the ``steps`` signal
LOSS_FUNCTIONS: dict[str, str] = {
    "cross_entropy": "cross_entropy",
    "nll_loss": "nll",
    "binary_cross_entropy_with_logits": "bce_logits",
    "binary_cross_entropy": "bce",
    "mse_loss": "mse",
    "l1_loss": "l1",
    "smooth_l1_loss": "smooth_l1",
    "huber_loss": "huber",
}
CLASSIFICATION_KINDS = frozenset({"cross_entropy", "nll"})
BINARY_KINDS = frozenset({"bce_logits", "bce"})
REGRESSION_KINDS = frozenset({"mse", "l1", "smooth_l1", "huber"})
#: regression targets that are whole numbers in [0, REGRESSION_CLASS_BINS) are treated as
#: class labels (seed 002: 0/1 targets under MSE); predictions are rounded into these bins.
REGRESSION_CLASS_BINS = 16
#: a regression target's last dim up to this size is read as channels (per-channel spread)
MAX_TARGET_CHANNELS = 256
#: tolerance for "these outputs already are probabilities / log-probabilities"
PROB_SUM_TOL = 1e-3


@dataclass
class LossCall:
    kind: str
    input: torch.Tensor
    target: torch.Tensor
    loss: torch.Tensor
    kwargs: dict[str, Any]


LossListener = Callable[[LossCall], None]
BackwardListener = Callable[[torch.Tensor], None]
_in_loss = False


def _wrap_backward(original: Callable[..., Any]) -> Callable[..., Any]:
    def backward(tensors: Any, *args: Any, **kwargs: Any) -> Any:
        listeners = _BACKWARD.active()
        if listeners and isinstance(tensors, torch.Tensor) and tensors.requires_grad:
            for listener in listeners:
                listener(tensors)
        return original(tensors, *args, **kwargs)

    return functools.wraps(original)(backward)


def _wrap(name: str, kind: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    def make(original: Callable[..., Any]) -> Callable[..., Any]:
        def wrapper(input: Any, target: Any, *args: Any, **kwargs: Any) -> Any:
            global _in_loss
            listeners = _LOSSES.active()
            if _in_loss or not listeners:
                return original(input, target, *args, **kwargs)
            _in_loss = True
            try:
                loss = original(input, target, *args, **kwargs)
            finally:
                _in_loss = False
            if isinstance(input, torch.Tensor) and isinstance(target, torch.Tensor) and isinstance(loss, torch.Tensor):
                call = LossCall(kind, input, target, loss, kwargs)
                for listener in listeners:  # nested watches: each records the loss
                    listener(call)
            return loss

        return functools.wraps(original)(wrapper)

    return make


_LOSSES: SharedPatch[LossListener] = SharedPatch([(F, name, _wrap(name, kind)) for name, kind in LOSS_FUNCTIONS.items()])
_BACKWARD: SharedPatch[BackwardListener] = SharedPatch([(torch.autograd, "backward", _wrap_backward)])


@contextlib.contextmanager
def uncaptured() -> Iterator[None]:
    """Functional losses computed inside the block are ours (``hand_loss`` recomputes the
    user's loss to read it): they reach no listener."""
    global _in_loss
    outer, _in_loss = _in_loss, True
    try:
        yield
    finally:
        _in_loss = outer


@contextlib.contextmanager
def capture_losses(listener: LossListener, on_backward: BackwardListener | None = None) -> Iterator[None]:
    """Route every functional loss computed inside the block to ``listener``, and every
    tensor back-propagated to ``on_backward``."""
    handles = [_LOSSES.add(listener)]
    if on_backward is not None:
        handles.append(_BACKWARD.add(on_backward))
    try:
        yield
    finally:
        for h in handles:
            h.remove()


#: loss calls whose output has at most this many elements are copied and reduced together
#: with the other steps' calls at the next flush (one batch of ~15 ops instead of ~15 ops per
#: step); larger ones are reduced at once, where the step itself dwarfs a few small ops
DEFER_MAX_NUMEL = 1 << 16


@dataclass
class LossStats:
    """Device tensors summarising one loss call (no host sync).

    Values may be ``recorder.Part`` rows of a tensor batched over many steps."""

    kind: str
    n_classes: int
    loss: "torch.Tensor | Part"
    n_pred: "torch.Tensor | Part | None" = None
    n_label: "torch.Tensor | Part | None" = None
    correct: "torch.Tensor | Part | None" = None
    total: "torch.Tensor | Part | None" = None
    detail: dict[str, "torch.Tensor | int"] | None = None
    #: regression targets: (elements, squared deviations from each channel's mean, absolute
    #: deviations from each channel's median) — the input-independent predictors' losses on
    #: this very batch
    spread: "tuple[int, torch.Tensor | Part, torch.Tensor | Part] | None" = None


def class_count(kind: str, x: torch.Tensor, y: torch.Tensor) -> int:
    """K when the call can be read as a K-class prediction, else 0 (shapes only, no device work)."""
    if kind in CLASSIFICATION_KINDS:
        return int(x.shape[1] if x.dim() > 1 else x.shape[0]) if x.dim() else 0
    if kind in BINARY_KINDS:
        return 2
    if kind in REGRESSION_KINDS and x.shape == y.shape:
        return REGRESSION_CLASS_BINS
    return 0


#: a loss call whose output has more elements than this (a language model's [tokens, vocab]
#: logits) is read on its leading samples only, as many as fit: class counts, accuracy and
#: output ranges are statistics, and a sample of a few hundred targets per step (tens of
#: thousands per judgement window) estimates them; reading every logit costs a full pass
#: (argmax, min/max, logsumexp) over tens of MB per step
STATS_MAX_NUMEL = 1 << 20


def sampled(call: LossCall, max_numel: int = STATS_MAX_NUMEL) -> LossCall:
    """``call`` itself, or its leading samples (dim 0) when its output is larger than
    ``max_numel``."""
    x, y = call.input, call.target
    if x.numel() <= max_numel or x.dim() < 2 or y.dim() < 1 or y.shape[0] != x.shape[0]:
        return call
    rows = max(1, max_numel * x.shape[0] // x.numel())
    return LossCall(call.kind, x[:rows], y[:rows], call.loss, call.kwargs)


def deferrable(call: LossCall) -> bool:
    return call.input.numel() <= DEFER_MAX_NUMEL and call.target.numel() <= DEFER_MAX_NUMEL


def snapshot(call: LossCall) -> LossCall:
    """A private copy of a small loss call, reduced later by ``batched_stats``. Copies, since
    a loop may refill its target buffer in place before the flush. Runs every step: a
    detached clone carries no graph, so no ``no_grad`` context is needed."""
    return LossCall(call.kind, call.input.detach().clone(), call.target.detach().clone(), call.loss.detach(), call.kwargs)


def batched_losses(losses: list[torch.Tensor]) -> list[Part]:
    """Each loss as a scalar (float32, or float64 when a loss is float64: ``precision``), all
    in one tensor (one op for a flush's steps).

    A scalar loss already in that dtype is used as it is; finiteness is read from the value
    after the transfer (a mean is non-finite iff an element is, short of overflow)."""
    dtype = wide(*(t.dtype for t in losses))
    values = [v if v.dim() == 0 and v.dtype == dtype else v.to(dtype).mean() for v in (t.detach() for t in losses)]
    base = values[0].unsqueeze(0) if len(values) == 1 else torch.stack(values)
    return [Part(base, i) for i in range(len(values))]


def loss_stats(call: LossCall, *, detail: bool) -> LossStats:
    """Reduce one loss call to counts and scalars on its own device, now."""
    stats = batched_stats([call])[0]
    if detail:
        stats.detail = loss_detail(call)
    return stats


#: output elements the loss details (ranges, whether outputs are probabilities) are read on:
#: a dozen passes over them, 4.5 ms at [104, 10k] on a CPU core, 1.1 ms at this size
DETAIL_MAX_NUMEL = 1 << 18


def loss_detail(call: LossCall) -> dict[str, "torch.Tensor | int | str"]:
    """Output and target ranges and the op that made the output (sampled steps only), on the
    leading samples of a large output."""
    part = sampled(call, DETAIL_MAX_NUMEL)
    with torch.no_grad():
        d: dict[str, "torch.Tensor | int | str"] = _detail(part.kind, part.input.detach(), part.target.detach())  # type: ignore[assignment]
    d["out_op"] = output_op(call.input)
    weight = call.kwargs.get("weight")
    if call.kind in CLASSIFICATION_KINDS and isinstance(weight, torch.Tensor) and weight.dim() == 1 \
            and weight.numel() == class_count(call.kind, call.input, call.target):
        # per-class weights (``CrossEntropyLoss(weight=...)``): whether they favour the majority
        d["class_weight"] = weight.detach().to(torch.float32).clone()
    return d


def batched_stats(calls: list[LossCall]) -> list[LossStats]:
    """``LossStats`` for each call; calls of the same kind, shapes and device are reduced
    together in one pass over their stacked outputs and targets."""
    groups: dict[tuple[Any, ...], list[int]] = {}
    calls = [sampled(c) for c in calls]
    for i, c in enumerate(calls):
        key = (c.kind, tuple(c.input.shape), tuple(c.target.shape), c.input.dtype, c.target.dtype,
               c.input.device, c.kwargs.get("ignore_index", -100))
        groups.setdefault(key, []).append(i)
    out: list[LossStats | None] = [None] * len(calls)
    with torch.no_grad():
        for idx in groups.values():
            group = [calls[i] for i in idx]
            for j, stats in enumerate(_group_stats(group)):
                out[idx[j]] = stats
    return out  # type: ignore[return-value]


def _group_stats(calls: list[LossCall]) -> list[LossStats]:
    first = calls[0]
    kind, n = first.kind, len(calls)
    if n == 1:
        x, y = first.input.detach().unsqueeze(0), first.target.detach().unsqueeze(0)
    else:
        x, y = torch.stack([c.input.detach() for c in calls]), torch.stack([c.target.detach() for c in calls])
    stats = [LossStats(kind=kind, n_classes=0, loss=part) for part in batched_losses([c.loss for c in calls])]
    if kind in REGRESSION_KINDS and y[0].numel() > 1:
        sq, ab = target_spread(y)
        for i, st in enumerate(stats):
            st.spread = (int(y[0].numel()), Part(sq, i), Part(ab, i))
    probabilities = None if first.input.grad_fn is None else output_op(first.input) == "SigmoidBackward0"
    cls = _class_view(kind, x, y, first.kwargs, probabilities)
    if cls is None:
        return stats
    k, pred, label, valid = cls
    # long before clamp: NaN outputs must land in a valid bin, not index out of range
    # (an argmax is always in range; ignore_index labels are clamped, then weighted 0)
    pred = pred.reshape(n, -1).long()
    if kind not in CLASSIFICATION_KINDS:
        pred = pred.clamp(0, k - 1)
    label = label.reshape(n, -1).long().clamp(0, k - 1)
    valid = valid.reshape(n, -1)
    w = valid.to(torch.float32).reshape(-1)
    offset = (torch.arange(n, device=x.device) * k).unsqueeze(1)
    n_pred = torch.zeros(n * k, device=x.device, dtype=w.dtype).index_add_(0, (pred + offset).reshape(-1), w).view(n, k)
    n_label = torch.zeros(n * k, device=x.device, dtype=w.dtype).index_add_(0, (label + offset).reshape(-1), w).view(n, k)
    correct = ((pred == label) & valid).sum(1)
    total = valid.sum(1)
    for i, s in enumerate(stats):
        s.n_classes = k
        s.n_pred, s.n_label, s.correct, s.total = Part(n_pred, i), Part(n_label, i), Part(correct, i), Part(total, i)
    return stats


def target_spread(y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per call (dim 0 of ``y``): the sum of squared deviations from each channel's mean and
    of absolute deviations from each channel's median (channels: the last dim, when it is
    one of a few, else one)."""
    n = y.shape[0]
    per = y[0]
    c = per.shape[-1] if per.dim() >= 2 and per.shape[-1] <= MAX_TARGET_CHANNELS else 1
    cols = as_stat(y).reshape(n, -1, c)
    sq = ((cols - cols.mean(1, keepdim=True)) ** 2).sum((1, 2))
    ab = (cols - cols.median(1, keepdim=True).values).abs().sum((1, 2))
    return sq, ab


def _class_view(
    kind: str, x: torch.Tensor, y: torch.Tensor, kwargs: dict[str, Any], probabilities: bool | None = False
) -> tuple[int, torch.Tensor, torch.Tensor, torch.Tensor] | None:
    """(K, predicted class, label class, valid mask) for losses that can be read as classes.

    ``x`` and ``y`` carry a leading dimension over the stacked calls. ``probabilities``: the
    values fed to BCEWithLogitsLoss came out of a sigmoid (None: not known, a copy without
    autograd history; then a call whose values all lie in [0, 1] counts as such). The model
    then means them as probabilities, and its decision is > 0.5: read as logits, every
    prediction would be class 1, a collapse of our reading, not of the model."""
    if kind in CLASSIFICATION_KINDS:
        if x.dim() == 2:  # unbatched [K] inputs
            x, y = x.unsqueeze(1), y.unsqueeze(1)
        k = x.shape[2]
        pred = x.argmax(2)
        if y.is_floating_point() and y.shape == x.shape:  # class probabilities as targets
            label = y.argmax(2)
            valid = torch.ones_like(label, dtype=torch.bool)
        else:
            ignore = kwargs.get("ignore_index", -100)
            label = y
            valid = y != ignore
        return k, pred, label, valid
    if kind in BINARY_KINDS:
        threshold: "float | torch.Tensor" = 0.0 if kind == "bce_logits" and not probabilities else 0.5
        if kind == "bce_logits" and probabilities is None:  # copied without its history: read the values
            flat = x.reshape(x.shape[0], -1)
            in_unit = (flat.amin(1) >= 0) & (flat.amax(1) <= 1)
            threshold = (in_unit.to(x.dtype) * 0.5).view((x.shape[0],) + (1,) * (x.dim() - 1))
        pred = x > threshold
        label = y > 0.5
        return 2, pred, label, torch.ones_like(label, dtype=torch.bool)
    if kind in REGRESSION_KINDS and x.shape == y.shape:
        # Read as classes only counts when targets are labels; tgt_integral says so.
        flat = y.reshape(y.shape[0], -1)
        bound = (y.shape[0],) + (1,) * (y.dim() - 1)
        lo, hi = flat.amin(1).view(bound), flat.amax(1).view(bound)
        pred = torch.maximum(torch.minimum(x.round(), hi), lo)
        return REGRESSION_CLASS_BINS, pred, y.round(), torch.ones_like(y, dtype=torch.bool)
    return None


#: autograd nodes that only reshape or select: look through them to the op that made the values
_SHAPE_ONLY = frozenset(
    {"ViewBackward0", "UnsafeViewBackward0", "ReshapeAliasBackward0", "SqueezeBackward0", "SqueezeBackward1",
     "SqueezeBackward2", "UnsqueezeBackward0", "TransposeBackward0", "TransposeBackward1", "PermuteBackward0",
     "SelectBackward0", "SliceBackward0", "CloneBackward0", "ExpandBackward0", "CatBackward0", "StackBackward0",
     "IndexBackward0", "ContiguousBackward0", "AliasBackward0", "AsStridedBackward0"}
)


def output_op(t: torch.Tensor) -> str:
    """Name of the autograd op that produced the values fed to the loss (``SigmoidBackward0``,
    ``AddmmBackward0`` …), looking through reshapes; ``none`` without autograd history.
    A Python attribute walk: no device work, no sync."""
    fn = t.grad_fn
    for _ in range(16):
        if fn is None:
            return "none"
        name = type(fn).__name__
        if name not in _SHAPE_ONLY:
            return name
        nxt = [f for f, _ in fn.next_functions if f is not None]
        fn = nxt[0] if nxt else None
    return "none"


def _detail(kind: str, x: torch.Tensor, y: torch.Tensor) -> dict[str, "torch.Tensor | int"]:
    xf = as_stat(x)
    yf = as_stat(y)
    d: dict[str, "torch.Tensor | int"] = {
        "out_min": xf.min(),
        "out_max": xf.max(),
        "tgt_n": yf.numel(),
        "tgt_sum": yf.sum(),
        "tgt_sqsum": (yf * yf).sum(),
        "tgt_min": yf.min(),
        "tgt_max": yf.max(),
        "tgt_integral": ((yf == yf.round()) & (yf >= 0) & (yf < REGRESSION_CLASS_BINS)).all(),
    }
    if kind in CLASSIFICATION_KINDS and xf.dim() >= 1:
        dim = 1 if xf.dim() > 1 else 0
        in_unit = (xf >= 0).all() & (xf <= 1).all()
        d["out_is_prob"] = in_unit & ((xf.sum(dim) - 1).abs().max() < PROB_SUM_TOL)
        d["out_is_logprob"] = (xf <= 0).all() & (torch.logsumexp(xf, dim).abs().max() < PROB_SUM_TOL)
    return d
