"""Device-side buffers, batched host transfer, incremental crash-safe writes.

Probes hand the recorder rows whose values may still be tensors on the GPU. Nothing is read
back until ``flush()``: then every pending tensor of a device is concatenated and copied to
the host in ONE transfer, and the rows are appended as JSON lines to
``<run_dir>/signals/<signal>.jsonl`` by a writer thread (JSON encoding is Python work that
would otherwise sit on the training loop; torch ops release the GIL, so it overlaps). A killed
process loses at most the rows of the last flushes, and what was written stays readable
(see ``run.load_run``); ``close()`` and ``flush(wait=True)`` wait for the writer.
"""

from __future__ import annotations

import json
import math
import queue
import threading
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, TextIO

import torch

Row = dict[str, Any]
Finalize = Callable[[Row], "Row | None"]


@dataclass
class _Pending:
    signal: str
    row: Row
    finalize: Finalize | None


class Recorder:
    """Collects rows per signal and writes them in batches."""

    def __init__(self, run_dir: Path) -> None:
        self.signals_dir = Path(run_dir) / "signals"
        self.signals_dir.mkdir(parents=True, exist_ok=True)
        for old in self.signals_dir.glob("*.jsonl"):  # a reused run directory starts empty
            old.unlink()
        self._pending: list[_Pending] = []
        self._files: dict[str, TextIO] = {}
        self.rows_written = 0
        self.flushes = 0
        self._queue: queue.Queue[list[tuple[str, Row]] | None] = queue.Queue()
        self._writer = threading.Thread(target=self._write_loop, name="rnndoctor-writer", daemon=True)
        self._writer.start()

    def add(self, signal: str, row: Row, finalize: Finalize | None = None) -> None:
        """Queue a row. Tensor values stay on their device until the next flush.

        ``finalize`` gets the row with host values after the transfer and may rewrite it
        (e.g. map an argmax index to a module name) or drop it by returning None.
        """
        self._pending.append(_Pending(signal, row, finalize))

    @property
    def pending(self) -> int:
        return len(self._pending)

    def flush(self, wait: bool = False) -> None:
        """Copy every pending tensor to the host (one transfer per device) and hand the rows
        to the writer; ``wait`` returns only once everything queued is on disk."""
        if self._pending:
            pending, self._pending = self._pending, []
            _materialize([p.row for p in pending])
            rows = []
            for p in pending:
                row = p.finalize(p.row) if p.finalize is not None else p.row
                if row is not None:
                    rows.append((p.signal, row))
            self.rows_written += len(rows)
            self.flushes += 1
            self._queue.put(rows)
        if wait:
            self._queue.join()

    def close(self) -> None:
        self.flush()
        self._queue.put(None)
        self._writer.join()
        for f in self._files.values():
            f.close()
        self._files.clear()

    def _write_loop(self) -> None:
        while True:
            rows = self._queue.get()
            try:
                if rows is None:
                    return
                for signal, row in rows:
                    self._file(signal).write(json.dumps(row, allow_nan=True, default=_jsonable) + "\n")
                for f in self._files.values():
                    f.flush()
            finally:
                self._queue.task_done()

    def _file(self, signal: str) -> TextIO:
        f = self._files.get(signal)
        if f is None:
            f = open(self.signals_dir / f"{signal}.jsonl", "a", encoding="utf-8")
            self._files[signal] = f
        return f


def _materialize(rows: list[Row]) -> None:
    """Replace tensor values in ``rows`` by Python numbers/lists, one host copy per device.

    Tensors are grouped by (device, dtype) and joined with one ``cat`` per group, so a
    flush costs a handful of kernels however many steps it covers."""
    groups: dict[tuple[torch.device, torch.dtype], list[tuple[Row, str, torch.Size, torch.Tensor]]] = defaultdict(list)
    for row in rows:
        for key, value in row.items():
            if isinstance(value, torch.Tensor):
                t = value.detach()
                groups[(t.device, t.dtype)].append((row, key, t.shape, t))
    by_device: dict[torch.device, list[tuple[list[tuple[Row, str, torch.Size, torch.Tensor]], torch.Tensor]]] = defaultdict(list)
    for (device, _), items in groups.items():
        flat = torch.cat([t.reshape(-1) for *_, t in items]).to(torch.float64)
        by_device[device].append((items, flat))
    for device, parts in by_device.items():
        host = torch.cat([flat for _, flat in parts]).cpu().numpy()
        offset = 0
        for items, _ in parts:
            for row, key, shape, _t in items:
                n = math.prod(shape)
                chunk = host[offset : offset + n]
                offset += n
                row[key] = _py(chunk[0]) if len(shape) == 0 else chunk.reshape(shape).tolist()


def _py(v: float) -> float | int:
    f = float(v)
    if math.isfinite(f) and f.is_integer() and abs(f) < 2**53:
        return int(f)
    return f


def _jsonable(value: Any) -> Any:
    if hasattr(value, "item"):
        return value.item()
    return str(value)
