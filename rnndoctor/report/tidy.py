"""A record as the plots may assume it: every column of one kind.

``load_run`` guarantees little beyond whole-number steps: a hand-edited or torn record can
hold a string where a loss belongs, a dict in a list of norms, a module named ``None``. Rules
are judged each on its own and skipped when they fail; a plot (and the rule helpers it calls)
would raise instead. ``tidy`` gives the plots a view in which each column holds one kind of
value, decided by what most of its values are: numbers (the others become NaN), text (the
others None), or lists of numbers (the others None). Columns pandas already stores as numbers
are passed through untouched, so a healthy record costs almost nothing. Signals are tidied
when first read and kept, so a page that draws every plot tidies each one once.
"""

from __future__ import annotations

import numbers
from typing import Any, Iterator, Mapping

import numpy as np
import pandas as pd

from ..run import Run


def _is_number(v: Any) -> bool:
    return isinstance(v, numbers.Real)


def _is_list(v: Any) -> bool:
    return isinstance(v, (list, tuple, np.ndarray))


def _number_list(v: Any) -> list[float] | None:
    if not _is_list(v) or not all(_is_number(x) for x in v):
        return None
    return [float(x) for x in v]


def _text_list(v: Any) -> list[str] | None:
    return list(v) if _is_list(v) and all(isinstance(x, str) for x in v) else None


def tidy_column(values: pd.Series) -> pd.Series:
    """One object column made one kind (numbers, text or lists), by what most of it holds."""
    present = values[values.map(lambda v: v is not None and not (isinstance(v, float) and np.isnan(v)))]
    if present.empty:
        return pd.to_numeric(values.where(values.map(_is_number), np.nan), errors="coerce")
    kinds = present.map(lambda v: "number" if _is_number(v) else "text" if isinstance(v, str) else "list" if _is_list(v) else "other")
    kind = kinds.value_counts().idxmax()
    if kind == "number":
        return pd.to_numeric(values.where(values.map(_is_number), np.nan), errors="coerce")
    if kind == "text":
        return values.where(values.map(lambda v: isinstance(v, str)), None)
    if kind == "list":
        numeric = present.map(lambda v: _number_list(v) is not None).sum()
        convert = _number_list if numeric >= len(present) / 2 else _text_list
        return values.map(convert).astype(object)
    return values


def tidy_frame(df: pd.DataFrame) -> pd.DataFrame:
    """The table with each object column tidied, and only rows with a usable ``step``."""
    changed: dict[str, pd.Series] = {}
    for name in df.columns:
        if df[name].dtype == object:
            changed[str(name)] = tidy_column(df[name])
    out = df.assign(**changed) if changed else df
    if "step" in out and not pd.api.types.is_numeric_dtype(out["step"]):
        out = out.assign(step=pd.to_numeric(out["step"], errors="coerce"))
    if "step" in out and out["step"].isna().any():
        out = out[out["step"].notna()]
    return out


class TidySignals(Mapping[str, pd.DataFrame]):
    """The signals of a run, each tidied the first time it is read."""

    def __init__(self, signals: Mapping[str, pd.DataFrame]) -> None:
        self._raw = signals
        self._done: dict[str, pd.DataFrame] = {}

    def __getitem__(self, name: str) -> pd.DataFrame:
        if name not in self._done:
            self._done[name] = tidy_frame(self._raw[name])
        return self._done[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._raw)

    def __len__(self) -> int:
        return len(self._raw)


def tidy(run: Run) -> Run:
    """``run`` with tidied signals (the same run when it already is)."""
    if isinstance(run.signals, TidySignals):
        return run
    return Run(meta=run.meta, signals=TidySignals(run.signals), path=run.path, notes=run.notes, unreadable=run.unreadable)
