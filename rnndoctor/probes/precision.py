"""The dtype every statistic is computed in: the user's precision, never less than float32.

A float64 run may hold values far beyond float32's range (a loss of 1.9e39 is finite in
float64 and ``inf`` in float32), so a float64 tensor's statistics stay float64; half and
bfloat16 (and integers) are widened to float32, whose range covers theirs.
"""

from __future__ import annotations

import torch


def wide(*dtypes: torch.dtype) -> torch.dtype:
    """float64 when any of ``dtypes`` is float64, else float32."""
    return torch.float64 if torch.float64 in dtypes else torch.float32


def as_stat(t: torch.Tensor) -> torch.Tensor:
    """``t`` detached, in the dtype its statistics are computed in (a no-op when it already is)."""
    return t.detach().to(wide(t.dtype))
