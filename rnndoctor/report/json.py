"""findings.json: the machine-readable diagnosis."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .._version import __version__
from ..finding import Diagnosis, json_safe
from ..privacy import shown_path
from ..run import Run, write_text_atomic
from ..rundir import FINDINGS_FILE



def verdict_dict(diagnosis: Diagnosis) -> dict[str, Any]:
    """The causes, each with the findings it explains (indices into ``findings``), the
    findings that stand alone, and every link with its reason."""
    causes = diagnosis.causes()
    below = {i: diagnosis.consequences(i) for i in causes}
    return {
        "causes": [{"finding": i, "id": diagnosis.findings[i].id, "explains": below[i],
                    "explains_ids": [diagnosis.findings[j].id for j in below[i]]} for i in causes],
        "alone": diagnosis.alone(),
        "links": [{"cause": k.cause, "effect": k.effect, "why": k.why} for k in diagnosis.links],
    }


def diagnosis_dict(run: Run, diagnosis: Diagnosis) -> dict[str, Any]:
    meta = run.meta
    return {
        "rnndoctor": __version__,
        "run": json_safe(
            {
                "path": shown_path(run.path) if run.path else None,
                "status": meta.get("status", "unknown"),
                "steps": meta.get("steps"),
                "wall_s": meta.get("wall_s"),
                "script": meta.get("script"),
                "args": meta.get("script_args"),
                "torch": meta.get("torch"),
                "device": (meta.get("model") or {}).get("device"),
                "exception": (meta.get("exception") or {}).get("type"),
                "load_notes": list(run.notes),
            }
        ),
        "counts": diagnosis.counts(),
        "findings": [f.to_dict() for f in diagnosis.findings],
        "verdict": verdict_dict(diagnosis),
        "suppressed": [{**s.finding.to_dict(), "suppressed_by": s.cause, "reason": s.reason} for s in diagnosis.suppressed],
        "trials": [t.to_dict() for t in diagnosis.trials],
        "skipped": [{"rule": s.rule_id, "reason": s.reason} for s in diagnosis.skipped],
        "notes": list(diagnosis.notes),
        "unjudged": list(diagnosis.unjudged),
    }


def write_json(run: Run, diagnosis: Diagnosis, path: Path) -> Path:
    """Write findings.json atomically: CI reads it, and must never see half of it."""
    return write_text_atomic(path, json.dumps(diagnosis_dict(run, diagnosis), indent=2, allow_nan=False) + "\n")
