"""Statistics keep the user's precision: a float64 run whose loss and inputs are finite but
beyond float32's range is not reported non-finite, and ``torch.set_default_dtype(float64)``
breaks none of our tensors (real-programs issue)."""

from __future__ import annotations

import json

from harness import Cli

#: float64 everywhere (the default dtype too); inputs ~1e19 and a loss ~1e39: finite in
#: float64, inf in float32
HUGE_F64 = """\
import torch, torch.nn as nn
torch.manual_seed(0)
torch.set_default_dtype(torch.float64)
r = nn.LSTM(3, 8, batch_first=True); f = nn.Linear(8, 1)
o = torch.optim.SGD([*r.parameters(), *f.parameters()], lr=1e-3)
for i in range(30):
    x = torch.randn(16, 5, 3) * 1e19
    l = nn.functional.mse_loss(f(r(x)[0][:, -1]), x[:, 0, :1] * 4.0); o.zero_grad(); l.backward(); o.step()
"""


def test_a_float64_loss_beyond_float32_range_stays_finite(cli: Cli) -> None:
    cli.script(HUGE_F64)
    r = cli.run("diagnose", "t.py", "--out", "run", "--fail-on", "never")
    assert r.returncode == 0, r.output
    data = cli.findings("run")
    ids = {f["id"] for f in data["findings"]}
    assert "non-finite" not in ids
    assert not any("rnndoctor itself failed" in n for n in data["notes"]), data["notes"]
    steps = [json.loads(line) for line in (cli.cwd / "run" / "signals" / "steps.jsonl").read_text().splitlines()]
    losses = [s["loss"] for s in steps if s.get("mode") == "train"]
    assert len(losses) == 30 and all(1e30 < v < 1e45 for v in losses), losses[:3]
    (unnormalized,) = [f for f in data["findings"] if f["id"] == "unnormalized-inputs"]
    assert 1e18 < unnormalized["evidence"]["abs_max"] < 1e21
