"""Never change the user's program: the same results and random streams with and without
rnndoctor, whatever the script does with randomness (regression cells of what behaved well
when the reliability issue was filed)."""

from __future__ import annotations

import subprocess
import sys

import pytest
from harness import Cli

#: dropout, a shuffling DataLoader, numpy and random all draw; the script prints what it
#: learned and where every random stream stands at the end
RANDOM_EVERYWHERE = """\
import random, numpy as np, torch, torch.nn as nn, torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset
torch.manual_seed(0); random.seed(0); np.random.seed(0)
x = torch.randn(256, 6, 3); y = (x[:, 0, 0] > 0).long()
loader = DataLoader(TensorDataset(x, y), batch_size=32, shuffle=True)
class M(nn.Module):
    def __init__(s):
        super().__init__(); s.rnn = nn.LSTM(3, 16, num_layers=2, dropout=0.3, batch_first=True)
        s.drop = nn.Dropout(0.2); s.out = nn.Linear(16, 2)
    def forward(s, x): return s.out(s.drop(s.rnn(x)[0][:, -1]))
m = M(); opt = torch.optim.Adam(m.parameters(), lr=1e-2)
for epoch in range(4):
    for xb, yb in loader:
        loss = F.cross_entropy(m(xb), yb); opt.zero_grad(); loss.backward(); opt.step()
    with torch.no_grad():
        m.eval(); acc = (m(x).argmax(1) == y).float().mean().item(); m.train()
print("params", sum(float(p.double().sum()) for p in m.parameters()).hex())
print("loss", float(loss).hex(), "acc", acc)
print("streams", torch.rand(1).item(), random.random(), np.random.rand())
"""


@pytest.mark.parametrize("how", ["diagnose", "watch"])
def test_results_and_random_streams_are_bit_identical(cli: Cli, how: str) -> None:
    if how == "watch":
        body = RANDOM_EVERYWHERE.replace("for epoch in range(4):", "import rnndoctor\nwith rnndoctor.watch(m, out='run', summary=False):\n for epoch in range(4):")
        body = body.replace("\n    for xb", "\n     for xb").replace("\n        loss =", "\n         loss =").replace("\n    with torch", "\n     with torch").replace("\n        m.eval()", "\n         m.eval()")
    else:
        body = RANDOM_EVERYWHERE
    cli.script(RANDOM_EVERYWHERE, name="bare.py")
    cli.script(body)
    bare = subprocess.run([sys.executable, "bare.py"], cwd=cli.cwd, capture_output=True, text=True)
    assert bare.returncode == 0, bare.stderr
    if how == "watch":
        watched = subprocess.run([sys.executable, "t.py"], cwd=cli.cwd, capture_output=True, text=True)
        assert watched.returncode == 0, watched.stderr
        out = watched.stdout
    else:
        r = cli.run("diagnose", "t.py", "--out", "run", "--quiet")
        assert r.returncode == 0, r.output
        out = r.stdout
    assert out == bare.stdout
