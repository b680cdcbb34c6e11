"""Gradient norms, update-to-weight ratios and non-finite parameters, many norms at once.

``torch._foreach_norm`` computes every parameter's norm in a few kernels and returns device
tensors; nothing here reads a value back to the host.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn


def _norms(tensors: list[torch.Tensor], device: torch.device) -> torch.Tensor:
    if not tensors:
        return torch.zeros(0, device=device)
    norms = torch._foreach_norm(tensors)
    return torch.stack([n.to(device=device, dtype=torch.float32) for n in norms])


class ParamProbe:
    """Per-parameter gradient norm before the update, weight norm and update ratio after."""

    def __init__(self, named_params: list[tuple[str, nn.Parameter]]) -> None:
        self.names = [n for n, _ in named_params]
        self.params = [p for _, p in named_params]
        self.device = self.params[0].device if self.params else torch.device("cpu")
        self._grad_norm: torch.Tensor | None = None
        self._grad_none: list[int] = []
        self._before: list[torch.Tensor] | None = None
        self._before_norm: torch.Tensor | None = None
        self._manual: dict[int, torch.Tensor] = {}
        #: global L2 norm of the gradients of the step being recorded (device scalar)
        self.global_grad_norm: torch.Tensor | None = None

    def before_update(self) -> None:
        """Called from the optimizer's step pre-hook: gradients are final, weights not yet moved."""
        with torch.no_grad():
            self._grad_norm, self._grad_none = self._grad_norms()
            self._before = [p.detach().clone() for p in self.params]
            self._before_norm = _norms(self._before, self.device)

    def on_grad_accumulated(self, index: int, param: torch.Tensor) -> None:
        """Manual-update loops (no optimizer): keep the gradient norm while it still exists."""
        if param.grad is not None:
            self._manual[index] = param.grad.detach().norm().float().to(self.device)

    def _grad_norms(self) -> tuple[torch.Tensor, list[int]]:
        present = [i for i, p in enumerate(self.params) if p.grad is not None]
        out = torch.full((len(self.params),), float("nan"), device=self.device)
        self.global_grad_norm = torch.zeros((), device=self.device)
        if present:
            norms = _norms([self.params[i].grad.detach() for i in present], self.device)  # type: ignore[union-attr]
            out[torch.tensor(present, device=self.device)] = norms
            self.global_grad_norm = norms.pow(2).sum().sqrt()
        none = [0 if p.grad is not None else 1 for p in self.params]
        return out, none

    def take_row(self, step: int) -> dict[str, Any] | None:
        """The ``params`` row of the step that just ended (None if nothing was captured)."""
        with torch.no_grad():
            if self._grad_norm is None and self._manual:
                grad = torch.full((len(self.params),), float("nan"), device=self.device)
                idx = sorted(self._manual)
                grad[torch.tensor(idx, device=self.device)] = torch.stack([self._manual[i] for i in idx])
                self._grad_norm = grad
                self.global_grad_norm = torch.stack([self._manual[i] for i in idx]).pow(2).sum().sqrt()
                self._grad_none = [0 if i in self._manual else 1 for i in range(len(self.params))]
            if self._grad_norm is None:
                return None
            weight_norm = _norms([p.detach() for p in self.params], self.device)
            if self._before is not None and self._before_norm is not None:
                deltas = torch._foreach_sub([p.detach() for p in self.params], self._before)
                update = _norms(list(deltas), self.device) / self._before_norm.clamp_min(1e-30)
            else:
                update = torch.full_like(weight_norm, float("nan"))
        row = {
            "step": step,
            "param": list(self.names),
            "grad_norm": self._grad_norm,
            "grad_none": list(self._grad_none),
            "weight_norm": weight_norm,
            "update_ratio": update,
            "numel": [p.numel() for p in self.params],
            "ndim": [p.dim() for p in self.params],
        }
        self._grad_norm, self._before, self._before_norm = None, None, None
        self._manual.clear()
        return row

