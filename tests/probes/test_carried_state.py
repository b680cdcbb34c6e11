"""The carried-state probe: a stateful language model that forgets ``.detach()`` crashes in
its second backward ("Trying to backward through the graph a second time"); the diagnosis
names the cause. With the detach (and with state made afresh each batch) nothing is said."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import rnndoctor


class LM(nn.Module):
    def __init__(self, vocab: int = 40) -> None:
        super().__init__()
        self.emb, self.rnn, self.out = nn.Embedding(vocab, 16), nn.LSTM(16, 32), nn.Linear(32, vocab)

    def forward(self, x: torch.Tensor, hidden: tuple[torch.Tensor, torch.Tensor]):
        y, hidden = self.rnn(self.emb(x), hidden)
        return self.out(y), hidden


def _train(tmp_path, detach: bool, steps: int = 30) -> rnndoctor.Watch:
    torch.manual_seed(0)
    corpus = torch.randint(40, (steps * 20 + 1, 8))
    model = LM()
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    hidden = (torch.zeros(1, 8, 32), torch.zeros(1, 8, 32))
    w = rnndoctor.watch(model, out=tmp_path, summary=False)
    try:
        with w:
            for i in range(0, steps * 20, 20):
                if detach:
                    hidden = tuple(h.detach() for h in hidden)
                out, hidden = model(corpus[i:i + 20], hidden)
                loss = F.cross_entropy(out.reshape(-1, 40), corpus[i + 1:i + 21].reshape(-1))
                opt.zero_grad(); loss.backward(); opt.step()
    except RuntimeError as exc:
        assert "second time" in str(exc)
    return w


def test_an_undetached_state_that_crashes_the_backward_is_named_as_the_cause(tmp_path):
    w = _train(tmp_path, detach=False)
    (f,) = [f for f in w.diagnosis.findings if f.id == "undetached-state"]
    assert f.evidence["crashed_backward_twice"] and f.evidence["from_step"] == 0
    assert "backward through the graph a second time" in f.explanation


@pytest.mark.parametrize("detach", [True])
def test_a_detached_state_is_quiet(tmp_path, detach):
    w = _train(tmp_path, detach=detach)
    assert "undetached-state" not in {f.id for f in w.diagnosis.findings}
    assert w.steps == 30
