"""Class counts are written for the classes a step saw, not the whole vocabulary."""

import json

import torch
import torch.nn.functional as F
from torch import nn

import rnndoctor
from rnndoctor.rules._common import label_stats
from rnndoctor.run import load_run


def test_a_large_vocabulary_writes_only_the_classes_seen(tmp_path):
    torch.manual_seed(0)
    emb, lstm, out = nn.Embedding(5000, 8), nn.LSTM(8, 8, batch_first=True), nn.Linear(8, 5000)
    with torch.no_grad():
        out.bias[4321] = 50.0  # every prediction is token 4321
    model = nn.ModuleDict({"emb": emb, "lstm": lstm, "out": out})
    opt = torch.optim.SGD(model.parameters(), lr=1e-6)
    with rnndoctor.watch(model, out=tmp_path / "r", summary=False, strict=True):
        for _ in range(5):
            tokens = torch.randint(1, 4, (4, 6))  # labels only ever 1, 2, 3
            h, _ = lstm(emb(tokens[:, :-1]))
            loss = F.cross_entropy(out(h).reshape(-1, 5000), tokens[:, 1:].reshape(-1))
            opt.zero_grad()
            loss.backward()
            opt.step()
    rows = [json.loads(line) for line in (tmp_path / "r" / "signals" / "predictions.jsonl").read_text().splitlines()]
    assert rows and all(sorted(r["cls"]) == sorted(set(r["cls"])) and len(r["cls"]) <= 4 for r in rows)
    assert all(4321 in r["cls"] for r in rows)
    stats = label_stats(load_run(tmp_path / "r"))
    assert set(stats.classes.tolist()) == {1, 2, 3, 4321}
    assert stats.majority[0] in {1, 2, 3} and stats.class_at(int(stats.pred_counts.argmax())) == 4321
