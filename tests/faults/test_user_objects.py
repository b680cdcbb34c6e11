"""Nothing of ours travels with the user's objects: ``torch.save(model)``, pickling and
``copy.deepcopy`` work inside ``watch()`` and under ``diagnose``, the bytes carry nothing of
rnndoctor, and they load where rnndoctor cannot be imported (real-programs issue)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from harness import Cli, steps_recorded

#: saves the model, the optimizer and their state dicts, and deep-copies both, mid-training;
#: the model is a user class (pickled by reference to __main__) around an LSTM and a GRUCell
SAVING = """\
import copy, io, pickle, sys, torch, torch.nn as nn, torch.nn.functional as F
class Net(nn.Module):
    def __init__(s):
        super().__init__(); s.r = nn.LSTM(3, 8, batch_first=True); s.c = nn.GRUCell(8, 8); s.f = nn.Linear(8, 2)
    def forward(s, x):
        h = s.r(x)[0]; g = torch.zeros(x.shape[0], 8)
        for t in range(h.shape[1]):
            g = s.c(h[:, t], g)
        return s.f(g)
torch.manual_seed(0)
m = Net(); o = torch.optim.Adam(m.parameters())
def train():
    for i in range(30):
        x = torch.randn(16, 5, 3); y = (x[:, 0, 0] > 0).long()
        l = F.cross_entropy(m(x), y); o.zero_grad(); l.backward(); o.step()
        if i == 20:
            for obj in (m, o, m.state_dict(), o.state_dict()):
                torch.save(obj, io.BytesIO())
            blob = pickle.dumps(m)
            twin = copy.deepcopy(m); copy.deepcopy(o)
            hooks = sum(len(getattr(mod, d)) for mod in twin.modules() for d in ("_forward_hooks", "_forward_pre_hooks"))
            open("saved.pkl", "wb").write(blob)
            print("saved", b"rnndoctor" in blob, hooks, flush=True)
            twin(torch.randn(4, 5, 3))  # a copy's calls are not the watched model's
if sys.argv[1:] == ["watch"]:
    import rnndoctor
    with rnndoctor.watch(m, out="run", summary=False):
        train()
else:
    train()
"""

LOAD_WITHOUT_US = """\
import sys, pickle
sys.modules["rnndoctor"] = None  # any reference to rnndoctor in the pickle fails to import
sys.path.insert(0, ".")
import torch
from t import Net
net = pickle.load(open("saved.pkl", "rb"))
print("loaded", type(net).__name__, sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in net.modules()))
"""


def _check_loads(cli: Cli) -> None:
    (cli.cwd / "load.py").write_text(LOAD_WITHOUT_US.replace("from t import Net", "import __main__, t; __main__.Net = t.Net"))
    proc = subprocess.run([sys.executable, "load.py"], cwd=cli.cwd, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["loaded", "Net", "0"]


@pytest.mark.parametrize("how", ["diagnose", "watch"])
def test_saving_and_copying_the_model_works_and_carries_nothing_of_ours(cli: Cli, how: str) -> None:
    cli.script(SAVING.replace('if sys.argv[1:] == ["watch"]', 'if __name__ != "__main__": pass\nelif sys.argv[1:] == ["watch"]'))
    if how == "diagnose":
        r = cli.run("diagnose", "t.py", "--out", "run", "--quiet")
    else:
        proc = subprocess.run([sys.executable, "t.py", "watch"], cwd=cli.cwd, capture_output=True, text=True)
        r = type("R", (), {"returncode": proc.returncode, "stdout": proc.stdout, "output": proc.stdout + proc.stderr})
    assert r.returncode == 0, r.output
    assert "saved False 0" in r.stdout, r.output
    assert steps_recorded(cli.cwd / "run") == 30
    assert cli.meta("run")["status"] == "completed"
    _check_loads(cli)


def test_module_pickling_is_torchs_own_again_after_the_watch(tmp_path: Path) -> None:
    import torch.nn as nn

    import rnndoctor

    m = nn.LSTM(2, 3)
    before = nn.Module.__dict__.get("__reduce_ex__")
    with rnndoctor.watch(m, out=tmp_path / "run", summary=False):
        assert "__reduce_ex__" in nn.Module.__dict__
    assert nn.Module.__dict__.get("__reduce_ex__") is before
