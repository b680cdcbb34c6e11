"""The fix trials' loss curves beside the run's own: what each change did to training."""

from __future__ import annotations

from typing import Sequence

import matplotlib
import numpy as np

from ..finding import Trial
from ..run import Run
from .figure import BASE, PALETTE, RC, label, legend, log_if_wide, new_figure, series, to_markup
from .tidy import tidy


def trial_curves(run: Run, trials: Sequence[Trial]) -> str | None:
    """Training loss of the run (black) and of every trial that ran (one colour each); None
    when nothing has a loss curve."""
    drawn = [t for t in trials if t.curve]
    train = tidy(run).train_steps()
    if not drawn or train.empty or "loss" not in train:
        return None
    with matplotlib.rc_context(RC):
        fig, ax = new_figure()
        x, y = train["step"].astype(float).to_numpy(), train["loss"].astype(float).to_numpy()
        series(ax, x, y, BASE, "as written", smoothed=False, lw=1.8)
        every = [y[np.isfinite(y)]]
        for colour, t in zip(PALETTE, drawn):
            tx = np.array([s for s, _ in t.curve], float)
            ty = np.array([v for _, v in t.curve], float)
            series(ax, tx, ty, colour, label(f"{t.label}: {t.outcome}", 64), smoothed=False)
            every.append(ty[np.isfinite(ty)])
        log_if_wide(ax, np.concatenate(every))
        ax.set_xlabel("step")
        ax.set_ylabel("training loss")
        legend(ax)
        return to_markup(fig, "training loss as written and with each fix tried")
