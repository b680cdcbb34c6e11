"""The probe contract (rnndoctor/probes/base.py): a probe written against it plugs in without
touching watch.py; probes are switched off by name; a probe's error never reaches the loop."""

import json

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import rnndoctor
from rnndoctor import signals
from rnndoctor.probes import DEFAULT_PROBES, Probe, select
from rnndoctor.schedule import SCHEDULES


# ---------------------------------------------------------------- the ten-line example probe
class HiddenNorm(Probe):
    """Mean norm of each recurrent module's final hidden state, per step."""

    name, schedule, signals = "hidden_norm", "gates", ("hidden_norms",)

    def start(self, ctx):
        self.ctx = ctx
        return []

    def rnn_output(self, name, module, args, kwargs, output):
        h = output[1][0] if isinstance(output[1], tuple) else output[1]
        self.ctx.recorder.add("hidden_norms", {"step": self.ctx.step, "module": name, "norm": h.detach().norm(dim=-1).mean()})


HIDDEN_NORMS = signals.Signal("hidden_norms", keys=("step", "module"), values={"norm": "mean ||h_T||"}, when="gates schedule")


@pytest.fixture
def declared(monkeypatch):
    """Adding the probe's line to signals.py, as a real probe would."""
    monkeypatch.setitem(signals.CATALOGUE, "hidden_norms", HIDDEN_NORMS)


class Tiny(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lstm, self.out = nn.LSTM(1, 8, batch_first=True), nn.Linear(8, 2)

    def forward(self, x):
        return self.out(self.lstm(x)[0][:, -1])


def train(model, steps):
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    for _ in range(steps):
        x = torch.randint(0, 2, (16, 5, 1)).float()
        loss = F.cross_entropy(model(x), (x.sum((1, 2)) % 2).long())
        opt.zero_grad()
        loss.backward()
        opt.step()


def rows(run_dir, signal):
    path = run_dir / "signals" / f"{signal}.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def test_a_probe_written_against_the_protocol_plugs_in(tmp_path, declared):
    model = Tiny()
    with rnndoctor.watch(model, out=tmp_path / "r", summary=False, strict=True, probes=(*DEFAULT_PROBES, HiddenNorm)) as run:
        train(model, 8)
    got = rows(tmp_path / "r", "hidden_norms")
    # its schedule ("gates": the first 3 steps) gates its events; the conductor gives it the step
    assert [r["step"] for r in got] == [0, 1, 2] and all(r["module"] == "lstm" and r["norm"] > 0 for r in got)
    assert run.steps == 8 and rows(tmp_path / "r", "gates")  # the default probes still ran
    assert not any(h for m in model.modules() for h in (m._forward_hooks, m._forward_pre_hooks))


def test_an_undeclared_signal_is_refused(tmp_path):
    """Without its line in signals.py the probe's rows never reach the record; under the
    tests' contract mode (conftest: RNNDOCTOR_SIGNAL_CONTRACT=raise) the watch raises."""
    model = Tiny()
    with pytest.raises(signals.SignalContractError, match="hidden_norms"):
        with rnndoctor.watch(model, out=tmp_path / "r", summary=False, probes=(*DEFAULT_PROBES, HiddenNorm)):
            train(model, 3)
    assert not rows(tmp_path / "r", "hidden_norms")


def test_an_undeclared_signal_is_an_internal_error_in_production(tmp_path, monkeypatch):
    monkeypatch.setenv("RNNDOCTOR_SIGNAL_CONTRACT", "record")
    model = Tiny()
    with rnndoctor.watch(model, out=tmp_path / "r", summary=False, probes=(*DEFAULT_PROBES, HiddenNorm)) as run:
        train(model, 3)
    errors = run.record.meta["internal_errors"]
    assert any("signal contract" in e and "hidden_norms" in e for e in errors)
    assert run.record.has("steps") and not run.record.has("hidden_norms")


def test_probes_are_switched_off_by_name(tmp_path):
    model = Tiny()
    with rnndoctor.watch(model, out=tmp_path / "r", summary=False, strict=True, disable=("gates", "time_grad")) as run:
        train(model, 4)
    assert not rows(tmp_path / "r", "gates") and not rows(tmp_path / "r", "time_grad")
    assert rows(tmp_path / "r", "activations") and run.steps == 4  # the others still record
    with pytest.raises(ValueError, match="no probe named 'gate'"):
        rnndoctor.watch(model, disable=("gate",))


def test_a_failing_probe_costs_only_its_own_rows(tmp_path):
    class Broken(Probe):
        name = "broken"

        def end_step(self, step, row):
            raise RuntimeError("probe bug")

    model = Tiny()
    with rnndoctor.watch(model, out=tmp_path / "r", summary=False, probes=(*DEFAULT_PROBES, Broken)) as run:
        train(model, 3)
    assert run.steps == 3 and len(rows(tmp_path / "r", "steps")) == 3
    assert run.record.meta["internal_errors"][0] == "broken.end_step: RuntimeError: probe bug"
    with pytest.raises(RuntimeError, match="probe bug"):  # strict (the tests' mode) re-raises
        with rnndoctor.watch(model, out=tmp_path / "s", summary=False, strict=True, probes=(Broken,)):
            train(model, 1)


def test_rnn_call_replacements_chain_through_the_probes(tmp_path):
    seen = []

    class Doubler(Probe):
        name = "doubler"

        def rnn_call(self, name, module, args, kwargs):
            return (args[0] * 0 + 2, *args[1:]), kwargs

    class Watcher(Probe):
        name = "watcher"

        def rnn_call(self, name, module, args, kwargs):
            seen.append(float(args[0].mean()))

    model = Tiny()
    with rnndoctor.watch(model, out=tmp_path / "r", summary=False, strict=True, probes=(Doubler, Watcher)):
        model(torch.zeros(2, 3, 1))
    assert seen == [2.0]


def test_the_default_probes_keep_the_contract():
    names = [p.name for p in DEFAULT_PROBES]
    assert len(names) == len(set(names)) and all(names)
    for probe in DEFAULT_PROBES:
        assert probe.__doc__, probe
        assert probe.signals and all(s in signals.CATALOGUE for s in probe.signals), probe.name
        for schedule in ((probe.schedule,) if probe.schedule else ()) + probe.follows:
            assert schedule in SCHEDULES, (probe.name, schedule)
    every = [s for p in DEFAULT_PROBES for s in p.signals]
    assert sorted(every) == sorted(signals.CATALOGUE), "each signal is written by exactly one probe"
    assert [type(p) for p in select(None, ("loader",))] == [p for p in DEFAULT_PROBES if p.name != "loader"]


def test_the_cli_lists_probes_and_switches_them_off(tmp_path):
    import subprocess
    import sys

    def cli(*args):
        return subprocess.run([sys.executable, "-m", "rnndoctor", *args], capture_output=True, text=True, cwd=tmp_path, timeout=300)

    listed = cli("probes")
    assert listed.returncode == 0 and [line.split()[0] for line in listed.stdout.splitlines() if not line.startswith(" ")] == [p.name for p in DEFAULT_PROBES]
    script = tmp_path / "t.py"
    script.write_text(
        "import torch,torch.nn as nn,torch.nn.functional as F\n"
        "r=nn.LSTM(3,8,batch_first=True);f=nn.Linear(8,2);o=torch.optim.Adam([*r.parameters(),*f.parameters()])\n"
        "for i in range(5):\n"
        "    x=torch.randn(16,5,3);y=(x[:,0,0]>0).long()\n"
        "    l=F.cross_entropy(f(r(x)[0][:,-1]),y);o.zero_grad();l.backward();o.step()\n"
    )
    done = cli("diagnose", "t.py", "--out", "r", "--quiet", "--fail-on", "never", "--no-probe", "gates", "--no-probe", "activations")
    assert done.returncode == 0, done.stderr
    written = {p.stem for p in (tmp_path / "r" / "signals").glob("*.jsonl")}
    assert "steps" in written and "time_grad" in written and not {"gates", "cell", "activations"} & written
    bad = cli("diagnose", "t.py", "--no-probe", "gate")
    assert bad.returncode == 2 and "no probe named gate" in bad.stderr and "Traceback" not in bad.stderr
