"""Device-side buffers, batched host transfer, incremental crash-safe writes.

Probes hand the recorder rows whose values may still be tensors on the GPU. ``flush()``
takes the pending rows (and the deferred reductions the probes left for flush time) and
writes them: the reductions run, every pending tensor of a device is concatenated and copied
to the host in ONE transfer, and the rows are appended as JSON lines to
``<run_dir>/signals/<signal>.jsonl``.

Where that work runs (``writer_in_background``):

* On a writer thread when the model is on a GPU or the process has a core that torch's
  intra-op threads leave free. Nothing is then read back on the training thread. The
  watcher flushes right after a loss is computed and ticks the writer there on every step,
  and the writer does its work in short slices, one per tick, so its Python runs while the
  training thread is in backward (which releases the GIL). On CUDA the writer waits on an
  event recorded on the training thread's stream at hand-off and works on its own stream;
  the tensors it reads stay referenced until its host copy has completed. It runs at the
  lowest CPU priority where the OS gives a thread its own (Linux).
* Inline, on the training thread, at the flush, when the model is on the CPU and every core
  already runs a torch thread. A CPU tensor needs no transfer, and a second Python thread
  there only competes for the GIL and the cores: on 2 cores the seed-000 model measured
  ~1.08x inline against ~1.18x with the thread (bench/overhead.py).

``RNNDOCTOR_WRITER=thread|inline`` (or ``watch(writer=...)``) overrides the choice.
If the writer thread falls behind by ``MAX_QUEUED_BATCHES``, ``flush()`` waits for it, so
memory stays bounded.

A killed process loses at most the rows of the last flushes, and what was written stays
readable (see ``run.load_run``); ``close()`` and ``flush(wait=True)`` wait for the writer.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import queue
import sys
import threading
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, TextIO

import numpy as np
import torch

from .run import PACK_MIN, pack
from .rundir import SIGNALS_DIR
from .signals import SignalContractError, undeclared

Row = dict[str, Any]
Finalize = Callable[[Row], "Row | None"]
#: runs on the writer thread before the transfer: fills deferred values into their rows
Job = Callable[[], None]
#: runs on the training thread at a flush: takes what was deferred so far, returns its Job
Taker = Callable[[], "Job | None"]

#: ``flush()`` waits for the writer when this many batches are still queued: rows and the
#: device tensors they hold are bounded even if the writer gets little CPU
MAX_QUEUED_BATCHES = 8
#: the writer does one slice of a batch per training step (see ``Recorder.tick``); a slice
#: writes this many rows of JSON
ROWS_PER_SLICE = 16
#: ... and waits at most this long for the next tick
PACE_TIMEOUT_S = 0.02
#: the writer thread's niceness (Linux: per thread; 19 is the lowest priority)
WRITER_NICENESS = 19


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
    """Collects rows per signal and writes them in batches (on the writer thread or inline)."""

    def __init__(self, run_dir: Path, *, background: bool = True, contract: str | None = None) -> None:
        """``background``: write on the writer thread (see the module docstring); may be
        changed until the first flush."""
        self.signals_dir = Path(run_dir) / SIGNALS_DIR
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
        self._ticked = threading.Event()
        self._closing = False
        self._hurry = False
        self.background = background
        self._queue: queue.Queue[_Batch | None] = queue.Queue()
        self._writer: threading.Thread | None = None  # started with the first background batch
        #: a row breaking the signal contract (signals.py) is dropped and kept as an error;
        #: ``contract="raise"`` (the tests) also makes ``close()`` raise it
        self.contract = contract if contract is not None else os.environ.get(CONTRACT_ENV, "record")
        self.contract_error: SignalContractError | None = None

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
            if not self.background:
                self._write_now(_Batch(jobs, pending))
                return
            if self._writer is None:
                self._writer = threading.Thread(target=self._write_loop, name="rnndoctor-writer", daemon=True)
                self._writer.start()
            self._queue.put(_Batch(jobs, pending, _stream_events(self.cuda_devices)))
        if self._writer is not None and (wait or self._queue.qsize() > MAX_QUEUED_BATCHES):
            self._drain()

    def _drain(self) -> None:
        """Wait until the writer thread has written everything queued (no pacing meanwhile)."""
        self._hurry = True
        self._ticked.set()
        try:
            self._queue.join()
        finally:
            self._hurry = self._closing

    def close(self) -> None:
        self._closing = self._hurry = True
        self._ticked.set()
        self.flush()
        if self._writer is not None:
            self._queue.put(None)
            self._writer.join()
        for f in self._files.values():
            try:
                f.close()
            except OSError as exc:  # its last buffered rows could not be written (disk full)
                self._keep_error(exc)
        self._files.clear()
        if self.contract == "raise" and self.contract_error is not None:
            raise self.contract_error

    def _write_loop(self) -> None:
        _lower_priority()
        while True:
            batch = self._queue.get()
            try:
                if batch is None:
                    return
                self._write(batch)
            except Exception as exc:  # recording must go on; the watcher reports this
                self._keep_error(exc)
            finally:
                self._queue.task_done()

    def _write(self, batch: _Batch) -> None:
        for _ in self._write_steps(batch):
            self._pace()

    def _write_now(self, batch: _Batch) -> None:
        """Inline mode: the whole batch on the calling (training) thread, errors kept like
        the writer thread keeps them."""
        if self._writer is not None:  # switched from the thread: keep the order of rows
            self._drain()
        try:
            for _ in self._write_steps(batch):
                pass
        except Exception as exc:
            self._keep_error(exc)

    def _keep_error(self, exc: Exception) -> None:
        if len(self.errors) < 20:
            self.errors.append(f"writer: {type(exc).__name__}: {exc}")

    def _write_steps(self, batch: _Batch) -> Iterator[None]:
        """The batch's work in slices of ~0.1-0.3 ms of CPU; the writer paces between them."""
        with self._on_side_streams(batch.events):
            for job in batch.jobs:
                job()
                yield
            _materialize([p.row for p in batch.pending])
        yield
        rows = []
        for p in batch.pending:
            row = p.finalize(p.row) if p.finalize is not None else p.row
            if row is not None and self._declared(p.signal, row):
                rows.append((p.signal, _as_json(row)))
        encode = self._encoder.encode
        self._check_directory()
        for i, (signal, row) in enumerate(rows):
            self._file(signal).write(encode(row) + "\n")
            if i % ROWS_PER_SLICE == ROWS_PER_SLICE - 1:
                yield
        for f in self._files.values():
            f.flush()
        self.rows_written += len(rows)
        self.flushes += 1

    def _declared(self, signal: str, row: Row) -> bool:
        problem = undeclared(signal, row)
        if problem is None:
            return True
        if self.contract_error is None:
            self.contract_error = SignalContractError(problem)
            self.errors.append(f"signal contract: {problem}")
        return False

    def tick(self) -> None:
        """The training thread is about to spend a while without the GIL (a backward pass
        follows a loss): the writer may run its next slice now."""
        if self._writer is not None:
            self._ticked.set()

    def _pace(self) -> None:
        """Wait for the next tick before the next slice, so the writer's Python runs while
        the training thread is in backward (GIL released) instead of holding up its forward
        pass; a loop without ticks (evaluation only) is paced by the timeout, and closing
        stops the pacing."""
        if self._hurry:
            return
        self._ticked.clear()
        self._ticked.wait(PACE_TIMEOUT_S)

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

    def _check_directory(self) -> None:
        """The program deleted the run directory under us (``rm -rf reports``): start the
        files again, so what comes after is kept, and say that what came before was lost."""
        if self._files and not self.signals_dir.is_dir():
            for f in self._files.values():
                f.close()
            self._files.clear()
            self.signals_dir.mkdir(parents=True, exist_ok=True)
            self._keep_error(FileNotFoundError("the run directory was removed while recording; the rows written before are lost"))

    def _file(self, signal: str) -> TextIO:
        f = self._files.get(signal)
        if f is None:
            f = open(self.signals_dir / f"{signal}.jsonl", "a", encoding="utf-8")
            self._files[signal] = f
        return f


#: ``RNNDOCTOR_WRITER``: ``thread`` or ``inline`` forces where the recorder writes
WRITER_ENV = "RNNDOCTOR_WRITER"
#: ``raise``: a row breaking the signal contract makes ``Recorder.close()`` raise (tests)
CONTRACT_ENV = "RNNDOCTOR_SIGNAL_CONTRACT"


def writer_choice(choice: str | None = None) -> str | None:
    """``choice``, else RNNDOCTOR_WRITER: ``thread``, ``inline`` or None (decide), checked."""
    choice = choice or os.environ.get(WRITER_ENV) or None
    if choice not in (None, "thread", "inline"):
        raise ValueError(f"{WRITER_ENV}/writer must be 'thread' or 'inline', not {choice!r}")
    return choice


def writer_in_background(on_cuda: bool, choice: str | None = None) -> bool:
    """Write on a thread of its own only where that thread gets something: a GPU to
    overlap with, or a core no torch thread uses. ``choice`` (or RNNDOCTOR_WRITER):
    ``thread``/``inline`` to force it."""
    choice = writer_choice(choice)
    if choice is not None:
        return choice == "thread"
    return on_cuda or _available_cpus() > torch.get_num_threads()


def _available_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def _lower_priority() -> None:
    """Make the calling thread (the writer) yield the CPU to training threads (Linux only:
    elsewhere the niceness applies to the whole process, so nothing is changed)."""
    if not sys.platform.startswith("linux"):
        return
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), WRITER_NICENESS)
    except OSError:  # not permitted in this sandbox: run at normal priority
        pass


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
    """A host value into its row: a number, or a numpy array (finalizers may cut it;
    ``_as_json`` writes it)."""
    row[key] = _py(values) if values.ndim == 0 else values


def _as_json(row: Row) -> Row:
    """Arrays left in a finalized row: a short list, or a packed array (run.PACK_MIN)."""
    for key, value in row.items():
        if isinstance(value, np.ndarray):
            row[key] = pack(value) if value.size >= PACK_MIN else value.tolist()
    return row


def _py(v: float) -> float | int:
    f = float(v)
    if math.isfinite(f) and f.is_integer() and abs(f) < 2**53:
        return int(f)
    return f


def _jsonable(value: Any) -> Any:
    if hasattr(value, "item"):
        return value.item()
    return str(value)
