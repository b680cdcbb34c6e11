"""Fix trials: re-run the same script with one treatment applied from outside, and say
whether the cause's fix *worked*.

``rnndoctor diagnose script.py --try-fixes`` diagnoses the script, then, for each primary
cause (and each finding that stands alone) that a treatment (``treatments.py``) treats,
runs the script again in its own process (``diagnose --treat NAME``): same arguments, same
``--max-steps``, its own timeout, its record in ``<run dir>/trials/<treatment>/``. The
script's files are never changed; its own seeding makes the trial start where the run did.

A trial **worked** when none of the findings it was tried for is found again at warning or
above, no new error appears, none of the run's failed outcomes (stuck at chance, collapsed,
non-finite, diverged) is left, and the loss did not end materially higher (by a quarter)
than it did without it. It
**did not work** otherwise, and is **not applicable** when the treatment never found
anything to act on (no LSTM for a forget-gate bias, no carried state to detach): that is
said, never dressed up as a result. A cause no change from outside can treat (an input that
never varies, a loss that does not fit the output) is listed as **not treatable**, with its
own fix: the script must change.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from .finding import Diagnosis, Finding, Severity, Trial, finding_from_dict
from .run import Run, load_run, write_text_atomic
from .rundir import FINDINGS_FILE
from .treatments import Treatment, treatments_for

TRIALS_DIR = "trials"
TRIALS_FILE = "trials.json"
#: what the child writes beside its record: the treatment and how often it acted
TREATMENT_FILE = "treatment.json"
#: the findings that say the run failed: a fix that leaves one of them did not work
OUTCOMES = ("stuck-at-chance", "prediction-collapse", "non-finite", "divergence")
#: a trial whose last loss ends more than this factor above the run's did not work
WORSE = 1.25
#: points kept of each loss curve for the report
CURVE_POINTS = 200


@dataclass(frozen=True)
class Planned:
    treatment: type[Treatment]
    treats: tuple[str, ...]
    #: the treatment's arguments from the diagnosed run, as JSON ("{}": none)
    arguments: str = "{}"


def plan(diagnosis: Diagnosis, run: Run | None = None) -> list[Planned]:
    """The treatments to try: for the primary causes and the findings that stand alone, at
    warning or above (a consequence is treated through its cause), with what each needs to
    know of ``run``."""
    targets = [f for f in diagnosis.findings if not f.explained_by and f.severity >= Severity.WARNING]
    return [Planned(t, tuple(ids), json.dumps(t.arguments_from(run) if run is not None else {}, sort_keys=True))
            for t, ids in treatments_for(targets)]


def outcome_numbers(run: Run) -> dict[str, Any]:
    """First and last loss (mean of the last tenth of the steps, at least 1, at most 50),
    the accuracy over that window where one was recorded, and the steps."""
    train = run.train_steps()
    out: dict[str, Any] = {"steps": int(len(train)), "loss_first": None, "loss_last": None, "accuracy_last": None}
    if train.empty or "loss" not in train:
        return out
    loss = train["loss"].astype(float).to_numpy()
    window = max(1, min(50, len(loss) // 10))
    out["loss_first"] = float(loss[0]) if np.isfinite(loss[0]) else None
    tail = loss[-window:]
    out["loss_last"] = float(np.mean(tail)) if np.isfinite(tail).all() else None  # None: it did not stay finite
    if "correct" in train and "total" in train:
        c, t = train["correct"].astype(float).to_numpy()[-window:], train["total"].astype(float).to_numpy()[-window:]
        keep = np.isfinite(c) & np.isfinite(t)
        if keep.any() and t[keep].sum() > 0:
            out["accuracy_last"] = float(c[keep].sum() / t[keep].sum())
    return out


def loss_curve(run: Run) -> tuple[tuple[int, float], ...]:
    train = run.train_steps()
    if train.empty or "loss" not in train:
        return ()
    x, y = train["step"].astype(int).to_numpy(), train["loss"].astype(float).to_numpy()
    if len(x) > CURVE_POINTS:
        idx = np.linspace(0, len(x) - 1, CURVE_POINTS).round().astype(int)
        x, y = x[idx], y[idx]
    return tuple((int(a), float(b) if math.isfinite(b) else float("nan")) for a, b in zip(x, y))


def judge(planned: Planned, before: dict[str, Any], after: dict[str, Any], findings: Sequence[Finding],
          main: Diagnosis, applied: int) -> tuple[str, str]:
    """(outcome, one line why)."""
    if applied == 0:
        return "not applicable", f"nothing to apply it to in this script ({planned.treatment.label})"
    still = sorted({f.id for f in findings if f.id in planned.treats and f.severity >= Severity.WARNING})
    before_errors = {f.id for f in main.findings if f.severity >= Severity.ERROR}
    new_errors = sorted({f.id for f in findings if f.severity >= Severity.ERROR} - before_errors)
    lb, la = before.get("loss_last"), after.get("loss_last")
    # a loss a quarter higher than without the change: noise of the last window stays under it
    worse = la is None or (lb is not None and la > lb * WORSE + 1e-9)
    # the symptoms a user came with: a fix that leaves the run stuck, collapsed, NaN or
    # diverging did not work, whatever it removed
    outcome_left = sorted(({f.id for f in findings if f.id in OUTCOMES and f.severity >= Severity.ERROR} & before_errors) - set(still))
    if not still and not new_errors and not worse and not outcome_left:
        gone = ", ".join(planned.treats)
        cured = sorted(before_errors - {f.id for f in findings} - set(planned.treats))
        return "worked", f"{gone} no longer found" + (f"; {', '.join(cured)} gone too" if cured else "")
    reasons = []
    if still:
        reasons.append(f"{', '.join(still)} still found")
    if new_errors:
        reasons.append(f"new: {', '.join(new_errors)}")
    if outcome_left:
        gone = [i for i in planned.treats if i not in still]
        reasons.append((f"{', '.join(gone)} gone, but " if gone else "") + f"{', '.join(outcome_left)} remains")
    if worse:
        reasons.append("the loss ended higher" if la is not None else "the loss did not stay finite")
    return "did not work", "; ".join(reasons)


def summary_line(before: dict[str, Any], after: dict[str, Any]) -> str:
    """``loss 0.69 → 0.05, accuracy 0.50 → 0.99 over 300 steps``."""

    def num(v: Any) -> str:
        return "NaN/Inf" if v is None else f"{v:.3g}"

    parts = [f"final loss {num(before.get('loss_last'))} → {num(after.get('loss_last'))}"]
    if before.get("accuracy_last") is not None or after.get("accuracy_last") is not None:
        parts.append(f"accuracy {num(before.get('accuracy_last'))} → {num(after.get('accuracy_last'))}")
    return ", ".join(parts) + f" over {after.get('steps', 0)} steps"


def _command(script: str, args: Sequence[str], out: Path, planned: Planned, max_steps: int | None) -> list[str]:
    cmd = [sys.executable, "-m", "rnndoctor", "diagnose", script, "--out", str(out), "--quiet", "--fail-on", "never",
           "--treat", planned.treatment.name]
    if planned.arguments != "{}":
        cmd += ["--treat-args", planned.arguments]
    if max_steps is not None:
        cmd += ["--max-steps", str(max_steps)]
    return [*cmd, "--", *args]


def run_trial(planned: Planned, *, script: str, args: Sequence[str], run_dir: Path, max_steps: int | None,
              timeout: float, main: Diagnosis, before: dict[str, Any], cwd: str | None = None) -> Trial:
    """One trial in its own process; whatever happens to it becomes a Trial, never an exception."""
    out = run_dir / TRIALS_DIR / planned.treatment.name
    t0 = time.perf_counter()
    base = dict(treatment=planned.treatment.name, label=planned.treatment.label, treats=planned.treats, before=before, path=str(out))
    try:
        proc = subprocess.run(_command(script, args, out, planned, max_steps), capture_output=True,
                              text=True, timeout=timeout, cwd=cwd)
    except subprocess.TimeoutExpired:
        return Trial(**base, outcome="failed", why=f"timed out after {timeout:.0f} s", wall_s=time.perf_counter() - t0)
    wall = time.perf_counter() - t0
    try:
        findings = [finding_from_dict(f) for f in json.loads((out / FINDINGS_FILE).read_text())["findings"]]
        applied = int(json.loads((out / TREATMENT_FILE).read_text()).get("applied", 0))
        record = load_run(out)
    except (OSError, ValueError, KeyError) as exc:
        last = (proc.stderr.strip().splitlines() or [f"exit {proc.returncode}"])[-1]
        return Trial(**base, outcome="failed", why=f"the trial left no record ({type(exc).__name__}): {last[:200]}", wall_s=wall)
    after = outcome_numbers(record)
    outcome, why = judge(planned, before, after, findings, main, applied)
    if record.meta.get("status") == "crashed" and outcome == "worked":
        outcome, why = "did not work", f"the script crashed with it ({(record.meta.get('exception') or {}).get('type')})"
    return Trial(**base, outcome=outcome, why=why, after=after, found=tuple(f.id for f in findings if f.severity >= Severity.WARNING),
                 summary=summary_line(before, after), curve=loss_curve(record), applied=applied, wall_s=wall)


def try_fixes(run: Run, diagnosis: Diagnosis, planned: Sequence[Planned], *, script: str, args: Sequence[str],
              max_steps: int | None, jobs: int = 1, timeout: float = 600.0, cwd: str | None = None) -> tuple[Trial, ...]:
    """Every planned trial (``plan(diagnosis)``, ``jobs`` at a time), in plan order, then the
    causes none treats; written to trials/trials.json."""
    assert run.path is not None
    before = outcome_numbers(run)
    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        trials = tuple(pool.map(lambda p: run_trial(p, script=script, args=args, run_dir=run.path, max_steps=max_steps,
                                                    timeout=timeout, main=diagnosis, before=before, cwd=cwd), planned))
    trials += untreatable(diagnosis, planned)
    if trials:
        write_trials(run.path, trials)
    return trials


def untreatable(diagnosis: Diagnosis, planned: Sequence[Planned]) -> tuple[Trial, ...]:
    """The primary causes no change from outside can treat (the data, the wiring, the loss):
    said as such, with the finding's own fix, so a reader knows the script must change."""
    covered = {i for p in planned for i in p.treats}
    out = []
    for f in diagnosis.findings:
        if f.explained_by or f.severity < Severity.WARNING or f.id in covered:
            continue
        covered.add(f.id)
        out.append(Trial(treatment="", label="no change from outside", treats=(f.id,), outcome="not treatable",
                         why=f"the script itself must change: {f.fix}"))
    return tuple(out)


def write_trials(run_dir: Path, trials: Sequence[Trial]) -> Path:
    path = run_dir / TRIALS_DIR / TRIALS_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    data = {"trials": [t.to_dict() for t in trials]}  # strict JSON already: a NaN in a curve is null
    return write_text_atomic(path, json.dumps(data, indent=2, allow_nan=False) + "\n")


def read_trials(run_dir: Path) -> tuple[Trial, ...]:
    """The trials a ``--try-fixes`` run left beside its record (``rnndoctor report`` shows them again)."""
    try:
        data = json.loads((Path(run_dir) / TRIALS_DIR / TRIALS_FILE).read_text())
        return tuple(Trial.from_dict(t) for t in data.get("trials", []))
    except (OSError, ValueError, KeyError, TypeError):
        return ()

