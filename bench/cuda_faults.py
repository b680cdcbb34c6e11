"""Fault-matrix cells that only a GPU machine can run: the reliability fixes on CUDA.

    python bench/cuda_faults.py            # prints one PASS/FAIL line per cell, exit 1 on a FAIL

The fault matrix (tests/faults) runs its cells on the CPU in CI; these repeat the ones whose
code paths differ on CUDA (the writer thread, device-side reductions, torch.compile with
Triton): a compiled LSTM on the GPU under ``diagnose`` has bare's losses and recompiles, nested
watches both record, Ctrl-C keeps the record and dies of SIGINT, results and random streams
are bit-identical with and without ``watch()``.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

SCRIPT = """\
import os, sys, time, torch, torch.nn as nn, torch.nn.functional as F
torch.manual_seed(0); torch.backends.cudnn.deterministic = True; torch.backends.cudnn.benchmark = False
dev = "cuda"
class M(nn.Module):
    def __init__(s):
        super().__init__(); s.rnn = nn.LSTM(3, 32, num_layers=2, batch_first=True); s.head = nn.Linear(32, 2)
    def forward(s, x): return s.head(s.rnn(x)[0][:, -1])
m = M().to(dev)
if os.environ.get("COMPILE"): m = torch.compile(m)
o = torch.optim.Adam(m.parameters(), lr=1e-2)
g = torch.Generator(device=dev); g.manual_seed(1)
def train(steps):
    for i in range(steps):
        x = torch.randn(64, 20, 3, device=dev, generator=g); y = (x[:, 0, 0] > 0).long()
        l = F.cross_entropy(m(x), y); o.zero_grad(); l.backward(); o.step()
        if os.environ.get("PRINT"): print("loss", i, float(l).hex())
        if os.environ.get("ENDLESS") and i >= 40: time.sleep(0.02)
if os.environ.get("NESTED"):
    import rnndoctor
    with rnndoctor.watch(m, out="outer", summary=False), rnndoctor.watch(m, out="inner", summary=False):
        train(60)
elif os.environ.get("WATCH"):
    import rnndoctor
    with rnndoctor.watch(m, out="run", summary=False):
        train(60)
else:
    train(10**9 if os.environ.get("ENDLESS") else 60)
print("params", sum(float(p.double().sum()) for p in m.parameters()).hex(), "stream", torch.rand(1, device=dev).item())
"""


def run(cwd: Path, args: list[str], **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(args, cwd=cwd, capture_output=True, text=True, env={**os.environ, **env}, timeout=400)


def steps(run_dir: Path) -> int:
    lines = (run_dir / "signals" / "steps.jsonl").read_text().splitlines()
    return sum(1 for ln in lines if ln.strip() and json.loads(ln).get("mode") == "train")


def recompiles(text: str) -> int:
    return sum(1 for ln in text.splitlines() if "Recompiling function" in ln)


def compiled_model(cwd: Path) -> str:
    bare = run(cwd, [sys.executable, "s.py"], COMPILE="1", PRINT="1", TORCH_LOGS="recompiles")
    diag = run(cwd, [sys.executable, "-m", "rnndoctor", "diagnose", "s.py", "--out", "run", "--quiet"],
               COMPILE="1", PRINT="1", TORCH_LOGS="recompiles")
    assert bare.returncode == 0 and diag.returncode == 0, diag.stderr[-2000:]
    assert bare.stdout == diag.stdout, "losses differ"
    assert recompiles(diag.stderr) <= recompiles(bare.stderr), (recompiles(bare.stderr), recompiles(diag.stderr))
    names = json.dumps(json.loads((cwd / "run" / "meta.json").read_text())["model"])
    assert "_orig_mod" not in names
    return f"losses equal, recompiles {recompiles(bare.stderr)} bare / {recompiles(diag.stderr)} watched, {steps(cwd / 'run')} steps"


def nested(cwd: Path) -> str:
    p = run(cwd, [sys.executable, "s.py"], NESTED="1")
    assert p.returncode == 0, p.stderr[-2000:]
    counts = (steps(cwd / "outer"), steps(cwd / "inner"))
    assert counts == (60, 60), counts
    return "both records hold 60 steps"


def same_results(cwd: Path) -> str:
    bare = run(cwd, [sys.executable, "s.py"], PRINT="1")
    watched = run(cwd, [sys.executable, "s.py"], PRINT="1", WATCH="1")
    assert bare.returncode == 0 and watched.returncode == 0, watched.stderr[-2000:]
    again = run(cwd, [sys.executable, "s.py"], PRINT="1")
    if again.stdout != bare.stdout:
        return "SKIP: two bare runs differ on this GPU (nondeterministic kernels)"
    assert watched.stdout == bare.stdout, "results differ with watch()"
    return "losses, parameters and the CUDA random stream bit-identical"


def sigint(cwd: Path) -> str:
    proc = subprocess.Popen([sys.executable, "-m", "rnndoctor", "diagnose", "s.py", "--out", "sig", "--quiet"], cwd=cwd,
                            env={**os.environ, "ENDLESS": "1"}, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            try:
                if steps(cwd / "sig") >= 50:
                    break
            except (OSError, ValueError):
                pass
            time.sleep(0.2)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == -signal.SIGINT, (proc.returncode, err[-2000:])
    meta = json.loads((cwd / "sig" / "meta.json").read_text())
    assert meta["status"] == "interrupted" and steps(cwd / "sig") == meta["steps"] >= 50
    return f"record kept ({meta['steps']} steps), died of SIGINT"


CELLS: dict[str, Callable[[Path], str]] = {"compiled-model": compiled_model, "nested-watch": nested,
                                           "same-results": same_results, "sigint": sigint}


def main() -> int:
    failed = 0
    for name, cell in CELLS.items():
        with tempfile.TemporaryDirectory() as tmp:
            cwd = Path(tmp)
            (cwd / "s.py").write_text(SCRIPT)
            t0 = time.perf_counter()
            try:
                result = f"PASS {name}: {cell(cwd)}"
            except Exception as exc:  # noqa: BLE001 - every cell reports
                failed += 1
                result = f"FAIL {name}: {type(exc).__name__}: {exc}"
            print(f"{result} ({time.perf_counter() - t0:.0f} s)", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
