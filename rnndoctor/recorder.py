"""Device-side buffers, batched host transfer, incremental crash-safe writes.

Probes hand the recorder rows whose values may still be tensors on the GPU. Nothing is read
back on the training thread. ``flush()`` only hands the pending rows (and the deferred
reductions the probes left for flush time) to a writer thread; there the reductions run,
every pending tensor of a device is concatenated and copied to the host in ONE transfer,
and the rows are appended as JSON lines to ``<run_dir>/signals/<signal>.jsonl``.

Why a thread: the flush is ~70 rows of Python (tensor grouping, JSON) plus a few dozen small
ops; on the training thread it cost the seed-000 model ~4 ms every 25 steps. The watcher
flushes right after a loss is computed, so this work overlaps the backward pass, which runs
without the GIL. On CUDA the writer waits on an event recorded on the training thread's
stream at hand-off and works on its own stream, so it never blocks the training stream; the
tensors it reads stay referenced until its host copy has completed.

A killed process loses at most the rows of the last flushes, and what was written stays
readable (see ``run.load_run``); ``close()`` and ``flush(wait=True)`` wait for the writer.
"""

from __future__ import annotations

import contextlib
import json
import math
import queue
import threading
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, TextIO

import torch

from .run import PACK_MIN, pack

Row = dict[str, Any]
Finalize = Callable[[Row], "Row | None"]
#: runs on the writer thread before the transfer: fills deferred values into their rows
Job = Callable[[], None]
#: runs on the training thread at a flush: takes what was deferred so far, returns its Job
Taker = Callable[[], "Job | None"]


@dataclass(frozen=True)
class Part:
    """A row value that is ``base[index]`` of a tensor batched over many steps.

    Statistics reduced once per flush for all its steps hand out Parts: the flush copies
    each base once instead of one indexing op per step and value."""

    base: torch.Tensor
    index: int


@dataclass
class _Pending:
    signal: str
    row: Row
    finalize: Finalize | None


@dataclass
class _Batch:
    jobs: list[Job]
    pending: list[_Pending]
    events: list[tuple[int, Any]] = field(default_factory=list)  # (CUDA device index, torch.cuda.Event)


class Recorder:
    """Collects rows per signal and writes them in batches, on a writer thread."""

    def __init__(self, run_dir: Path) -> None:
        self.signals_dir = Path(run_dir) / "signals"
        self.signals_dir.mkdir(parents=True, exist_ok=True)
        for old in self.signals_dir.glob("*.jsonl"):  # a reused run directory starts empty
            old.unlink()
        self._pending: list[_Pending] = []
        self._files: dict[str, TextIO] = {}
        self._takers: list[Taker] = []
        self._streams: dict[int, Any] = {}
        #: CUDA device indices whose tensors reach the recorder (set by the watcher from the
        #: model's parameters): their streams are ordered before each batch
        self.cuda_devices: set[int] = set()
        self.rows_written = 0
        self.flushes = 0
        #: errors raised on the writer thread (the watcher reports them in meta.json)
        self.errors: list[str] = []
        #: one encoder for the run; rows are trees of fresh dicts and lists, so the
        #: circular-reference bookkeeping is skipped (~30 % of the JSON time)
        self._encoder = json.JSONEncoder(allow_nan=True, default=_jsonable, check_circular=False, separators=(", ", ": "))
        self._queue: queue.Queue[_Batch | None] = queue.Queue()
        self._writer = threading.Thread(target=self._write_loop, name="rnndoctor-writer", daemon=True)
        self._writer.start()

    def before_flush(self, take: Taker) -> None:
        """``take`` runs on the training thread at every flush and takes what its probe
        deferred; the Job it returns runs on the writer thread before the transfer and fills
        those rows' values, so the flush still makes one transfer per device."""
        self._takers.append(take)

    def add(self, signal: str, row: Row, finalize: Finalize | None = None) -> None:
        """Queue a row. Tensor values stay on their device until the next flush.

        ``finalize`` gets the row with host values after the transfer (on the writer thread)
        and may rewrite it (e.g. map an argmax index to a module name) or drop it by
        returning None.
        """
        self._pending.append(_Pending(signal, row, finalize))

    @property
    def pending(self) -> int:
        return len(self._pending)

    def flush(self, wait: bool = False) -> None:
        """Hand every pending row and deferred reduction to the writer (no host sync here);
        ``wait`` returns only once everything queued is on disk."""
        jobs = [job for job in (take() for take in self._takers) if job is not None]
        if self._pending or jobs:
            pending, self._pending = self._pending, []
            self._queue.put(_Batch(jobs, pending, _stream_events(self.cuda_devices)))
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
            batch = self._queue.get()
            try:
                if batch is None:
                    return
                self._write(batch)
            except Exception as exc:  # recording must go on; the watcher reports this
                if len(self.errors) < 20:
                    self.errors.append(f"writer: {type(exc).__name__}: {exc}")
            finally:
                self._queue.task_done()

    def _write(self, batch: _Batch) -> None:
        with self._on_side_streams(batch.events):
            for job in batch.jobs:
                job()
            _materialize([p.row for p in batch.pending])
        rows = []
        for p in batch.pending:
            row = p.finalize(p.row) if p.finalize is not None else p.row
            if row is not None:
                rows.append((p.signal, row))
        encode = self._encoder.encode
        for i, (signal, row) in enumerate(rows):
            self._file(signal).write(encode(row) + "\n")
            if i % 8 == 7:
                time.sleep(0)  # let a training thread that waits for the GIL have it now
        for f in self._files.values():
            f.flush()
        self.rows_written += len(rows)
        self.flushes += 1

    @contextlib.contextmanager
    def _on_side_streams(self, events: list[tuple[int, Any]]):  # noqa: ANN202 - a context manager
        """CUDA: order this batch after the training stream's work up to the hand-off, and
        run it on the writer's own stream per device."""
        with contextlib.ExitStack() as stack:
            for index, ev in events:
                stream = self._streams.get(index)
                if stream is None:
                    stream = self._streams[index] = torch.cuda.Stream(device=index)
                stream.wait_event(ev)
                stack.enter_context(torch.cuda.stream(stream))
            yield

    def _file(self, signal: str) -> TextIO:
        f = self._files.get(signal)
        if f is None:
            f = open(self.signals_dir / f"{signal}.jsonl", "a", encoding="utf-8")
            self._files[signal] = f
        return f


def _stream_events(devices: set[int]) -> list[tuple[int, Any]]:
    """An event on the training thread's current stream of each CUDA device (none on CPU)."""
    events = []
    for index in sorted(devices):
        ev = torch.cuda.Event()
        ev.record(torch.cuda.current_stream(index))
        events.append((index, ev))
    return events


def _materialize(rows: list[Row]) -> None:
    """Replace tensor and ``Part`` values in ``rows`` by Python numbers/lists, one host copy
    per device.

    Tensors (and the bases of Parts, once each) are grouped by (device, dtype) and joined
    with one ``cat`` per group, so a flush costs a handful of kernels however many steps it
    covers."""
    groups: dict[tuple[torch.device, torch.dtype], list[tuple[torch.Tensor, Any]]] = defaultdict(list)
    part_sinks: dict[int, list[tuple[Row, str, int]]] = {}
    for row in rows:
        for key, value in row.items():
            if isinstance(value, torch.Tensor):
                t = value.detach()
                groups[(t.device, t.dtype)].append((t, (row, key)))
            elif isinstance(value, Part):
                sink = part_sinks.get(id(value.base))
                if sink is None:
                    sink = part_sinks[id(value.base)] = []
                    t = value.base.detach()
                    groups[(t.device, t.dtype)].append((t, sink))
                sink.append((row, key, value.index))
    by_device: dict[torch.device, list[tuple[list[tuple[torch.Tensor, Any]], torch.Tensor]]] = defaultdict(list)
    for (device, _), items in groups.items():
        # 0-d tensors (most probe values) are joined by one stack; the rest need a view each
        scalars = [it for it in items if it[0].dim() == 0]
        others = [it for it in items if it[0].dim() != 0]
        if scalars:
            by_device[device].append((scalars, torch.stack([t for t, _ in scalars]).to(torch.float64)))
        if others:
            by_device[device].append((others, torch.cat([t.reshape(-1) for t, _ in others]).to(torch.float64)))
    for device, device_parts in by_device.items():
        host = torch.cat([flat for _, flat in device_parts]).cpu().numpy()
        offset = 0
        for items, _ in device_parts:
            for t, sink in items:
                n = t.numel()
                chunk = host[offset : offset + n].reshape(t.shape)
                offset += n
                if isinstance(sink, list):
                    for row, key, index in sink:
                        _put(row, key, chunk[index])
                else:
                    _put(sink[0], sink[1], chunk)


def _put(row: Row, key: str, values: Any) -> None:
    """A host value into its row: a number, a short list, or a packed array (run.PACK_MIN)."""
    if values.ndim == 0:
        row[key] = _py(values)
    elif values.size >= PACK_MIN:
        row[key] = pack(values)
    else:
        row[key] = values.tolist()


def _py(v: float) -> float | int:
    f = float(v)
    if math.isfinite(f) and f.is_integer() and abs(f) < 2**53:
        return int(f)
    return f


def _jsonable(value: Any) -> Any:
    if hasattr(value, "item"):
        return value.item()
    return str(value)
