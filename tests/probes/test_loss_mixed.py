"""A step whose loss calls differ (a main loss and an auxiliary one) is marked, so rules do not
compare their mean with one loss's reference; micro-batches of one loss are not."""

import torch
import torch.nn.functional as F
from torch import nn

import rnndoctor


class TwoHeads(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.rnn, self.cls, self.next = nn.GRU(3, 16, batch_first=True), nn.Linear(16, 2), nn.Linear(16, 3)

    def forward(self, x):
        out, _ = self.rnn(x)
        return self.cls(out[:, -1]), self.next(out)


def _steps(tmp_path, auxiliary: bool):
    torch.manual_seed(0)
    model = TwoHeads()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    with rnndoctor.watch(model, out=tmp_path / str(auxiliary), summary=False, strict=True) as run:
        for _ in range(8):
            opt.zero_grad()
            for _ in range(1 if auxiliary else 2):
                x = torch.randn(16, 6, 3)
                logits, per_step = model(x)
                loss = F.cross_entropy(logits, (x[:, :, 0].sum(1) > 0).long())
                if auxiliary:
                    tokens = x.argmax(-1)
                    loss = loss + 0.3 * F.nll_loss(F.log_softmax(per_step[:, :-1], -1).reshape(-1, 3), tokens[:, 1:].reshape(-1))
                loss.backward()
            opt.step()
    return rnndoctor.load_run(tmp_path / str(auxiliary)).train_steps()


def test_a_main_and_an_auxiliary_loss_are_marked_mixed(tmp_path):
    mixed = _steps(tmp_path, auxiliary=True)
    assert (mixed["loss_calls"] == 2).all() and (mixed["loss_mixed"] == 1).all()
    accumulated = _steps(tmp_path, auxiliary=False)
    # once the optimizer has been seen, a step is its two micro-batches
    assert (accumulated["loss_calls"].tail(5) == 2).all() and "loss_mixed" not in accumulated
