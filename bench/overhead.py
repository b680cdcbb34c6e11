"""Overhead of watch(): instrumented / bare step time, median of interleaved runs.

    python bench/overhead.py                 # S (seed-000 parity fixture model) and M
    python bench/overhead.py --model S --repeats 7 --steps 150
    python bench/overhead.py --model H --replay-every-step   # the hand-cell reading on every step
    python bench/overhead.py --model S --replay-every-step --gate-batch 8   # full detail on a subsample
    python bench/overhead.py --model S --whole-run 300 3000 --repeats 7   # whole runs, entry to exit

S is the seed 000 fixture's setting (2-layer LSTM, hidden 40, 7-bit parity, batch 100,
Adagrad); M is a 2-layer hidden-256 LSTM on length-100 sequences, batch 32; H a hand-written
cell looped over 60 steps (not in the default run: ``--model H``; with
``--replay-every-step`` every step is a gates step, which prices the dataflow reading). Bare and
instrumented runs alternate so drifting machine load hits both alike; the median of the
paired ratios and its quartiles are printed (on a shared machine one run of either kind can
be 10 % off, so use 30+ pairs). Not a test: numbers go into the issue notes.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

import rnndoctor


@dataclass(frozen=True)
class Setting:
    name: str
    hidden: int
    layers: int
    seq: int
    batch: int
    features: int = 1
    #: a hand-written LSTM cell (one nn.Linear on [x, h] chunked into the gates) looped over
    #: time, read by dataflow on the gates steps, instead of a fused nn.LSTM
    hand_cell: bool = False


SETTINGS = {
    "S": Setting("S: seed-000 parity (2x LSTM h40, T=7, B=100)", 40, 2, 7, 100),
    "M": Setting("M: 2x LSTM h256, T=100, B=32", 256, 2, 100, 32),
    "H": Setting("H: hand-written LSTM cell h64 in a Python loop, T=60, B=32", 64, 1, 60, 32, hand_cell=True),
}


class HandCell(nn.Module):
    def __init__(self, features: int, hidden: int) -> None:
        super().__init__()
        self.lin = nn.Linear(features + hidden, 4 * hidden)

    def forward(self, x: torch.Tensor, state: tuple[torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        h, c = state
        i, f, g, o = self.lin(torch.cat([x, h], 1)).chunk(4, 1)
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        return torch.sigmoid(o) * torch.tanh(c), c


class Net(nn.Module):
    def __init__(self, s: Setting) -> None:
        super().__init__()
        self.hidden = s.hidden
        if s.hand_cell:
            self.cell = HandCell(s.features, s.hidden)
        else:
            self.lstm = nn.LSTM(s.features, s.hidden, s.layers, batch_first=True)
        self.out = nn.Linear(s.hidden, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not hasattr(self, "cell"):
            return self.out(self.lstm(x)[0][:, -1])
        h = c = x.new_zeros(x.shape[0], self.hidden)
        for t in range(x.shape[1]):
            h, c = self.cell(x[:, t], (h, c))
        return self.out(h)


def _setup(s: Setting, seed: int, device: str) -> tuple[Net, torch.optim.Optimizer, list[torch.Tensor], list[torch.Tensor], Any]:
    """A fresh model and optimizer, 8 parity batches, and the clock's synchronize."""
    torch.manual_seed(seed)
    model = Net(s).to(device)
    opt = torch.optim.Adagrad(model.parameters(), lr=0.1)
    data = [torch.randint(0, 2, (s.batch, s.seq, s.features)).float().to(device) for _ in range(8)]
    labels = [(x.sum((1, 2)) % 2).long() for x in data]
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    return model, opt, data, labels, sync


def _train_step(model: Net, opt: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor) -> None:
    loss = F.cross_entropy(model(x), y)
    opt.zero_grad()
    loss.backward()
    opt.step()


#: steps run before timing starts. The watcher's dense start-up schedules (data probes on the
#: first 50 steps, update ratios on the first 20) are part of the first steps; the timed
#: window measures the steady state that dominates a real run.
WARMUP_STEPS = 60


def one_run(s: Setting, steps: int, instrumented: bool, seed: int, device: str = "cpu", replay_every_step: bool = False,
            gate_batch: int | None = None) -> float:
    """Seconds per optimizer step over ``steps`` steps (after WARMUP_STEPS warm-up steps).

    On CUDA the clock is read after a synchronize, so queued kernels are counted."""
    model, opt, data, labels, sync = _setup(s, seed, device)

    def loop(n: int) -> None:
        for i in range(n):
            _train_step(model, opt, data[i % 8], labels[i % 8])

    def timed() -> float:
        loop(WARMUP_STEPS)
        sync()
        t0 = time.perf_counter()
        loop(steps)
        sync()
        return (time.perf_counter() - t0) / steps

    if not instrumented:
        return timed()
    options: dict[str, Any] = {"gates": (lambda step: True)} if replay_every_step else {}
    if gate_batch is not None:
        options["gate_batch"] = gate_batch
    with tempfile.TemporaryDirectory() as d, rnndoctor.watch(model, out=d, summary=False, **options):
        return timed()


def whole_run(s: Setting, steps: int, mode: str, seed: int, device: str = "cpu") -> tuple[float, float, float]:
    """(wall seconds of the whole run, of its first 100 steps, of leaving the context) for
    ``mode`` bare | watched | anomaly, from entering the context (``watch()`` or
    ``torch.autograd.detect_anomaly()``; nothing for bare) to leaving it: what a user's
    program waits for. A watched run's report is then awaited untimed, so its background
    process never overlaps the next run's timing."""
    model, opt, data, labels, sync = _setup(s, seed, device)
    with tempfile.TemporaryDirectory() as d:
        sync()
        t0 = time.perf_counter()
        ctx: Any = (rnndoctor.watch(model, out=d, summary=False) if mode == "watched"
                    else torch.autograd.detect_anomaly() if mode == "anomaly" else contextlib.nullcontext())
        ctx.__enter__()
        first = 0.0
        for i in range(steps):
            _train_step(model, opt, data[i % 8], labels[i % 8])
            if i + 1 == min(100, steps):
                sync()
                first = time.perf_counter() - t0
        sync()
        t1 = time.perf_counter()
        ctx.__exit__(None, None, None)
        t2 = time.perf_counter()
        if mode == "watched":
            ctx.wait_report(timeout=600)
    return t2 - t0, first, t2 - t1


def _quartiles(xs: list[float]) -> str:
    if len(xs) < 2:
        return f"{xs[0]:.3f}"
    q1, med, q3 = statistics.quantiles(xs, n=4)
    return f"{statistics.median(xs):.3f} ({q1:.3f}-{q3:.3f})"


def main_whole_run(args: argparse.Namespace) -> None:
    """Whole runs of each length, bare / watched / detect_anomaly interleaved: the ratios of
    the whole run's wall time, of its first 100 steps, and the seconds spent leaving."""
    warnings.filterwarnings("ignore", "Anomaly Detection has been enabled")
    for key in args.model or ["S"]:
        s = SETTINGS[key]
        for steps in args.whole_run:
            walls: dict[str, list[float]] = {m: [] for m in ("bare", "watched", "anomaly")}
            firsts: dict[str, list[float]] = {m: [] for m in walls}
            exits: list[float] = []
            for r in range(args.repeats):
                for mode in walls:
                    wall, first, leave = whole_run(s, steps, mode, r, args.device)
                    walls[mode].append(wall)
                    firsts[mode].append(first)
                    if mode == "watched":
                        exits.append(leave)
            ratio = {m: [w / b for w, b in zip(walls[m], walls["bare"])] for m in ("watched", "anomaly")}
            first = {m: [w / b for w, b in zip(firsts[m], firsts["bare"])] for m in ("watched", "anomaly")}
            print(f"{s.name}, {steps} steps, {args.repeats} interleaved triples: bare {statistics.median(walls['bare']):.2f} s; "
                  f"whole run watched/bare {_quartiles(ratio['watched'])}, anomaly/bare {_quartiles(ratio['anomaly'])}; "
                  f"first 100 steps watched/bare {_quartiles(first['watched'])}, anomaly/bare {_quartiles(first['anomaly'])}; "
                  f"leaving watch() {_quartiles(exits)} s")
            sys.stdout.flush()


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", choices=sorted(SETTINGS), action="append")
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: leave as is)")
    ap.add_argument("--device", default="cpu", help="cpu or cuda")
    ap.add_argument("--replay-every-step", action="store_true", help="gate replay on every step instead of its schedule")
    ap.add_argument("--gate-batch", type=int, default=None, help="replay at most this many sequences of each batch")
    ap.add_argument("--whole-run", type=int, nargs="+", metavar="STEPS",
                    help="time whole runs of these lengths (entry, steps, exit) against bare and detect_anomaly runs")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    where = torch.cuda.get_device_name() if args.device.startswith("cuda") else f"{torch.get_num_threads()} CPU threads"
    print(f"torch {torch.__version__}, {where}, rnndoctor {rnndoctor.__version__}")
    if args.whole_run:
        main_whole_run(args)
        return
    for key in args.model or ["S", "M"]:
        s = SETTINGS[key]
        steps = args.steps if key == "S" else max(20, args.steps // 4)
        bare, inst = [], []
        for r in range(args.repeats):
            bare.append(one_run(s, steps, False, r, args.device))
            inst.append(one_run(s, steps, True, r, args.device, args.replay_every_step, args.gate_batch))
        ratios = [i / b for i, b in zip(inst, bare)]
        q1, _, q3 = statistics.quantiles(ratios, n=4)
        print(
            f"{s.name}: bare {statistics.median(bare) * 1e3:.2f} ms/step, watched "
            f"{statistics.median(inst) * 1e3:.2f} ms/step, ratio median {statistics.median(ratios):.3f} "
            f"(quartiles {q1:.3f}-{q3:.3f}; {args.repeats} interleaved runs x {steps} steps)"
        )
        sys.stdout.flush()


if __name__ == "__main__":
    main()
