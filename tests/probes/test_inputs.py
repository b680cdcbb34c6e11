"""The inputs probe: statistics of the model's input, labelled by the pass they came from."""

import json

import torch
import torch.nn.functional as F
from torch import nn

import rnndoctor


def test_input_rows_say_whether_the_pass_trained_or_evaluated(tmp_path):
    model = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with rnndoctor.watch(model, out=tmp_path / "r", summary=False, strict=True):
        for _ in range(3):
            x = torch.randn(8, 3) * 20
            loss = F.cross_entropy(model(x), (x[:, 0] > 0).long())
            opt.zero_grad()
            loss.backward()
            opt.step()
            with torch.no_grad():
                model(x)
    rows = [json.loads(line) for line in (tmp_path / "r" / "signals" / "inputs.jsonl").read_text().splitlines()]
    assert [r["mode"] for r in rows] == ["train", "eval"] * 3
    assert all(r["abs_max"] > 10 and 0 < r["frac_large"] < 1 for r in rows)
