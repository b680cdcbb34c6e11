"""A word-language-model-sized run under watch(): record size and the cost of the first steps.

    python bench/language_model.py                     # vocab 10k, 3 pairs of 100 steps, one 1000-step record
    python bench/language_model.py --vocab 20000 --pairs 5 --record-steps 0

The model is pytorch/examples' word_language_model at its defaults (embedding 200, 2-layer
LSTM 200, tied-size decoder over the vocabulary, batch 20, BPTT 35, SGD at lr 20 with
gradient clipping 0.25, hidden state repackaged between batches); tokens are drawn from a
Zipf law over the vocabulary (as words are), so a batch of 700 targets sees a few hundred
classes of 10k. Bare and watched runs of the first 100 steps alternate in one process (a
fresh model each, same seed); the median of the paired wall-time ratios and its quartiles
are printed. Then one watched run of ``--record-steps`` steps gives the size of its record.
Not a test: the numbers go into the issue notes. Run it on an otherwise idle machine.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

import rnndoctor


class WordLM(nn.Module):
    def __init__(self, vocab: int, emb: int = 200, hidden: int = 200, layers: int = 2) -> None:
        super().__init__()
        self.encoder = nn.Embedding(vocab, emb)
        self.rnn = nn.LSTM(emb, hidden, layers)
        self.decoder = nn.Linear(hidden, vocab)

    def forward(self, x: torch.Tensor, state: tuple[torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        out, state = self.rnn(self.encoder(x), state)
        return self.decoder(out), state


def corpus(vocab: int, tokens: int, seed: int = 0) -> torch.Tensor:
    """Token ids with Zipf-distributed frequencies (rank r has probability ~ 1/r)."""
    rng = np.random.default_rng(seed)
    p = 1.0 / np.arange(1, vocab + 1)
    return torch.from_numpy(rng.choice(vocab, size=tokens, p=p / p.sum()))


def train(vocab: int, steps: int, data: torch.Tensor, out: Path | None, batch: int = 20, bptt: int = 35) -> tuple[float, float]:
    """(wall, process CPU) seconds for ``steps`` steps, watched when ``out`` is given
    (including entering watch(); leaving it, which writes the report, is not part of the
    steps). CPU time leaves out what a busy host takes from this VM (steal), which moves the
    wall time of the same 100 steps by ±15 % here."""
    torch.manual_seed(0)
    model = WordLM(vocab)
    opt = torch.optim.SGD(model.parameters(), lr=20.0)
    stream = data[: (len(data) // batch) * batch].view(batch, -1).t().contiguous()  # [tokens/batch, batch]
    state = (torch.zeros(2, batch, 200), torch.zeros(2, batch, 200))
    watch = rnndoctor.watch(model, out=out, summary=False) if out is not None else None
    t0, c0 = time.perf_counter(), time.process_time()
    if watch is not None:
        watch.__enter__()
    try:
        for i in range(steps):
            start = (i * bptt) % (stream.shape[0] - bptt - 1)
            x, y = stream[start : start + bptt], stream[start + 1 : start + 1 + bptt]
            state = (state[0].detach(), state[1].detach())
            logits, state = model(x, state)
            loss = F.cross_entropy(logits.reshape(-1, vocab), y.reshape(-1))
            opt.zero_grad()
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), 0.25)
            opt.step()
        elapsed, cpu = time.perf_counter() - t0, time.process_time() - c0
    finally:
        if watch is not None:
            watch.__exit__(None, None, None)
    return elapsed, cpu


def record_bytes(run_dir: Path) -> dict[str, int]:
    files = {p.name: p.stat().st_size for p in (run_dir / "signals").glob("*.jsonl")}
    files["meta.json"] = (run_dir / "meta.json").stat().st_size
    return files


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--vocab", type=int, default=10_000)
    ap.add_argument("--pairs", type=int, default=3, help="bare/watched pairs of the first --steps steps")
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--record-steps", type=int, default=1000, help="one watched run this long for the record size (0: skip)")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    data = corpus(args.vocab, 400_000)
    print(f"word LM: vocab {args.vocab}, 2x LSTM 200, batch 20 x BPTT 35; torch {torch.__version__}, {torch.get_num_threads()} threads")
    ratios, cpu_ratios, bare_s, watched_s = [], [], [], []
    with tempfile.TemporaryDirectory() as tmp:
        train(args.vocab, 5, data, None)  # warm the allocator and kernels once
        for k in range(args.pairs):
            (b, bc), (w, wc) = train(args.vocab, args.steps, data, None), train(args.vocab, args.steps, data, Path(tmp) / f"pair{k}")
            bare_s.append(b)
            watched_s.append(w)
            ratios.append(w / b)
            cpu_ratios.append(wc / bc)
            print(f"  pair {k + 1}: bare {b:.2f} s, watched {w:.2f} s, ratio {w / b:.3f}; CPU {bc:.2f} s, {wc:.2f} s, ratio {wc / bc:.3f}", flush=True)
        for what, rs in (("wall", ratios), ("CPU", cpu_ratios)):
            q = statistics.quantiles(rs, n=4) if len(rs) >= 2 else [rs[0]] * 3
            print(f"first {args.steps} steps, watched/bare {what} time: median {statistics.median(rs):.3f} "
                  f"(quartiles {q[0]:.3f}-{q[2]:.3f}, {len(rs)} pairs)")
        print(f"bare {statistics.median(bare_s) / args.steps * 1e3:.0f} ms/step (wall)")
        if args.record_steps:
            run_dir = Path(tmp) / "record"
            t, _ = train(args.vocab, args.record_steps, data, run_dir)
            sizes = record_bytes(run_dir)
            total = sum(sizes.values())
            print(f"record of {args.record_steps} watched steps ({t:.0f} s): {total / 1e6:.2f} MB "
                  f"({total / 1e6 * 1000 / args.record_steps:.2f} MB per 1000 steps)")
            for name, size in sorted(sizes.items(), key=lambda kv: -kv[1])[:6]:
                print(f"  {name:24s} {size / 1e3:9.1f} kB")


if __name__ == "__main__":
    main()
