"""The step clock: when a step ends, which schedules are due, when the recorder flushes.

A *step* is one optimizer step (several optimizers stepping after one backward pass count
once); loops that update parameters by hand count a backward pass that produced gradients.
A step is closed lazily, at the next forward/loss/exit after its update, so the update
ratio sees the weights after every optimizer has moved them.
"""

from __future__ import annotations

import time
from typing import Any, Callable

import torch

from .probes import ProbeSet
from .probes.base import Clock
from .probes.loss import finite, with_loss_finite
from .recorder import Recorder
from .schedule import StepSchedules, flush_schedule


class StepClock(Clock):
    """Counts steps, closes them (the probes' ``end_step`` and the ``steps`` row) and paces
    the recorder's flushes."""

    def __init__(
        self,
        recorder: Recorder,
        probes: ProbeSet,
        schedules: StepSchedules,
        *,
        flush_every: int,
        on_step: Callable[[int], None] | None = None,
        max_steps: int | None = None,
    ) -> None:
        self.recorder, self.probes, self.schedules = recorder, probes, schedules
        self.on_step, self.max_steps = on_step, max_steps
        self.step = 0
        self._flush_due = flush_schedule(flush_every)
        self._flush_pending = False
        self._t0 = time.perf_counter()
        #: a gradient was accumulated since the step opened
        self.grads_seen = False
        #: an optimizer step was ever seen (then gradients alone never end a step)
        self.optimizer_seen = False
        #: the first watched optimizer of the step has been announced to the probes
        self.updating = False
        #: an optimizer's step() is running (its closure's calls belong to the open step)
        self.stepping = False
        #: training losses recorded in the open step
        self.step_losses = 0
        #: id() of the watched optimizers that stepped in the open step (an encoder's and a
        #: decoder's optimizer step in one step; the same one stepping again starts the next)
        self.stepped: set[int] = set()
        #: learning rate of the first watched optimizer's first param group, per step
        self.lr: "float | torch.Tensor" = float("nan")
        self._reschedule()

    @property
    def opt_stepped(self) -> bool:
        """A watched optimizer stepped since the step opened."""
        return bool(self.stepped)

    @property
    def nan_seen(self) -> bool:  # type: ignore[override]
        return self.schedules.nan_seen

    @property
    def elapsed(self) -> float:
        return time.perf_counter() - self._t0

    def due(self, schedule: str) -> bool:
        return self.schedules.due(schedule)

    def ready(self) -> bool:
        """The open step has had its update: the next forward, loss or exit closes it."""
        return not self.stepping and (self.opt_stepped or (self.grads_seen and not self.optimizer_seen))

    def close(self) -> None:
        step = self.step
        row: dict[str, Any] = {"step": step, "mode": "train", "time": round(self.elapsed, 4), "lr": self.lr}
        self.probes.call("end_step", step, row)
        self.recorder.add("steps", row, finalize=self._sentinel)
        self.grads_seen = self.updating = False
        self.step_losses = 0
        self.stepped.clear()
        self.step += 1
        self._reschedule()
        if self._flush_pending:  # no loss was computed since the last one was due
            self.flush()
        if self._flush_due(self.step):
            self._flush_pending = True
        if self.on_step is not None:
            self.on_step(self.step)

    def training_loss(self) -> None:
        """A training loss was computed (its backward follows): flush now when due, so a
        writer thread's work overlaps that backward, and let the writer run a slice."""
        if self._flush_pending:
            self.flush()
        self.recorder.tick()

    def flush(self) -> None:
        self._flush_pending = False
        self.recorder.flush()

    def last_step_reached(self) -> bool:
        return self.max_steps is not None and self.step + 1 >= self.max_steps

    def _reschedule(self) -> None:
        self.schedules.at(self.step)
        self.probes.reschedule(self)

    def _sentinel(self, row: dict[str, Any]) -> dict[str, Any]:
        """Runs after the batched transfer: a non-finite loss or gradient norm turns the
        after-NaN schedules on for good."""
        row = with_loss_finite(row)
        if row.get("loss_finite") == 0 or not finite(row.get("grad_norm")):
            self.schedules.nan_seen = True
        return row
