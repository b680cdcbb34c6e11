"""Hand-made recordings for rule tests: a Run built from arrays, no torch, no training."""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import pandas as pd

from rnndoctor.run import Run


def classification_run(
    n: int = 300,
    *,
    acc: float | Sequence[float] = 0.5,
    loss: float | Sequence[float] = 0.693,
    label_shares: Sequence[float] = (0.5, 0.5),
    pred_shares: Sequence[float] | None = None,
    batch: int = 100,
    kind: str = "cross_entropy",
    out_range: tuple[float, float] = (-3.0, 3.0),
    tgt_range: tuple[float, float] | None = None,
    out_is_prob: int = 0,
    out_is_logprob: int = 0,
    seed: int = 0,
    noise: float = 0.0,
) -> Run:
    """A classification run with the given accuracy/loss per step and class shares."""
    rng = np.random.default_rng(seed)
    k = len(label_shares)
    accs = np.broadcast_to(np.asarray(acc, float), (n,))
    losses = np.broadcast_to(np.asarray(loss, float), (n,)) + noise * rng.standard_normal(n)
    pred_shares = label_shares if pred_shares is None else pred_shares
    steps = []
    preds = []
    lo, hi = tgt_range if tgt_range is not None else (0, k - 1)
    for s in range(n):
        row: dict[str, Any] = {
            "step": s,
            "mode": "train",
            "loss": float(losses[s]),
            "loss_finite": int(np.isfinite(losses[s])),
            "loss_kind": kind,
            "loss_calls": 1,
            "n_classes": k if kind not in ("mse", "l1") else 16,
            "correct": round(accs[s] * batch),
            "total": batch,
            "grad_norm": 1.0,
            "lr": 0.01,
        }
        if s < 20 or s % 10 == 0:
            y_mean = sum(i * p for i, p in enumerate(label_shares))
            y_sq = sum(i * i * p for i, p in enumerate(label_shares))
            row.update(
                out_min=out_range[0],
                out_max=out_range[1],
                tgt_n=batch,
                tgt_sum=y_mean * batch,
                tgt_sqsum=y_sq * batch,
                tgt_min=lo,
                tgt_max=hi,
                tgt_integral=1,
                out_is_prob=out_is_prob,
                out_is_logprob=out_is_logprob,
            )
        steps.append(row)
        for c in range(k):
            preds.append({"step": s, "mode": "train", "cls": c, "n_pred": pred_shares[c] * batch, "n_label": label_shares[c] * batch})
    return make_run(steps=steps, predictions=preds)


def param_rows(
    n: int,
    names: Sequence[str] = ("lstm.weight_hh_l0", "lstm.bias_hh_l0", "out.weight"),
    *,
    grad: float | Sequence[float] | dict[str, Any] = 1.0,
    update_ratio: float = 1e-3,
    weight_norm: float | dict[str, Any] = 5.0,
    grad_none: dict[str, int] | None = None,
) -> list[dict[str, Any]]:
    rows = []
    for s in range(n):
        for name in names:
            g = grad[name] if isinstance(grad, dict) else grad
            g = g[s] if isinstance(g, (list, tuple, np.ndarray)) else g
            w = weight_norm[name] if isinstance(weight_norm, dict) else weight_norm
            w = w[s] if isinstance(w, (list, tuple, np.ndarray)) else w
            rows.append(
                {
                    "step": s,
                    "param": name,
                    "grad_norm": g,
                    "grad_none": (grad_none or {}).get(name, 0),
                    "weight_norm": w,
                    "update_ratio": update_ratio,
                    "numel": 100,
                    "ndim": 1 if "bias" in name else 2,
                }
            )
    return rows


def update_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The ``updates`` part of ``param_rows`` output."""
    keys = ("step", "param", "weight_norm", "update_ratio", "numel", "ndim")
    return [{k: r[k] for k in keys} for r in rows]


def grad_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    keys = ("step", "param", "grad_norm", "grad_none")
    return [{k: r[k] for k in keys} for r in rows]


def make_run(**signals: Sequence[dict[str, Any]] | pd.DataFrame) -> Run:
    frames = {k: (v if isinstance(v, pd.DataFrame) else pd.DataFrame(list(v))) for k, v in signals.items()}
    return Run(meta={"status": "completed", "steps": len(frames.get("steps", []))}, signals=frames)


def with_signal(run: Run, **signals: Sequence[dict[str, Any]]) -> Run:
    frames = dict(run.signals)
    frames.update({k: pd.DataFrame(list(v)) for k, v in signals.items()})
    return Run(meta=run.meta, signals=frames)


def ids(findings) -> list[str]:  # noqa: ANN001
    return [f.id for f in findings]
