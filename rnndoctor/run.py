"""Run: what was recorded, saved to and loaded from a run directory.

Layout of a run directory::

    meta.json              script, args, versions, model summary, status, exception
                           (the keys and their types: META_SCHEMA)
    signals/<name>.jsonl   one JSON object per row, appended in batches by the Recorder;
                           arrays of 8+ values as {"$f64": base64 float64, "shape": [...]}
    findings.json          the diagnosis (written by reporters, not needed to load)

Run directories are shared (CI artifacts) and edited by hand, so ``load_run`` trusts none of
it: what cannot be used at all is a one-line ``RunDirError``; a damaged but usable record is
loaded with what it holds, and ``Run.notes`` says what was left out.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Iterator, Mapping, get_args, get_origin

import numpy as np
import pandas as pd

from .rundir import META_FILE, SIGNALS_DIR, settle_status
from .signals import CATALOGUE, Signal
from .text import printable_line



class RunDirError(Exception):
    """The run directory is missing or unreadable (one-line message for the user)."""


@dataclass(frozen=True)
class Run:
    """A read-only recording: ``signal name -> DataFrame`` plus ``meta``."""

    meta: dict[str, Any]
    signals: Mapping[str, pd.DataFrame] = field(default_factory=dict)
    path: Path | None = None
    #: what loading left out of a damaged record, one short line each (the reports show them:
    #: a diagnosis of part of a record must say so)
    notes: tuple[str, ...] = ()
    #: signal name -> lines of its file that could not be used (not JSON, not UTF-8, wrong types)
    unreadable: Mapping[str, int] = field(default_factory=dict)

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


def write_text_atomic(path: Path, text: str) -> Path:
    """Replace ``path`` with ``text`` through a temporary file, so a reader (CI, a browser, a
    crash) never sees half a file and a failed write leaves nothing behind. Text UTF-8
    cannot hold (a lone surrogate from a JSON escape or a file name) is written escaped."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)  # the program may have deleted it
    tmp = path.with_name(path.name + ".tmp")
    try:
        tmp.write_text(text, encoding="utf-8", errors="backslashreplace")
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
        raise
    return path


def write_meta(run_dir: Path, meta: Mapping[str, Any]) -> None:
    """Atomically replace meta.json, so a crash never leaves half a file."""
    write_text_atomic(Path(run_dir) / META_FILE, json.dumps(meta, indent=2, default=str))


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


#: a number: int or float (JSON true/false are not numbers, though ``isinstance(True, int)``)
Number = int | float

#: Every key of meta.json that rnndoctor reads, with the JSON type it must have (a dict: an object
#: with those keys). ``check_meta`` drops a key of the wrong type with a note and keeps the rest;
#: keys not listed are kept as written, and null means "not recorded". No key is essential: the
#: rules judge the signals and meta only labels the report, so a record whose meta was damaged is
#: still worth diagnosing. Only a meta.json that is not a JSON object is an error.
META_SCHEMA: dict[str, Any] = {
    "script": str,
    "script_args": list[str],
    "max_steps": int,
    "timeout": Number,
    "rnndoctor": str,
    "started": str,
    "python": str,
    "torch": str,
    "status": str,
    "steps": int,
    "wall_s": Number,
    "argv": list[str],
    "cwd": str,
    "internal_errors": list[str],
    "optimizers": list[str],
    "exception": {"type": str, "message": str, "traceback": str},
    "model": {"roots": list[str], "modules": list[dict], "recurrent": list[dict], "params": list[dict], "device": str},
}

_KIND_NAMES: dict[Any, str] = {str: "a string", int: "an integer", Number: "a number", dict: "an object"}


def check_meta(meta: Mapping[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """``meta`` less the META_SCHEMA keys whose values have the wrong type, and a note for each."""
    notes: list[str] = []
    return _checked(meta, META_SCHEMA, "", notes), notes


def _checked(obj: Mapping[str, Any], schema: Mapping[str, Any], prefix: str, notes: list[str]) -> dict[str, Any]:
    """One object of meta.json checked against its schema (``prefix``: where it sits, for the notes)."""
    out = dict(obj)
    for key, kind in schema.items():
        value = obj.get(key)
        if value is None:
            continue
        if not _is(value, kind):
            del out[key]
            notes.append(f"{META_FILE}: {prefix}{key} is not {_kind_name(kind)}, ignored")
        elif isinstance(kind, dict):
            out[key] = _checked(value, kind, f"{prefix}{key}.", notes)
    return out


def _is(value: Any, kind: Any) -> bool:
    """Whether a JSON value has the META_SCHEMA type ``kind``."""
    if isinstance(kind, dict):
        return isinstance(value, dict)
    if get_origin(kind) is list:
        (item,) = get_args(kind)
        return isinstance(value, list) and all(_is(v, item) for v in value)
    return isinstance(value, kind) and not (isinstance(value, bool) and kind is not bool)


def _kind_name(kind: Any) -> str:
    if isinstance(kind, dict):
        return "an object"
    if get_origin(kind) is list:
        return "a list of " + _KIND_NAMES[get_args(kind)[0]].split(" ", 1)[1] + "s"
    return _KIND_NAMES[kind]



#: a line longer than this is damage, not a row (the largest rows, ``samples`` of a huge batch or
#: ``params`` of a model with 100k tensors, are a few MB): it is skipped without being held whole
MAX_LINE_BYTES = 64 << 20


def load_run(path: str | os.PathLike[str]) -> Run:
    """Load a run directory written by ``watch()``. What cannot be used at all (no directory,
    no readable meta.json object) is a RunDirError; the rest of a damaged record (a line torn by
    a killed process, garbage, wrong types) is loaded in part, and ``Run.notes`` says what not."""
    run_dir = Path(path)
    if not run_dir.is_dir():
        raise RunDirError(f"no run directory at {run_dir}")
    meta, notes = check_meta(_read_meta(run_dir))
    signals: dict[str, pd.DataFrame] = {}
    unreadable: dict[str, int] = {}
    for file in _signal_files(run_dir / SIGNALS_DIR, notes):
        shown = f"{SIGNALS_DIR}/{printable_line(file.name)}"
        try:
            if not file.is_file():  # a folder, or a FIFO that would block the read
                notes.append(f"{shown} is not a file, left out")
                continue
            df, bad, total = _read_signal(file)
        except OSError as exc:
            notes.append(f"{shown} could not be read ({exc.strerror or exc}), left out")
            continue
        signals[file.stem] = df
        if bad:
            unreadable[file.stem] = bad
            notes.append(f"{shown}: {bad} of {total} line{'s' if total != 1 else ''} unreadable, skipped")
    run = Run(meta=meta, signals=signals, path=run_dir, notes=tuple(notes), unreadable=unreadable)
    settle_status(meta, run_dir, len(run.train_steps()))
    return run


def _read_meta(run_dir: Path) -> dict[str, Any]:
    """meta.json as a dict, or a one-line RunDirError saying why not."""
    meta_path = run_dir / META_FILE
    try:
        if not meta_path.is_file():
            if meta_path.exists():
                raise RunDirError(f"{meta_path} is not a file")
            raise RunDirError(f"{run_dir} is not an rnndoctor run directory (no {META_FILE})")
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise RunDirError(f"cannot read {meta_path}: {exc.strerror or exc}") from None
    except (ValueError, RecursionError) as exc:  # not UTF-8, not JSON, nested past the parser's depth
        raise RunDirError(f"{meta_path} is corrupt: {exc}") from None
    if not isinstance(meta, dict):
        raise RunDirError(f"{meta_path} is corrupt: expected a JSON object")
    return meta


def _signal_files(sig_dir: Path, notes: list[str]) -> list[Path]:
    """The ``*.jsonl`` entries of ``sig_dir`` (none when nothing was recorded); a note when it is
    there but cannot be listed."""
    try:
        if not sig_dir.exists():
            return []
        if not sig_dir.is_dir():
            notes.append(f"{SIGNALS_DIR} is not a folder, no signal loaded")
            return []
        return sorted(sig_dir.glob("*.jsonl"))
    except OSError as exc:
        notes.append(f"{SIGNALS_DIR} could not be read ({exc.strerror or exc}), no signal loaded")
        return []


def _read_signal(file: Path) -> tuple[pd.DataFrame, int, int]:
    """One signal as a table, how many of its lines could not be used, and how many it has."""
    spec = CATALOGUE.get(file.stem)
    rows: list[dict[str, Any]] = []
    total = 0
    with open(file, "rb") as f:
        for line in _lines(f):
            if line is not None and not line.strip():
                continue
            total += 1
            row = _parse_row(line, spec) if line is not None else None
            if row is not None:
                rows.append(row)
    if spec and (spec.carried or spec.zeros_if_absent):
        _fill_carried(rows, spec.carried, spec.zeros_if_absent)
    if spec and spec.explode:
        rows = [row for row in rows if _lists_line_up(row, spec.explode)]
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
    return df, total - len(rows), total


def _lines(f: IO[bytes]) -> Iterator[bytes | None]:
    """The lines of ``f``; None for one longer than MAX_LINE_BYTES (read past in pieces, so a
    damaged file of one endless line costs no more memory than a row may)."""
    while line := f.readline(MAX_LINE_BYTES + 1):
        if len(line) > MAX_LINE_BYTES and not line.endswith(b"\n"):
            while (rest := f.readline(MAX_LINE_BYTES)) and not rest.endswith(b"\n"):
                pass
            yield None
        else:
            yield line


def _parse_row(line: bytes, spec: Signal | None) -> dict[str, Any] | None:
    """The row on ``line``, or None when there is none: a line torn by a killed process, not
    UTF-8, not a JSON object, a broken packed array, key columns of the wrong type."""
    try:
        row = json.loads(line.decode("utf-8"), object_hook=unpack)
    except (ValueError, TypeError, OverflowError, RecursionError):
        return None
    return row if isinstance(row, dict) and _keys_ok(row, spec) else None


_SCALAR = (str, int, float, bool, type(None))


def _keys_ok(row: dict[str, Any], spec: Signal | None) -> bool:
    """Whether the columns rules sort, group and filter by are usable: ``step`` a whole number,
    ``mode`` a name, other keys scalars; list columns (``explode``) lists of scalars."""
    if spec is None:
        return True
    if "step" in spec.keys and not (isinstance(row.get("step"), int) and not isinstance(row["step"], bool)):
        return False
    if "mode" in spec.keys and not isinstance(row.get("mode", ""), str):
        return False
    for key in spec.keys:
        if key not in spec.explode and not isinstance(row.get(key), _SCALAR):
            return False
    return all(isinstance(row[c], list) and all(isinstance(v, _SCALAR) for v in row[c]) for c in spec.explode if c in row)


def _lists_line_up(row: dict[str, Any], cols: tuple[str, ...]) -> bool:
    """Whether a row's list columns have one length (else they cannot be exploded together)."""
    return len({len(row[c]) for c in cols if c in row}) <= 1


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
