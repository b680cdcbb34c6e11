"""torch.compile under rnndoctor: the reliability issue's compiled LSTM trained with the same
loss under ``diagnose`` but 10-30x slower, because Dynamo compiled and recompiled our hook
bodies; names carried torch.compile's ``_orig_mod.`` prefix.

Each cell runs the same seeded script bare (``python t.py``) and under rnndoctor, with
``TORCH_LOGS=recompiles``, and asserts: the run completes, the losses are the bare run's to
the last digit, Dynamo recompiles no more often than bare (counted from its log, not timed:
wall time is not asserted here), and meta.json names modules as the user does.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from harness import Cli, Result, our_frames

#: a seeded 60-step LSTM (or GRUCell-loop) classifier; MODE picks what is compiled
COMPILED_PY = """\
import os, sys, torch, torch.nn as nn, torch.nn.functional as F
try:
    import torch._dynamo
    supported = torch._dynamo.is_dynamo_supported()
except Exception:
    supported = False
if not supported:
    sys.exit(77)
torch.manual_seed(0)
MODE = os.environ.get("MODE", "wrap")

class M(nn.Module):
    def __init__(self):
        super().__init__()
        self.rnn = nn.LSTM(3, 8, batch_first=True)
        self.head = nn.Linear(8, 2)
    def forward(self, x):
        return self.head(self.rnn(x)[0][:, -1])

class C(nn.Module):  # a GRUCell loop: Dynamo traces all of it (fused RNNs it hands back to eager)
    def __init__(self):
        super().__init__()
        self.rnn = nn.GRUCell(3, 8)
        self.head = nn.Linear(8, 2)
    def forward(self, x):
        h = x.new_zeros(x.shape[0], 8)
        for t in range(x.shape[1]):
            h = self.rnn(x[:, t], h)
        return self.head(h)

model = C() if os.environ.get("CELL") else M()
FULLGRAPH = dict(fullgraph=True) if os.environ.get("FULLGRAPH") else {}
if MODE == "wrap":
    model = torch.compile(model, **FULLGRAPH)
elif MODE == "inplace":
    model.compile(**FULLGRAPH)
elif MODE == "sub":
    model.rnn = torch.compile(model.rnn)
opt = torch.optim.Adam(model.parameters(), lr=1e-2)

def step(x, y):
    return F.cross_entropy(model(x), y)
if MODE == "fn":
    step = torch.compile(step, **FULLGRAPH)

def train():
    losses = []
    for i in range(60):
        x = torch.randn(16, 5, 3); y = (x[:, 0, 0] > 0).long()
        loss = step(x, y); opt.zero_grad(); loss.backward(); opt.step()
        losses.append(loss.detach())
    print("LOSSES", " ".join(repr(v.item()) for v in losses))

if os.environ.get("WATCH"):
    import rnndoctor
    with rnndoctor.watch(model, out="run", summary=False):
        train()
else:
    train()
"""


def _python(cli: Cli, env: dict[str, str]) -> Result:
    """The script as the user runs it, without rnndoctor."""
    full_env = {**os.environ, **env}
    proc = subprocess.run([sys.executable, "t.py"], capture_output=True, text=True, cwd=cli.cwd, env=full_env, timeout=300)
    return Result(["t.py"], proc.returncode, proc.stdout, proc.stderr)


def _bare(cli: Cli, env: dict[str, str]) -> Result:
    """The bare run; skips the test where torch.compile cannot run here (no Dynamo for this
    Python, no C++ compiler for inductor)."""
    cli.script(COMPILED_PY)
    bare = _python(cli, env)
    if bare.returncode == 77:
        pytest.skip("torch.compile (Dynamo) is not supported on this Python/platform")
    if bare.returncode != 0:
        pytest.skip(f"torch.compile does not run here: {bare.stderr.strip().splitlines()[-1:]}")
    return bare


def _losses(result: Result) -> list[str]:
    lines = [line for line in result.stdout.splitlines() if line.startswith("LOSSES ")]
    assert lines, f"the script printed no losses:\n{result.output}"
    return lines[-1].split()[1:]


def _recompiles(result: Result) -> int:
    """Recompilations Dynamo logged (``TORCH_LOGS=recompiles``)."""
    return sum("Recompiling function" in line for line in result.stderr.splitlines())


def _assert_user_names(meta: dict) -> None:
    model = meta["model"]
    names = [m["name"] for m in model["modules"]] + [r["name"] for r in model["recurrent"]] + [p["name"] for p in model["params"]]
    assert not [n for n in names if "_orig_mod" in n], names
    assert [r["name"] for r in model["recurrent"]] == ["rnn"]
    assert {m["name"] for m in model["modules"]} in ({"M", "rnn", "head"}, {"C", "rnn", "head"})


LOGS = {"TORCH_LOGS": "recompiles"}


@pytest.mark.parametrize("mode", ["wrap", "inplace", "sub", "fn"])
def test_compiled_lstm_under_diagnose_trains_as_bare(cli: Cli, mode: str) -> None:
    """torch.compile(model), model.compile(), a compiled submodule, a compiled step function."""
    env = {**LOGS, "MODE": mode}
    bare = _bare(cli, env)
    res = cli.run("diagnose", "t.py", "--quiet", "--out", "run", env=env)
    assert res.returncode == 0, res.output
    meta = cli.meta("run")
    assert meta["status"] == "completed" and meta["steps"] == 60
    assert not meta.get("internal_errors"), meta.get("internal_errors")
    assert _losses(res) == _losses(bare)
    assert _recompiles(res) == _recompiles(bare), res.stderr[-3000:]
    _assert_user_names(meta)
    assert meta["model"]["roots"] == ["M"]
    assert "global hooks" not in res.stderr  # torch's warning about our discovery hook


def test_compiled_lstm_keeps_recurrent_probes_and_says_what_it_cannot_see(cli: Cli) -> None:
    env = {**LOGS, "MODE": "wrap"}
    _bare(cli, env)
    res = cli.run("diagnose", "t.py", "--quiet", "--out", "run", env=env)
    assert res.returncode == 0, res.output
    signals = {p.stem for p in (cli.cwd / "run" / "signals").glob("*.jsonl")}
    assert {"rnn_inputs", "gates", "time_grad", "nonfinite"} <= signals, signals
    note = cli.meta("run")["model"]["compiled"]
    assert set(note["modules"]) == {"M", "rnn", "head"} and note["unseen"] == [] and note["note"]


def test_traced_cell_model_under_diagnose_trains_as_bare(cli: Cli) -> None:
    """A GRUCell loop is traced by Dynamo as one graph: our hooks must stay out of it."""
    env = {**LOGS, "MODE": "wrap", "CELL": "1"}
    bare = _bare(cli, env)
    res = cli.run("diagnose", "t.py", "--quiet", "--out", "run", env=env)
    assert res.returncode == 0, res.output
    meta = cli.meta("run")
    assert meta["status"] == "completed" and not meta.get("internal_errors")
    assert _losses(res) == _losses(bare)
    assert _recompiles(res) == _recompiles(bare), res.stderr[-3000:]
    _assert_user_names(meta)
    assert meta["model"]["compiled"]["unseen"] == ["rnn"]  # traced: its gates cannot be replayed


@pytest.mark.parametrize("mode", ["inplace", "fn"])
def test_fullgraph_cell_model_under_diagnose_trains_as_bare(cli: Cli, mode: str) -> None:
    """``fullgraph=True`` fails on any graph break: our callbacks in traced code (discovery,
    the model's pre-hook, the loss) are deferred, not graph breaks. Discovery, still armed
    when the model is first traced, is removed after the first step: Dynamo guards on the
    global hook dict's length and compiles once more (a compiled ``torch.compile(model)``
    keeps it out of its region and recompiles no more than bare, see above)."""
    env = {**LOGS, "MODE": mode, "CELL": "1", "FULLGRAPH": "1"}
    bare = _bare(cli, env)
    res = cli.run("diagnose", "t.py", "--quiet", "--out", "run", env=env)
    assert res.returncode == 0, res.output
    meta = cli.meta("run")
    assert meta["status"] == "completed" and meta["steps"] == 60 and not meta.get("internal_errors")
    assert _losses(res) == _losses(bare)
    assert _recompiles(res) <= _recompiles(bare) + 1, res.stderr[-3000:]
    _assert_user_names(meta)
    rows = [json.loads(line) for line in (cli.cwd / "run" / "signals" / "steps.jsonl").read_text().splitlines() if line.strip()]
    assert sum(r.get("loss") is not None for r in rows if r.get("mode") == "train") == 60  # losses from traced code


@pytest.mark.parametrize(("cell", "mode", "fullgraph"), [("", "wrap", ""), ("1", "wrap", ""), ("1", "fn", "1")])
def test_watch_in_script_on_a_compiled_model(cli: Cli, cell: str, mode: str, fullgraph: str) -> None:
    """``with rnndoctor.watch(model)`` inside the script, around a compiled model or step."""
    env = {**LOGS, "MODE": mode, "CELL": cell, "FULLGRAPH": fullgraph}
    bare = _bare(cli, env)
    res = _python(cli, {**env, "WATCH": "1"})
    assert res.returncode == 0, res.output
    assert not our_frames(res.output), res.output
    assert _losses(res) == _losses(bare)
    assert _recompiles(res) == _recompiles(bare), res.stderr[-3000:]
    meta = cli.meta("run")
    assert meta["steps"] == 60 and not meta.get("internal_errors")
    _assert_user_names(meta)
