"""Hand-written losses: outputs and targets read back from the autograd graph of a scalar
that was back-propagated with no ``torch.nn.functional`` loss in it.

Why: ``-(log_softmax(z).gather(1, y[:, None])).mean()``, ``((pred - y) ** 2).mean()`` or
``-(y * log(p) + (1 - y) * log(1 - p)).mean()`` are common in tutorials and older code. The
functional wrappers never see them, so a run written that way had no loss, no accuracy and no
class counts, and every rule judging those stayed silent. The graph about to be
back-propagated still holds what was saved for backward: the log-probabilities and the
gathered labels, the difference ``pred - y``, the probabilities and the labels multiplying
their logarithm. A short walk from the root (a few dozen Python attribute reads, before the
backward frees them) finds the nearest of these shapes:

- ``gather``/indexing of ``log_softmax`` (or ``log(softmax)``)  -> cross-entropy, labels
- ``logsumexp(z) - z.gather(...)`` (the picked logit)           -> cross-entropy, labels
- ``targets * log_softmax`` with targets outside the graph        -> cross-entropy, soft/one-hot labels
- ``y * log(p)`` / ``y * logsigmoid(z)``                          -> binary cross-entropy
- ``(pred - y) ** 2`` / ``(pred - y) * (pred - y)``               -> squared error, ``y = pred - diff``

The recorded loss is then the standard loss of those outputs and targets (a loop that
back-propagates ``loss / accumulation_steps`` still records the loss itself, so it compares
with chance). Anything else is recorded as it was back-propagated, kind ``logged``: a loss
curve without classes. Nothing here changes the graph or the user's tensors.
"""

from __future__ import annotations

from collections import deque
from typing import Any

import torch
import torch.nn.functional as F

from .outputs import LossCall

#: graph nodes looked at from the root before giving up (a hand loss is a few ops deep)
MAX_NODES = 48
#: nodes that keep the element order of their input: a prediction viewed through them is
#: the model's output reshaped
_ORDER_KEEPING = frozenset({"ViewBackward0", "UnsafeViewBackward0", "ReshapeAliasBackward0", "SqueezeBackward0",
                            "SqueezeBackward1", "SqueezeBackward2", "UnsqueezeBackward0", "CloneBackward0"})


def read(root: torch.Tensor, model_output: torch.Tensor | None = None) -> LossCall:
    """The loss call ``root`` stands for: recognised outputs and targets, or the value alone."""
    try:
        call = recognise(root, model_output)
    except (RuntimeError, AttributeError, IndexError, TypeError):  # saved tensors freed, odd graphs
        call = None
    if call is not None:
        # the user's loss going NaN/Inf is what the record must show, whatever ours reads
        value = root.detach().reshape(()).to(call.loss.dtype)
        with torch.no_grad():
            call.loss = torch.where(torch.isfinite(value), call.loss, value)
        return call
    value = root.detach().reshape(1)
    return LossCall("logged", value, value, value, {})


def recognise(root: torch.Tensor, model_output: torch.Tensor | None = None) -> LossCall | None:
    """Breadth-first from ``root.grad_fn``: the first node that reads as a known loss."""
    start = root.grad_fn
    if start is None:
        return None
    queue: deque[Any] = deque([start])
    seen = {id(start)}
    while queue and len(seen) <= MAX_NODES:
        node = queue.popleft()
        call = _as_loss(node, model_output)
        if call is not None:
            return call
        for child, _ in node.next_functions:
            if child is not None and id(child) not in seen:
                seen.add(id(child))
                queue.append(child)
    return None


def _name(node: Any) -> str:
    return type(node).__name__ if node is not None else ""


def _dim(saved: Any, ndim: int) -> int:
    """A dim saved by autograd, as a non-negative index (``-1`` comes back as 2**64 - 1)."""
    d = int(saved)
    if d >= 1 << 63:
        d -= 1 << 64
    return d % max(ndim, 1)


def _child(node: Any, i: int) -> Any:
    nxt = node.next_functions
    return nxt[i][0] if i < len(nxt) else None


def _as_loss(node: Any, model_output: torch.Tensor | None) -> LossCall | None:
    name = _name(node)
    if name in ("GatherBackward0", "IndexBackward0"):
        return _picked(node)
    if name == "MulBackward0":
        return _product(node, model_output)
    if name == "LogBackward0" and _name(_child(node, 0)) in ("GatherBackward0", "IndexBackward0"):
        return _selected_probs(_child(node, 0))
    if name == "SubBackward0" and _name(_child(node, 0)) == "LogsumexpBackward0":
        return _logsumexp_minus_picked(node)
    if name == "PowBackward0" and getattr(node, "_saved_exponent", None) == 2:
        return _squared(_child(node, 0), node._saved_self, model_output)
    return None


def _log_probs(node: Any) -> tuple[torch.Tensor, int] | None:
    """(log-probabilities, class dim) when ``node`` made them: ``log_softmax`` or ``log(softmax)``."""
    name = _name(node)
    if name == "LogSoftmaxBackward0":
        result = node._saved_result.detach()
        return result, _dim(node._saved_dim, result.dim())
    if name == "LogBackward0" and _name(_child(node, 0)) == "SoftmaxBackward0":
        soft = _child(node, 0)
        with torch.no_grad():
            saved = node._saved_self.detach()
            return saved.clamp_min(torch.finfo(saved.dtype).tiny).log(), _dim(soft._saved_dim, saved.dim())
    return None


def _classification(logp: torch.Tensor, dim: int, target: torch.Tensor) -> LossCall:
    """A cross-entropy call over ``logp`` (class dim moved to 1, as ``F.cross_entropy`` takes it)."""
    x = logp.movedim(dim, 1) if logp.dim() > 1 else logp
    y = target.detach()
    if y.is_floating_point() and y.shape == logp.shape and logp.dim() > 1:
        y = y.movedim(dim, 1)
    with torch.no_grad():
        loss = F.nll_loss(x, y) if not y.is_floating_point() else -(x * y).sum(1).mean()
    return LossCall("cross_entropy", x, y, loss, {})


def _selected_probs(select: Any) -> LossCall | None:
    """``log(softmax(z)[arange(B), y])``: the probabilities picked first, the log after."""
    soft = _child(select, 0)
    if _name(soft) != "SoftmaxBackward0":
        return None
    with torch.no_grad():
        logp = soft._saved_result.detach().clamp_min(torch.finfo(soft._saved_result.dtype).tiny).log()
    dim = _dim(soft._saved_dim, logp.dim())
    return _picked_labels(logp, dim, select)


def _logsumexp_minus_picked(sub: Any) -> LossCall | None:
    """``logsumexp(z, 1) - z.gather(1, y[:, None]).squeeze(1)`` (or ``z[arange(B), y]``):
    cross-entropy written out on the logits."""
    lse, picked = _child(sub, 0), _child(sub, 1)
    for _ in range(4):  # look through the squeeze/view of the picked logits
        if _name(picked) not in _ORDER_KEEPING:
            break
        picked = _child(picked, 0)
    if _name(picked) not in ("GatherBackward0", "IndexBackward0") or _child(picked, 0) is not _child(lse, 0):
        return None
    z = lse._saved_self.detach()
    dims = lse._saved_dim
    dims = list(dims) if isinstance(dims, (tuple, list)) else [dims]
    if len(dims) != 1:
        return None
    dim = _dim(dims[0], z.dim())
    with torch.no_grad():
        logp = F.log_softmax(z, dim)
    return _picked_labels(logp, dim, picked)


def _picked(node: Any) -> LossCall | None:
    """``logp.gather(dim, y.unsqueeze(dim))`` or ``logp[torch.arange(B), y]`` on log-probabilities."""
    found = _log_probs(_child(node, 0))
    return _picked_labels(*found, node) if found is not None else None


def _picked_labels(logp: torch.Tensor, dim: int, node: Any) -> LossCall | None:
    """The labels a gather (its index) or an indexing (its last index) picked from ``logp``."""
    if _name(node) == "GatherBackward0":
        return _gathered_labels(logp, dim, node)
    return _indexed_labels(logp, dim, node)


def _gathered_labels(logp: torch.Tensor, dim: int, node: Any) -> LossCall | None:
    index, gdim = node._saved_index, _dim(node._saved_dim, logp.dim())
    if gdim != dim or index.dim() != logp.dim() or index.shape[gdim] != 1:
        return None
    target = index.squeeze(gdim)
    if logp.dim() > 1 and target.shape != logp.shape[:dim] + logp.shape[dim + 1:]:
        return None
    return _classification(logp, dim, target)


def _indexed_labels(logp: torch.Tensor, dim: int, node: Any) -> LossCall | None:
    """``logp[torch.arange(B), y]``: the last index is the labels."""
    indices = [i for i in node._saved_indices if i is not None]
    if logp.dim() != 2 or dim != 1 or len(indices) != 2:
        return None
    rows, labels = indices
    if rows.dim() != 1 or labels.dim() != 1 or labels.shape[0] != logp.shape[0] or labels.is_floating_point():
        return None
    return _classification(logp, dim, labels)


def _product(node: Any, model_output: torch.Tensor | None) -> LossCall | None:
    """``targets * logp`` (soft labels) or ``y * log(p)`` (binary): one factor outside the graph."""
    a, b = _child(node, 0), _child(node, 1)
    if a is not None and a is b and _name(a) == "SubBackward0":  # (pred - y) * (pred - y)
        return _squared(a, node._saved_self, model_output)
    if (a is None) == (b is None):
        return None
    if a is None:  # targets first: y * log(p)
        other_node, target = b, node._saved_self
    else:
        other_node, target = a, node._saved_other
    if not isinstance(target, torch.Tensor) or not target.is_floating_point():
        return None
    found = _log_probs(other_node)
    if found is not None:
        logp, dim = found
        return _classification(logp, dim, target) if target.shape == logp.shape else None
    name = _name(other_node)
    if name == "LogSigmoidBackward0":
        z = other_node._saved_self.detach()
        if z.shape != target.shape:
            return None
        with torch.no_grad():
            loss = F.binary_cross_entropy_with_logits(z, target.detach())
        return LossCall("bce_logits", z, target.detach(), loss, {})
    if name == "LogBackward0" and _name(_child(other_node, 0)) != "RsubBackward1":
        p = other_node._saved_self.detach()
        if p.shape != target.shape:
            return None
        with torch.no_grad():  # written out: F.binary_cross_entropy raises on NaN inputs
            y = target.detach()
            loss = -(y * p.log().clamp_min(-100) + (1 - y) * (1 - p).log().clamp_min(-100)).mean()
        return LossCall("bce", p, target.detach(), loss, {})
    return None


def _squared(sub: Any, diff: torch.Tensor, model_output: torch.Tensor | None) -> LossCall | None:
    """``(pred - y) ** 2``: ``y`` from the difference and the prediction."""
    if _name(sub) != "SubBackward0":
        return None
    a, b = _child(sub, 0), _child(sub, 1)
    if (a is None) == (b is None):
        return None
    pred = _prediction(a if a is not None else b, diff, model_output)
    if pred is None:
        return None
    diff = diff.detach()
    with torch.no_grad():
        # pred - y = diff, or y - pred = diff; labels read back exactly up to rounding
        y = pred - diff if a is not None else pred + diff
        y = torch.where((y - y.round()).abs() < 1e-4, y.round(), y)
        loss = F.mse_loss(pred, y)
    return LossCall("mse", pred, y, loss, {})


def _prediction(node: Any, like: torch.Tensor, model_output: torch.Tensor | None) -> torch.Tensor | None:
    """The values ``node`` produced, shaped like ``like``: saved by the node itself (a sigmoid,
    a tanh), or the model's last output seen through order-keeping views."""
    result = getattr(node, "_saved_result", None)
    if isinstance(result, torch.Tensor) and result.shape == like.shape:
        return result.detach()
    if model_output is None or model_output.grad_fn is None:
        return None
    for _ in range(4):
        if node is model_output.grad_fn:
            out = model_output.detach()
            return out.reshape(like.shape) if out.numel() == like.numel() else None
        if _name(node) not in _ORDER_KEEPING:
            return None
        node = _child(node, 0)
    return None
