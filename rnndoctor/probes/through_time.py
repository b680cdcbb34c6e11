"""The gradient profile through time: ‖∂L/∂x_t‖ for every time step of a recurrent input.

A tensor hook on the recurrent module's input receives ∂L/∂x during backward; it is reduced
on the device to one number per time step (mean over the batch of the per-sample norm,
padding excluded for packed input). Raw data does not require grad, so on sampled steps the
pre-hook swaps in a detached copy that does — it has no history, so nothing upstream changes.
design.md measured this at 1.00-1.01x per step.
"""

from __future__ import annotations

from typing import Any, Callable

import torch
from torch import nn
from torch.nn.utils.rnn import PackedSequence

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
