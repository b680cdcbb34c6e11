"""diagnose(run): every rule in the catalogue over one recorded run."""

from __future__ import annotations

from typing import Any, Mapping

import pandas as pd

from .finding import Diagnosis, Finding, Skipped, sort_findings
from .rules import all_rules
from .rules.causes import relate
from .run import Run


def diagnose(run: Run, *, strict: bool = False, options: Mapping[str, Mapping[str, Any]] | None = None) -> Diagnosis:
    """Judge ``run``. A rule whose signals are missing is skipped with the reason; a rule that
    crashes becomes a skipped entry too (``strict=True`` re-raises, as the tests do)."""
    findings: list[Finding] = []
    skipped: list[Skipped] = []
    options = options or {}
    for spec in all_rules():
        # "a|b": either signal will do (a rule reading torch RNNs' or hand-written cells' record)
        missing = [s for s in spec.signals if not any(run.has(alt) for alt in s.split("|"))]
        if missing:
            skipped.append(Skipped(spec.id, f"no {', '.join(missing)} recorded"))
            continue
        try:
            findings.extend(spec(run, **options.get(spec.id, {})))
        except Exception as exc:  # a broken rule must never lose the report
            if strict:
                raise
            skipped.append(Skipped(spec.id, f"rule crashed: {type(exc).__name__}: {exc}"))
    notes, unjudged = _notes(run, skipped)
    ordered, links, suppressed = _relate(sort_findings(findings), run, strict, notes)
    return Diagnosis(findings=ordered, skipped=tuple(skipped), notes=tuple(notes), unjudged=tuple(unjudged),
                     links=links, suppressed=suppressed)


def _relate(findings: tuple[Finding, ...], run: Run, strict: bool, notes: list[str]) -> tuple:
    """Cause and consequence (``rules/causes.py``); a bug there costs the verdict, never the
    findings."""
    try:
        return relate(findings, run)
    except Exception as exc:
        if strict:
            raise
        notes.append(f"relating the findings failed ({type(exc).__name__}: {exc}); they are listed worst first. This is a bug in rnndoctor")
        return findings, (), ()


#: where a hand-written loss can be recorded (the note for runs without a captured loss)
LOG_HINT = (
    "rnndoctor sees losses computed with torch.nn.functional or an nn.*Loss module; record a "
    "hand-written one with run.log(loss=loss) (or logits=, targets=) inside `with rnndoctor.watch(model) as run:`"
)


def _notes(run: Run, skipped: list[Skipped]) -> tuple[list[str], list[str]]:
    """What the reader must know besides the findings, and why parts went unjudged."""
    notes: list[str] = []
    unjudged: list[str] = []
    status_note = run.meta.get("status_note")
    if isinstance(status_note, str):
        notes.append(status_note)
    train = run.train_steps()
    if train.empty:
        unjudged.append("no training step was recorded")
        notes.append("no training step was recorded: the optimizer never stepped on a watched module's parameters")
    elif not _loss_captured(train):
        blind = [s.rule_id for s in skipped if "predictions" in s.reason]
        unjudged.append("no loss was captured")
        notes.append(
            f"no loss was captured, so whether the run learns was not judged"
            f"{' (' + ', '.join(blind) + ' could not judge)' if blind else ''}. {LOG_HINT}"
        )
    notes.extend(_unread_cells(run))
    errors = run.meta.get("internal_errors")
    if isinstance(errors, list) and errors:
        notes.append(f"rnndoctor itself failed {len(errors)}× while recording (first: {errors[0]}); the record may be partial")
    crashed = [s for s in skipped if s.reason.startswith("rule crashed")]
    if crashed:
        unjudged.append(f"{len(crashed)} rule{'s' if len(crashed) > 1 else ''} crashed")
        notes.extend(f"rule {s.rule_id} could not judge this run ({s.reason}); this is a bug in rnndoctor" for s in crashed)
    return notes, unjudged


def _unread_cells(run: Run) -> list[str]:
    """Modules that carry their own output from call to call but do not read as LSTM or GRU
    gates: said, so a reader knows their gates were not judged (never guessed)."""
    if not run.has("hand_cells"):
        return []
    cells = run["hand_cells"]
    if "read" not in cells:
        return []
    unread = cells[pd.to_numeric(cells["read"], errors="coerce") == 0].drop_duplicates("module")
    return [f"hand-written recurrent module '{m}' was not recognised as an LSTM or GRU cell ({r}); "
            "its gates were not judged" for m, r in zip(unread["module"], unread.get("reason", pd.Series([""] * len(unread))))]


def _loss_captured(train: "pd.DataFrame") -> bool:
    """Any training step saw a loss call (its value may be NaN: that is a finding, not a gap)."""
    if "loss_calls" in train:
        return bool((pd.to_numeric(train["loss_calls"], errors="coerce") > 0).any())
    return "loss" in train and bool(train["loss"].notna().any())
