"""When expensive work happens: plain callables ``step -> bool`` (as torch.profiler does).

``step`` is the number of optimizer steps completed before the one being recorded (0-based).
"""

from __future__ import annotations

from typing import Callable

Schedule = Callable[[int], bool]


class first_then_every:  # noqa: N801 - used like a function, reads like one
    """True for the first ``first`` steps, then on every ``every``-th step.

    ``str()`` says so in words, for the signal catalogue and the README."""

    def __init__(self, first: int, every: int) -> None:
        self.first, self.every = first, every

    def __call__(self, step: int) -> bool:
        return step < self.first or (self.every > 0 and step % self.every == 0)

    def __str__(self) -> str:
        return f"first {self.first} steps, then every {_nth(self.every)}"


def _nth(n: int) -> str:
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


def flush_schedule(every: int) -> Schedule:
    """Read back early and often while a run is young (fast feedback, cheap), then every
    ``every`` steps (one host transfer per flush, so the hot path never syncs)."""
    early = {1, 2, 3, 5, 10, 20, 50}

    def schedule(step: int) -> bool:
        return step in early or (every > 0 and step % every == 0)

    return schedule


DEFAULT_FLUSH_EVERY = 100

# Steady-state intervals are set with bench/overhead.py on the seed-000 model (2.3-3.1 ms
# steps on 2 CPU cores, where one small device op costs 5-30 us inside the loop and every
# probe's CPU time is taken from training): the start of a run is recorded densely, the
# rest is sampled. Measured per occurrence there: update ratios ~0.3 ms; localisation,
# loss details and data probes ~0.5 ms each; the time-gradient profile ~0.8 ms; a flush of
# 50 steps ~2.2 ms, much of it per flush rather than per step; the gate replay with
# statistics ~9 ms. The every-100th probes fall on one step (~2.5 ms every 100 steps).

#: class counts (accuracy, predicted and label shares) and per-parameter gradient norms (with
#: the global norm): a copy of the loss call's outputs and targets and a norm of every
#: gradient, ~60 us of a 2.4 ms step on the seed-000 model. The loss itself is recorded on
#: every step. Rules sum counts over windows and read medians of norms, so a dense start and
#: then every 4th step is enough (wandb.watch logs gradients every 100th step); on every
#: step once a NaN was seen, so the first non-finite gradient is caught where it appears.
DEFAULT_STEP_STATS = first_then_every(100, 4)
#: non-finite localisation: per-module isfinite checks cost one reduction per module call
#: (1.11-1.18x on a small LSTM when done on every module every step, design.md); on every
#: step once a NaN was seen
DEFAULT_LOCALIZE = first_then_every(5, 100)
#: loss details (output/target ranges) are a handful of reductions
DEFAULT_DETAIL = first_then_every(20, 100)
#: update/weight ratios need a copy of every weight before the step (~0.3 ms; rules read
#: medians over windows, so a sample is enough); on every step once a NaN was seen
DEFAULT_UPDATE_RATIO = first_then_every(20, 40)
#: data fingerprints and input statistics: one small matmul and a few reductions per batch;
#: 50 dense steps give the duplicate and resampling rules their thousands of samples
DEFAULT_DATA = first_then_every(50, 100)
#: ‖∂L/∂x_t‖ profile: a tensor hook on the RNN input (design.md: 1.00-1.01x even every step
#: on large models; on the seed-000 model the input's gradient is extra backward work)
DEFAULT_TIME_GRAD = first_then_every(10, 100)
#: gate replay (and per-module activation statistics): an exact recompute of every layer
#: and step plus its statistics cost ~2 steps of the seed-000 model
DEFAULT_GATES = first_then_every(3, 500)

#: carried state (is an earlier step's graph fed back in?): attribute reads per recurrent
#: call; the bug, when present, is on every step, so the start of a run shows it
DEFAULT_CARRIED = first_then_every(50, 100)

#: every default schedule by the name a probe gives in ``Probe.schedule`` / ``ctx.due(name)``
SCHEDULES: dict[str, Schedule] = {
    "stats": DEFAULT_STEP_STATS,
    "localize": DEFAULT_LOCALIZE,
    "detail": DEFAULT_DETAIL,
    "update": DEFAULT_UPDATE_RATIO,
    "data": DEFAULT_DATA,
    "time_grad": DEFAULT_TIME_GRAD,
    "gates": DEFAULT_GATES,
    "carried": DEFAULT_CARRIED,
}

#: schedules that are due on every step once a non-finite loss or gradient was seen: the
#: first NaN module, update ratio, class counts and norms are then wanted where it happens
AFTER_NAN = frozenset({"localize", "update", "stats"})


class StepSchedules:
    """Which schedules are due in the step being recorded: read once per step, at its start,
    instead of in every hook call."""

    def __init__(self, schedules: dict[str, Schedule] | None = None, after_nan: frozenset[str] = AFTER_NAN) -> None:
        self.schedules = dict(SCHEDULES if schedules is None else schedules)
        self.after_nan = after_nan
        self.nan_seen = False
        self._due: dict[str, bool] = {}

    def at(self, step: int) -> None:
        nan = self.nan_seen
        self._due = {name: (nan and name in self.after_nan) or bool(s(step)) for name, s in self.schedules.items()}

    def due(self, name: str) -> bool:
        return self._due.get(name, False)
