"""Run: what was recorded, saved to and loaded from a run directory.

Layout of a run directory::

    meta.json              script, args, versions, model summary, status, exception
    signals/<name>.jsonl   one JSON object per row, appended in batches by the Recorder;
                           arrays of 8+ values as {"$f64": base64 float64, "shape": [...]}
    findings.json          the diagnosis (written by reporters, not needed to load)
"""

from __future__ import annotations

import base64
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import pandas as pd

from .rundir import settle_status
from .signals import CATALOGUE

META_FILE = "meta.json"


class RunDirError(Exception):
    """The run directory is missing or unreadable (one-line message for the user)."""


@dataclass(frozen=True)
class Run:
    """A read-only recording: ``signal name -> DataFrame`` plus ``meta``."""

    meta: dict[str, Any]
    signals: Mapping[str, pd.DataFrame] = field(default_factory=dict)
    path: Path | None = None

    def has(self, name: str) -> bool:
        df = self.signals.get(name)
        return df is not None and not df.empty

    def __getitem__(self, name: str) -> pd.DataFrame:
        return self.signals.get(name, pd.DataFrame())

    def train_steps(self) -> pd.DataFrame:
        """Rows of the ``steps`` signal for training steps, ordered by step."""
        df = self["steps"]
        if df.empty or "mode" not in df:
            return df
        return df[df["mode"] == "train"].sort_values("step").reset_index(drop=True)

    @property
    def status(self) -> str:
        return str(self.meta.get("status", "unknown"))


def write_meta(run_dir: Path, meta: Mapping[str, Any]) -> None:
    """Atomically replace meta.json, so a crash never leaves half a file."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)  # the program may have deleted it
    tmp = run_dir / (META_FILE + ".tmp")
    tmp.write_text(json.dumps(meta, indent=2, default=str), encoding="utf-8")
    os.replace(tmp, run_dir / META_FILE)


#: arrays of at least this many values are written as base64 of their float64 bytes
#: (``{"$f64": ..., "shape": [...]}``, decoded by ``load_run``): formatting floats was
#: the writer's dearest work, ~0.5 us a value (110 us for one 300-value ``samples`` row),
#: and bytes keep NaN and Inf exact
PACK_MIN = 8


def pack(values: Any) -> dict[str, Any]:
    """A float64 array as a JSON-able dict (see PACK_MIN)."""
    a = np.ascontiguousarray(values, dtype="<f8")
    return {"$f64": base64.b64encode(a.tobytes()).decode("ascii"), "shape": list(a.shape)}


def unpack(obj: dict[str, Any]) -> Any:
    """``json.loads`` object hook: packed arrays back to (nested) lists of floats."""
    packed = obj.get("$f64")
    if packed is None or len(obj) != 2:
        return obj
    return np.frombuffer(base64.b64decode(packed), dtype="<f8").reshape(obj["shape"]).tolist()


def load_run(path: str | os.PathLike[str]) -> Run:
    """Load a run directory written by ``watch()``; tolerate a torn last line."""
    run_dir = Path(path)
    if not run_dir.is_dir():
        raise RunDirError(f"no run directory at {run_dir}")
    meta_path = run_dir / META_FILE
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise RunDirError(f"{run_dir} is not an rnndoctor run directory (no {META_FILE})") from None
    except (OSError, ValueError) as exc:
        raise RunDirError(f"{meta_path} is corrupt: {exc}") from None
    if not isinstance(meta, dict):
        raise RunDirError(f"{meta_path} is corrupt: expected a JSON object")
    signals: dict[str, pd.DataFrame] = {}
    sig_dir = run_dir / "signals"
    if sig_dir.is_dir():
        for file in sorted(sig_dir.glob("*.jsonl")):
            signals[file.stem] = _read_signal(file)
    run = Run(meta=meta, signals=signals, path=run_dir)
    settle_status(meta, run_dir, len(run.train_steps()))
    return run


def _read_signal(file: Path) -> pd.DataFrame:
    rows: list[dict[str, Any]] = []
    with open(file, encoding="utf-8") as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            try:
                row = json.loads(line, object_hook=unpack)
            except ValueError:
                continue  # a line torn by a killed process
            if isinstance(row, dict):
                rows.append(row)
    spec = CATALOGUE.get(file.stem)
    if spec and (spec.carried or spec.zeros_if_absent):
        _fill_carried(rows, spec.carried, spec.zeros_if_absent)
    df = pd.DataFrame(rows)
    if spec and spec.explode and not df.empty:
        cols = [c for c in spec.explode if c in df.columns]
        if cols:
            df = df.explode(cols, ignore_index=True)
            for c in cols:
                try:
                    df[c] = pd.to_numeric(df[c])
                except (ValueError, TypeError):
                    pass  # names (params, modules) stay strings
    return df


def _fill_carried(rows: list[dict[str, Any]], carried: tuple[str, ...], zeros: tuple[str, ...]) -> None:
    """Columns the recorder writes only when they change take the last written value."""
    last: dict[str, Any] = {}
    for row in rows:
        for key in carried:
            if key in row:
                last[key] = row[key]
            elif key in last:
                row[key] = last[key]
        for key in zeros:
            if key not in row and carried and isinstance(row.get(carried[0]), list):
                row[key] = [0] * len(row[carried[0]])
