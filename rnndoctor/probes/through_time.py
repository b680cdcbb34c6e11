"""The gradient profile through time: ‖∂L/∂x_t‖ for every time step of a recurrent input.

A tensor hook on the recurrent module's input receives ∂L/∂x during backward; it is reduced
on the device to one number per time step (mean over the batch of the per-sample norm,
padding excluded for packed input). Raw data does not require grad, so on sampled steps the
pre-hook swaps in a detached copy that does — it has no history, so nothing upstream changes.
design.md measured this at 1.00-1.01x per step.

A model without a fused RNN slices its input itself (an ``nn.*Cell`` loop, a hand-written
cell, a loop over raw parameters): :func:`attach_model_input` hooks the model's own input,
and :class:`HostValueGuard` keeps a forward that reads host values from it working as it did.
"""

from __future__ import annotations

from typing import Any, Callable

import torch
from torch import nn
from torch.nn.utils.rnn import PackedSequence
from torch.overrides import TorchFunctionMode

from .data import data_steps
from .precision import as_stat

OnProfile = Callable[[torch.Tensor, "torch.Tensor | None"], None]


def _batch_time(t: torch.Tensor, batch_first: bool) -> torch.Tensor:
    t = t if batch_first else t.transpose(0, 1)
    return t.unsqueeze(0) if t.dim() == 2 else t  # unbatched [T, F] -> [1, T, F]


def _profile_padded(grad: torch.Tensor, x: torch.Tensor, batch_first: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """([T] mean per-sample ‖∂L/∂x_t‖, share of the gradient that lands on trailing padding).

    Padding = the steps after a sample's last data step (``data.data_steps``: all-zero, or
    the batch's shared pad vector). A loss that reads the
    last *real* step (packing, gathering, masking) puts no gradient there; one that reads
    ``output[:, -1]`` of a post-padded batch does."""
    norms = _batch_time(as_stat(grad), batch_first).pow(2).sum(-1).sqrt()  # [B, T]
    seq = _batch_time(x, batch_first)
    b, t = norms.shape
    pos = torch.arange(1, t + 1, device=norms.device).expand(b, t)
    length = (pos * data_steps(seq)).max(1).values  # [B]
    on_pad = (pos > length.unsqueeze(1)) & (length.unsqueeze(1) > 0)
    pad_share = (norms * on_pad).sum() / norms.sum().clamp_min(1e-30)
    return norms.mean(0), pad_share


def _profile_packed(grad: torch.Tensor, batch_sizes: torch.Tensor) -> torch.Tensor:
    t = batch_sizes.shape[0]
    index = torch.repeat_interleave(torch.arange(t), batch_sizes).to(grad.device)
    norms = as_stat(grad).pow(2).sum(-1).sqrt()
    total = torch.zeros(t, device=grad.device, dtype=norms.dtype).index_add_(0, index, norms)
    return total / batch_sizes.to(device=grad.device, dtype=norms.dtype)


def attach(module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any], on_profile: OnProfile) -> tuple[tuple[Any, ...], dict[str, Any]] | None:
    """Hook the recurrent input of this call; returns replacement (args, kwargs) when the
    input had to be made to require grad, else None. ``on_profile`` gets a [T] device tensor
    and, for padded (not packed) input, the share of gradient on trailing padding."""
    in_kwargs = not args and "input" in kwargs
    x = kwargs["input"] if in_kwargs else (args[0] if args else None)
    data = x.data if isinstance(x, PackedSequence) else x
    if not isinstance(data, torch.Tensor) or not data.is_floating_point():
        return None
    replaced = None
    if not data.requires_grad:
        data = data.detach().requires_grad_(True)
        new_x: Any = PackedSequence(data, x.batch_sizes, x.sorted_indices, x.unsorted_indices) if isinstance(x, PackedSequence) else data
        replaced = ((args, {**kwargs, "input": new_x}) if in_kwargs else ((new_x, *args[1:]), kwargs))
    if isinstance(x, PackedSequence):
        sizes = x.batch_sizes
        reduce: Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor | None]] = lambda g: (_profile_packed(g, sizes), None)  # noqa: E731
    else:
        batch_first = bool(getattr(module, "batch_first", True))
        values = data.detach()
        reduce = lambda g: _profile_padded(g, values, batch_first)  # noqa: E731

    def hook(grad: torch.Tensor) -> None:
        try:  # runs inside the user's backward(): never raise into it
            on_profile(*reduce(grad))
        except Exception:
            pass

    data.register_hook(hook)
    return replaced


#: conversions to host values that torch refuses, or warns about, on a tensor that requires
#: grad; under :class:`HostValueGuard` they read the detached tensor instead (same values)
_HOST_CONVERSIONS = frozenset({
    torch.Tensor.numpy, torch.Tensor.__array__, torch.Tensor.item, torch.Tensor.tolist,
    torch.Tensor.__float__, torch.Tensor.__int__, torch.Tensor.__bool__, torch.Tensor.__index__,
    torch.Tensor.__complex__,
})


class HostValueGuard(TorchFunctionMode):
    """While the model runs on a stand-in input that requires grad, a forward that turns
    something computed from it into host values (``.numpy()``, ``.item()``, ``float(x)``)
    gets them as it would have without us: from the detached tensor, with no error and no
    warning. Every other op passes straight through."""

    def __torch_function__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        kwargs = kwargs or {}
        if func in _HOST_CONVERSIONS and args and isinstance(args[0], torch.Tensor) and args[0].requires_grad:
            return func(args[0].detach(), *args[1:], **kwargs)
        return func(*args, **kwargs)


def modes_active() -> bool:
    """Some torch-function mode is active (the user's, or a hand-cell observer): a stand-in
    and its guard would then have to nest with it, so the model's input is left alone."""
    try:
        return torch._C._len_torch_function_stack() > 0
    except AttributeError:  # pragma: no cover - older torch
        return True


def attach_model_input(x: torch.Tensor, target_batch: "Callable[[], int | None]", batch_first: bool, on_profile: OnProfile) -> torch.Tensor:
    """A stand-in for the model's float input ``[B, T, F]`` or ``[T, B, F]`` whose gradient
    gives ‖∂L/∂x_t‖, for models without a fused RNN (an ``nn.*Cell`` or hand-written loop
    slices the input itself). It is a clone of a leaf that requires grad, so a forward that
    writes into its input in place still may. Which dimension is time is decided when the
    gradient arrives, after the loss: the batch dimension is the one as long as the loss's
    targets (``target_batch``), else the declared layout."""
    leaf = x.detach().requires_grad_(True)
    leaf.register_hook(_profile_hook(x.detach(), target_batch, batch_first, on_profile))
    return leaf.clone()


def attach_embedded(e: torch.Tensor, target_batch: "Callable[[], int | None]", batch_first: bool, on_profile: OnProfile) -> None:
    """‖∂L/∂e_t‖ of an embedding's output ``[B, T, E]`` (or ``[T, B, E]``) for a model fed
    token ids with no fused RNN: the ids carry no gradient, the vectors the loop slices do.
    The output already requires grad, so a tensor hook on it is all it takes (nothing is
    replaced); time and batch are told apart as in :func:`attach_model_input`."""
    e.register_hook(_profile_hook(e.detach(), target_batch, batch_first, on_profile))


def _profile_hook(values: torch.Tensor, target_batch: "Callable[[], int | None]", batch_first: bool,
                  on_profile: OnProfile) -> Callable[[torch.Tensor], None]:
    def hook(grad: torch.Tensor) -> None:
        try:  # runs inside the user's backward(): never raise into it
            b, first = target_batch(), batch_first
            if b is not None and grad.shape[0] != grad.shape[1] and b in grad.shape[:2]:
                first = grad.shape[0] == b
            on_profile(*_profile_padded(grad, values, first))
        except Exception:
            pass

    return hook
