"""What the data looks like as it reaches the model: sample fingerprints, scale, lengths,
and whether a map-style dataset returns the same sample twice for the same index.

Everything per batch is reduced on the device (projections, means, histograms) and only
on the data-probe schedule; the index re-fetch runs once per DataLoader, in the main
process, with every global RNG state saved and restored so the user's run is unchanged.
"""

from __future__ import annotations

import random
from typing import Any, Callable

import numpy as np
import torch
from torch import nn
from torch.nn.utils.rnn import PackedSequence, pad_packed_sequence
from torch.utils.data import DataLoader, IterableDataset

from ..signals import LARGE_INPUT
from .precision import as_stat
from .nonfinite import tensors_in  # noqa: F401  (re-exported for the watcher)

#: how many indices of a map-style dataset are fetched twice
REFETCH_INDICES = 8

class Fingerprinter:
    """Per-sample fingerprints: two fixed random projections of the flattened sample (float64).

    Identical samples give identical fingerprints; distinct ones collide with probability ~0.
    """

    def __init__(self) -> None:
        self._proj: dict[tuple[int, torch.device], torch.Tensor] = {}

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        flat = x.detach().reshape(x.shape[0], -1).to(torch.float64)
        key = (flat.shape[1], flat.device)
        proj = self._proj.get(key)
        if proj is None:
            g = torch.Generator().manual_seed(1234 + flat.shape[1])
            proj = torch.rand(flat.shape[1], 2, generator=g, dtype=torch.float64).add_(0.5).to(flat.device)
            self._proj[key] = proj
        return flat @ proj  # [B, 2]


def input_stats(x: torch.Tensor) -> dict[str, torch.Tensor]:
    """Scale and constancy of a batch, reduced on its device (features = last dim).

    ``all_zero`` is not computed here: it is ``abs_max == 0``, read after the transfer
    (``with_all_zero``)."""
    xf = as_stat(x)
    ax = xf.abs()
    feats = xf.reshape(-1, xf.shape[-1]) if xf.dim() > 1 else xf.reshape(-1, 1)
    return {
        "abs_max": ax.max(),
        "abs_mean": ax.mean(),
        "mean": xf.mean(),
        "std": xf.std() if xf.numel() > 1 else torch.zeros((), device=x.device, dtype=xf.dtype),
        "feature_std_max": feats.std(0).max() if feats.shape[0] > 1 else torch.zeros((), device=x.device, dtype=xf.dtype),
        "frac_large": (ax > LARGE_INPUT).to(xf.dtype).mean(),
    }


def with_all_zero(row: dict[str, Any]) -> dict[str, Any]:
    """Recorder finalizer for rows with ``input_stats``: every element is 0 iff max |x| is."""
    if "abs_max" in row:
        row["all_zero"] = int(row["abs_max"] == 0)
    return row


def data_steps(seq: torch.Tensor) -> torch.Tensor:
    """[B, T] True where a step of ``seq`` [B, T, F...] carries data, False on padding.

    Padding is an all-zero step, or — several features, a batch — a step equal to the pad
    vector: the last-step vector most sequences of the batch share. An embedding without
    ``padding_idx`` turns pad id 0 into a non-zero vector, the same one everywhere. A vector
    that ends only one sequence is not padding, nor one that ends every sequence exactly once
    (an end-of-sequence token). All on the device, no sync."""
    flat = seq.flatten(2)
    if not flat.is_floating_point() or flat.shape[-1] == 0:
        return (flat != 0).any(-1)
    # max |x| per step rather than (x != 0).any(): boolean reductions are ~6x slower on CPU;
    # a NaN step compares unequal to 0 and so carries data, as with != 0
    nonzero = ~(flat.abs().amax(-1) == 0)
    if flat.shape[0] < 2 or flat.shape[-1] < 2:
        return nonzero
    last = flat[:, -1]
    weights = torch.linspace(1.0, 2.0, last.shape[-1], device=last.device, dtype=last.dtype)
    key = (last * weights).sum(-1)  # the same vector gives the same key
    value, index = torch.mode(key)
    same = key == value
    shared = same.sum() >= 2
    is_pad = ((flat - last[index]).abs().amax(-1) == 0) & shared
    if flat.shape[1] >= 2:
        # every sequence ends in that vector, and none in it one step earlier: an end marker
        # (a seq2seq source's EOS token), not padding, which evens out different lengths
        end_marker = same.all() & ~is_pad[:, -2].any()
        is_pad = is_pad & ~end_marker
    return nonzero & ~is_pad


def padded_lengths(x: torch.Tensor, batch_first: bool) -> tuple[int, torch.Tensor, torch.Tensor]:
    """(T, histogram of lengths 0..T, interior zero share) where a sample's length is its
    last time step that carries data (``data_steps``): post-padding shows up as lengths below
    T. The interior zero share is that of steps that look like padding *before* each sample's
    last data step: ~0 when such a step is padding (embeddings, real values), large when zero
    steps are data (bits)."""
    seq = x.detach() if batch_first else x.detach().transpose(0, 1)
    if seq.dim() == 2:
        seq = seq.unsqueeze(-1)
    b, t = seq.shape[0], seq.shape[1]
    nonzero = data_steps(seq)  # [B, T]
    pos = torch.arange(1, t + 1, device=seq.device)
    lengths = (nonzero * pos).amax(1)  # 0 for an all-zero sample
    hist = torch.zeros(t + 1, device=seq.device, dtype=torch.float32).index_add_(
        0, lengths, torch.ones((), device=seq.device, dtype=torch.float32).expand(b))
    inside = pos <= lengths.unsqueeze(1)
    interior = ((~nonzero) & inside).sum().to(torch.float32) / inside.sum().clamp_min(1).to(torch.float32)
    return t, hist, interior


def packed_lengths(p: PackedSequence) -> tuple[int, torch.Tensor]:
    """(max length, histogram) of a PackedSequence from its batch_sizes, which live on the
    CPU by contract (no device sync): sequences ending at step t = sizes[t-1] - sizes[t]."""
    sizes = p.batch_sizes.to(torch.float32)
    t = sizes.shape[0]
    ends = sizes - torch.cat([sizes[1:], sizes.new_zeros(1)])
    return t, torch.cat([sizes.new_zeros(1), ends])


def padded_width(model_input: tuple[int, ...] | None, p: PackedSequence) -> int | None:
    """The time width of the padded batch the model was given, when its RNN got it packed:
    the declared maximum length the packed lengths are compared with. The model's input is
    ``[B, T, ...]`` or ``[T, B, ...]`` with B the packed batch (``batch_sizes`` is on the CPU:
    no sync); None when that cannot be told (no such input, B == T) or T is shorter than the
    longest packed sequence."""
    if model_input is None or len(model_input) < 2:
        return None
    b, longest = int(p.batch_sizes[0]), int(p.batch_sizes.shape[0])
    dims = [i for i in (0, 1) if model_input[i] == b]
    if len(dims) != 1:
        return None
    width = int(model_input[1 - dims[0]])
    return width if width >= longest else None


def _rng_state() -> tuple[Any, ...]:
    cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None
    return torch.get_rng_state(), np.random.get_state(), random.getstate(), cuda


def _restore(state: tuple[Any, ...]) -> None:
    torch.set_rng_state(state[0])
    np.random.set_state(state[1])
    random.setstate(state[2])
    if state[3] is not None:
        torch.cuda.set_rng_state_all(state[3])


def _summary(value: Any) -> Any:
    """A short, JSON-able picture of one sample part (tensor, array, number, tuple)."""
    if isinstance(value, torch.Tensor):
        flat = value.detach().reshape(-1)
        return {"shape": list(value.shape), "head": [round(float(v), 4) for v in flat[:6].tolist()]}
    if isinstance(value, np.ndarray):
        return _summary(torch.as_tensor(value))
    if isinstance(value, (int, float, bool)):
        return value
    if isinstance(value, (tuple, list)):
        return [_summary(v) for v in value[:4]]
    return repr(value)[:60]


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, (torch.Tensor, np.ndarray)) or isinstance(b, (torch.Tensor, np.ndarray)):
        ta, tb = torch.as_tensor(a), torch.as_tensor(b)
        return ta.shape == tb.shape and bool(torch.equal(ta, tb))
    if isinstance(a, (tuple, list)) and isinstance(b, (tuple, list)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    return bool(a == b)


def refetch(dataset: Any, indices: list[int]) -> list[dict[str, Any]]:
    """Fetch each index twice; report whether input and label came back the same.

    Runs between batches (when the DataLoader starts), in the main process; RNG states
    are restored, so the user's random stream is exactly as without rnndoctor."""
    rows = []
    state = _rng_state()
    try:
        for i in indices:
            a, b = dataset[i], dataset[i]
            if isinstance(a, (tuple, list)) and len(a) >= 2:
                same_x, same_y = _same(a[0], b[0]), _same(a[-1], b[-1])
                rows.append({"index": i, "same_input": int(same_x), "same_label": int(same_y),
                             "draw1": _summary(a[0]), "draw2": _summary(b[0]), "label1": _summary(a[-1]), "label2": _summary(b[-1])})
            else:
                rows.append({"index": i, "same_input": int(_same(a, b)), "same_label": None, "draw1": _summary(a), "draw2": _summary(b)})
    finally:
        _restore(state)
    return rows


def is_map_style(dataset: Any) -> bool:
    return not isinstance(dataset, IterableDataset) and hasattr(dataset, "__getitem__") and hasattr(dataset, "__len__")


class LoaderPatch:
    """Wraps ``DataLoader.__iter__`` while a watch is active to see each loader's dataset once."""

    def __init__(self, on_loader: Callable[[DataLoader], None]) -> None:
        self.on_loader = on_loader
        self._original: Callable[..., Any] | None = None
        self._seen: set[int] = set()

    def __enter__(self) -> "LoaderPatch":
        original = DataLoader.__iter__
        self._original = original
        patch = self

        def __iter__(loader: DataLoader) -> Any:  # noqa: N807
            if id(loader) not in patch._seen:
                patch._seen.add(id(loader))
                try:
                    patch.on_loader(loader)
                except Exception:  # a probe must never break the user's loop
                    pass
            return original(loader)

        DataLoader.__iter__ = __iter__  # type: ignore[method-assign]
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._original is not None:
            DataLoader.__iter__ = self._original  # type: ignore[method-assign]
            self._original = None


def recurrent_input(module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any] | None = None) -> Any:
    """The sequence input of an RNN module call (positional or ``input=``)."""
    if args:
        return args[0]
    return (kwargs or {}).get("input")


def recurrent_state(args: tuple[Any, ...], kwargs: dict[str, Any] | None = None) -> Any:
    """The initial state passed to a recurrent module call (positional or ``hx=``), or None."""
    if len(args) > 1:
        return args[1]
    return (kwargs or {}).get("hx")


#: per-call weights of a step's fingerprints (cycled): order matters, magnitudes stay bounded
_CALL_WEIGHTS = torch.rand(64, generator=torch.Generator().manual_seed(99), dtype=torch.float64).add_(0.5)


def _collapse(fp: torch.Tensor) -> torch.Tensor:
    """[R, 2] fingerprints of one sample's rows (an unbatched sequence) -> [1, 2]."""
    w = torch.arange(1, fp.shape[0] + 1, device=fp.device, dtype=fp.dtype).sqrt_()
    return (fp * w.unsqueeze(1)).sum(0, keepdim=True)


class StepSample:
    """What one step fed the model, and what its losses read, as per-sample fingerprints.

    A step may call the model once per time step (a hand-written loop over characters) and
    compute one loss per call, or once for the whole batch; either way a *sample* is everything
    the step's data calls fed in, and its *label* everything the step's losses compared with.
    Fingerprints of the calls are combined with fixed per-call weights (order matters); a
    call whose input has a ``grad_fn`` is the model's own activation, not data, and is left
    out. Evaluation passes (no grad) are grouped per batch instead: an input after a target
    starts the next group, so each evaluation batch is compared with the training samples.

    Which dimension of the model's input is the batch is not always known (a model may take
    ``[B, T, F]`` and transpose it for a sequence-first RNN, or take token ids ``[T, B]``):
    an input may come with its other orientation, fingerprinted alongside, and the group
    takes the one whose rows match its targets' (the declared one when both do).
    """

    def __init__(self, fingerprint: "Fingerprinter") -> None:
        self.fingerprint = fingerprint
        self.reset()

    def reset(self) -> None:
        #: the group's input fingerprints as declared, and with the other orientation
        self.x: list[torch.Tensor | None] = [None, None]
        self.y: torch.Tensor | None = None
        self.nx = self.ny = 0
        #: label elements per sample over the group's targets (1: one class or value per sample)
        self.label_size = 0
        self.mode: str | None = None
        #: an evaluation group's per-call fingerprints: an evaluation that computes no loss
        #: (accuracy only) has no target to delimit its batches, so each call is a batch
        self.eval_calls: list[torch.Tensor] = []
        #: per orientation: rows of two calls that do not line up
        self.broken = [False, False]
        self.broken_y = False

    @staticmethod
    def _add(total: torch.Tensor | None, fp: torch.Tensor, n: int) -> "torch.Tensor | None":
        if total is not None and total.shape != fp.shape:
            return None
        term = fp * _CALL_WEIGHTS[n % len(_CALL_WEIGHTS)].to(fp.device)
        return term if total is None else total + term

    def starts_new_group(self, mode: str) -> bool:
        """Whether an input in ``mode`` must first close the group held (the caller emits it)."""
        return self.mode is not None and (mode != self.mode or (mode == "eval" and self.ny > 0))

    def add_input(self, rows: torch.Tensor, mode: str, other: torch.Tensor | None = None) -> None:
        """``rows``: the call's input with the batch first (any dtype: token ids included);
        ``other``: the same input with its other dimension first, when which is the batch is
        not known."""
        self.mode = mode
        fp = self.fingerprint(rows)
        if mode == "eval":  # fingerprinted as a group of that one call would be
            self.eval_calls.append(self._add(None, fp, 0))
        for k, view_fp in enumerate((fp, self.fingerprint(other) if other is not None else fp)):
            if self.broken[k]:
                continue
            x = self._add(self.x[k], view_fp, self.nx)
            self.broken[k] = x is None
            self.x[k] = x
        self.nx += 1

    def add_target(self, target: torch.Tensor) -> None:
        if self.mode is None:
            return
        flat = target.detach().reshape(target.shape[0] if target.dim() else 1, -1)
        self.label_size += flat.shape[1]
        y = self._add(self.y, self.fingerprint(flat)[:, :1], self.ny)
        self.broken_y |= y is None and self.y is not None
        self.y, self.ny = y, self.ny + 1

    def take(self) -> "tuple[str, torch.Tensor, torch.Tensor, int] | None":
        """(mode, [B, 2] input fingerprints, [B] label fingerprints, label elements per sample)
        of the group, then reset; None when there is no aligned pair (rows of inputs and
        labels that do not match)."""
        xs = [x if not broken else None for x, broken in zip(self.x, self.broken)]
        y, mode, label_size = self.y, self.mode, self.label_size
        broken_y, eval_calls = self.broken_y, self.eval_calls
        self.reset()
        if y is None and mode == "eval" and eval_calls:
            # inputs without a target (an accuracy-only evaluation): each call's rows as
            # samples, enough to tell whether evaluation inputs were trained on
            x = torch.cat(eval_calls)
            return mode, x, torch.full((x.shape[0],), float("nan"), dtype=x.dtype, device=x.device), 0
        if y is None or broken_y or mode is None or all(x is None for x in xs):
            return None
        x = next((x for x in xs if x is not None and x.shape[0] == y.shape[0]), None)
        if x is None:
            x = xs[0]
            if x is None:
                return None
            if y.shape[0] == 1:
                x = _collapse(x)  # one unbatched sequence, one label
            elif x.shape[0] == 1:
                y = _collapse(y)  # one sequence (batch 1), a label per time step
            else:
                return None
        return mode, x, y[:, 0], label_size
