"""Loss and prediction capture: the ``steps`` row's loss, accuracy and class counts, and the
``predictions`` signal.

Every loss call of a step is kept (train and evaluation passes apart). On class-count steps
(schedule ``stats``) small calls are kept as private copies and reduced at the next flush
together with every other step's, large ones at once; on the other steps only the detached
loss is kept: no device work in the hot path, one batched reduction per flush.
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np
import torch

from ..recorder import Part
from .base import Context, Probe, Row
from .outputs import (
    LossCall,
    LossStats,
    batched_losses,
    batched_stats,
    class_count,
    deferrable,
    loss_detail,
    loss_stats,
    snapshot,
)


class LossProbe(Probe):
    """Loss of every step; class counts and loss details on their schedules."""

    name = "loss"
    follows = ("stats", "detail")
    signals = ("steps", "predictions")

    def start(self, ctx: Context) -> list[Any]:
        self.ctx = ctx
        self._train = StepLosses()
        self._eval = StepLosses()
        self._batcher = LossBatcher()
        ctx.recorder.before_flush(self._batcher.take_deferred)
        return []

    def loss(self, call: LossCall, grad: bool) -> None:
        (self._train if grad else self._eval).add(call, detail=self.ctx.due("detail"), counts=self.ctx.due("stats"))

    def end_step(self, step: int, row: Row) -> None:
        self._emit_eval(step)
        acc, self._train = self._train, StepLosses()
        row.update(acc.columns())
        self._batcher.add(row, self._predictions(step, "train", acc), acc)

    def stop(self) -> None:
        self._emit_eval(self.ctx.step)

    def _emit_eval(self, step: int) -> None:
        """Evaluation losses since the last step: one ``mode=eval`` row at the open step."""
        if not self._eval.calls:
            return
        acc, self._eval = self._eval, StepLosses()
        row = {"step": step, "mode": "eval", **acc.columns()}
        self.ctx.recorder.add("steps", row, finalize=with_loss_finite)
        self._batcher.add(row, self._predictions(step, "eval", acc), acc)

    def _predictions(self, step: int, mode: str, acc: "StepLosses") -> Row | None:
        """The step's ``predictions`` row; its counts are filled in by the loss batcher."""
        if not acc.n_classes:
            return None
        row = {"step": step, "mode": mode, "cls": list(range(acc.n_classes))}
        self.ctx.recorder.add("predictions", row, finalize=classes_seen)
        return row


def classes_seen(row: Row) -> Row:
    """Keep only the classes predicted or labelled in the step (on the writer thread, host
    values): a language model's 18k-token vocabulary would otherwise write two 18k-long
    lists per step; a batch sees a few hundred."""
    pred, label = row.get("n_pred"), row.get("n_label")
    if pred is None or label is None:
        return row
    p, q = np.asarray(pred), np.asarray(label)
    if p.shape != q.shape or p.shape != (len(row["cls"]),):
        return row
    keep = np.flatnonzero((p != 0) | (q != 0))
    if len(keep) < len(p):
        row["cls"] = np.asarray(row["cls"])[keep].tolist()
        row["n_pred"], row["n_label"] = p[keep], q[keep]
    return row


class StepLosses:
    """The loss calls of one step (train or eval)."""

    def __init__(self) -> None:
        self.calls = 0
        self.kind: str | None = None
        self.n_classes = 0
        self.snapshots: list[LossCall] = []
        self.eager: list[LossStats] = []
        #: (kind, detached loss) of calls recorded without class counts
        self.losses: list[tuple[str, torch.Tensor]] = []
        self.detail: dict[str, Any] | None = None
        #: the calls differ in kind or class count (a main loss and an auxiliary one): their
        #: mean is no one loss, to be compared with no one loss's reference
        self.mixed = False

    def add(self, call: LossCall, *, detail: bool, counts: bool) -> None:
        if self.calls == 0:
            self.kind = call.kind
            if counts:
                self.n_classes = class_count(call.kind, call.input, call.target)
        elif call.kind != self.kind or (counts and self.n_classes and class_count(call.kind, call.input, call.target) != self.n_classes):
            self.mixed = True
        if detail and self.detail is None:
            self.detail = loss_detail(call)
        if not counts:
            self.losses.append((call.kind, call.loss.detach()))
        elif deferrable(call):
            self.snapshots.append(snapshot(call))
        else:
            self.eager.append(loss_stats(call, detail=False))
        self.calls += 1

    def columns(self) -> Row:
        row: Row = {"loss_calls": self.calls}
        if self.calls:
            row["loss_kind"] = self.kind
            if self.n_classes:
                row["n_classes"] = self.n_classes
            if self.mixed:
                row["loss_mixed"] = 1
            if self.detail:
                row.update(self.detail)
        return row


class LossBatcher:
    """Fills the loss, accuracy and class-count values of ``steps``/``predictions`` rows:
    at once for steps with only large calls, else at the recorder's next flush, when the
    copies and losses kept from all those steps are reduced in one batch."""

    def __init__(self) -> None:
        self._waiting: list[tuple[Row, Row | None, StepLosses]] = []

    def add(self, row: Row, pred_row: Row | None, acc: StepLosses) -> None:
        if not acc.calls:
            return
        if acc.snapshots or acc.losses:
            self._waiting.append((row, pred_row, acc))
        else:
            _fill_loss_values(row, pred_row, acc.eager)

    def take_deferred(self) -> Callable[[], None] | None:
        """Recorder ``before_flush`` taker: the waiting steps leave with a job that reduces
        their copies in one batch, run by the writer."""
        waiting, self._waiting = self._waiting, []
        if not waiting:
            return None

        def job() -> None:
            stats = iter(batched_stats([c for *_, acc in waiting for c in acc.snapshots]))
            kept = [loss for *_, acc in waiting for _, loss in acc.losses]
            losses = iter(batched_losses(kept) if kept else [])
            for row, pred_row, acc in waiting:
                step_stats = acc.eager + [next(stats) for _ in acc.snapshots]
                step_stats += [LossStats(kind=kind, n_classes=0, loss=next(losses)) for kind, _ in acc.losses]
                _fill_loss_values(row, pred_row, step_stats)

        return job


def _fill_loss_values(row: Row, pred_row: Row | None, stats: list[LossStats]) -> None:
    """Mean loss over the step's calls; class counts summed over the calls that share the
    first call's classes. One call (the usual case) hands its values over as they are."""
    first = stats[0]
    same = [s for s in stats if s.n_pred is not None and s.n_classes == first.n_classes] if first.n_pred is not None else []
    if len(stats) == 1:
        row["loss"] = first.loss
    else:
        row["loss"] = torch.stack([_tensor(s.loss) for s in stats]).sum() / len(stats)
    spreads = [s.spread for s in stats if s.spread is not None]
    if spreads:
        # the mean and median predictors' losses on this step's batches (rules compare them with the loss)
        row["tgt_elems"] = sum(n for n, _, _ in spreads)
        row["tgt_spread_sq"], row["tgt_spread_abs"] = (
            spreads[0][1:] if len(spreads) == 1 else
            (torch.stack([_tensor(sq) for _, sq, _ in spreads]).sum(), torch.stack([_tensor(ab) for _, _, ab in spreads]).sum()))
    if not same:
        return
    keys = ("n_pred", "n_label", "correct", "total")
    values = {k: getattr(first, k) for k in keys} if len(same) == 1 else {
        k: torch.stack([_tensor(getattr(s, k)) for s in same]).sum(0) for k in keys
    }
    row.update(correct=values["correct"], total=values["total"])
    if pred_row is not None:
        pred_row.update(n_pred=values["n_pred"], n_label=values["n_label"])


def _tensor(v: "torch.Tensor | Part") -> torch.Tensor:
    return v.base[v.index] if isinstance(v, Part) else v


def with_loss_finite(row: Row) -> Row:
    """``loss_finite`` from the transferred mean loss (NaN/Inf anywhere makes the mean so)."""
    if "loss" in row:
        row["loss_finite"] = int(finite(row["loss"]))
    return row


def finite(v: Any) -> bool:
    return v is None or (isinstance(v, (int, float)) and v == v and abs(v) != float("inf"))
