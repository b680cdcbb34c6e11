"""Hand-written losses: the outputs and targets behind a back-propagated scalar are read from
its graph, so a loop that never calls a ``torch.nn.functional`` loss still gets a loss, an
accuracy and class counts, and the rules that judge them."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import rnndoctor
from rnndoctor.probes import hand_loss

B, K = 12, 3


def _logits(k: int = K) -> torch.Tensor:
    return torch.randn(B, k, requires_grad=True)


def _labels() -> torch.Tensor:
    return torch.randint(0, K, (B,))


def test_nll_by_gather_gives_labels_and_the_standard_loss():
    z, y = _logits(), _labels()
    root = -F.log_softmax(z, 1).gather(1, y.unsqueeze(1)).mean() / 4  # accumulation scale
    call = hand_loss.read(root)
    assert call.kind == "cross_entropy"
    assert torch.equal(call.target, y)
    assert torch.allclose(call.loss, F.cross_entropy(z, y))  # the loss, not loss / 4


def test_sequence_logits_put_the_class_dim_second():
    z = torch.randn(B, 5, K, requires_grad=True)
    y = torch.randint(0, K, (B, 5))
    root = -torch.log_softmax(z, -1).gather(-1, y.unsqueeze(-1)).mean()
    call = hand_loss.read(root)
    assert call.kind == "cross_entropy" and call.input.shape == (B, K, 5) and torch.equal(call.target, y)
    assert torch.allclose(call.loss, F.cross_entropy(z.transpose(1, 2), y))


def test_one_hot_times_log_probs():
    z, y = _logits(), _labels()
    root = -(F.one_hot(y, K).float() * torch.log_softmax(z, -1)).sum(-1).mean()
    call = hand_loss.read(root)
    assert call.kind == "cross_entropy" and torch.equal(call.target.argmax(1), y)
    assert torch.allclose(call.loss, F.cross_entropy(z, y))


def test_log_of_picked_softmax_entries():
    z, y = _logits(), _labels()
    for root in (-torch.log(torch.softmax(z, 1)[torch.arange(B), y]).mean(),
                 -torch.log(torch.softmax(z, 1)).gather(1, y[:, None]).mean()):
        call = hand_loss.read(root)
        assert call.kind == "cross_entropy" and torch.equal(call.target, y)
        assert torch.allclose(call.loss, F.cross_entropy(z, y), atol=1e-5)


def test_logsumexp_minus_the_picked_logit():
    z, y = _logits(), _labels()
    for root in ((torch.logsumexp(z, dim=1) - z.gather(1, y[:, None]).squeeze(1)).mean(),
                 (torch.logsumexp(z, 1) - z[torch.arange(B), y]).mean()):
        call = hand_loss.read(root)
        assert call.kind == "cross_entropy" and torch.equal(call.target, y)
        assert torch.allclose(call.loss, F.cross_entropy(z, y), atol=1e-5)
    other = torch.randn(B, K, requires_grad=True)  # the picked values come from another tensor
    assert hand_loss.read((torch.logsumexp(z, 1) - other.gather(1, y[:, None]).squeeze(1)).mean()).kind == "logged"


def test_binary_cross_entropy_written_out():
    z = torch.randn(B, requires_grad=True)
    t = (torch.rand(B) > 0.5).float()
    p = torch.sigmoid(z)
    call = hand_loss.read(-(t * torch.log(p + 1e-7) + (1 - t) * torch.log(1 - p + 1e-7)).mean())
    assert call.kind == "bce" and torch.equal(call.target, t)
    assert torch.allclose(call.loss, F.binary_cross_entropy_with_logits(z, t), atol=1e-4)
    call = hand_loss.read(-(t * F.logsigmoid(z) + (1 - t) * F.logsigmoid(-z)).mean())
    assert call.kind == "bce_logits" and torch.equal(call.target, t)


def test_a_non_finite_hand_loss_stays_non_finite():
    """A sigmoid that rounds to 1.0 makes the user's ``(1 - y) * log(1 - p)`` NaN: the record
    says NaN too, and NaN outputs are still read as a binary loss."""
    z = torch.tensor([40.0, -1.0, 2.0, float("nan")], requires_grad=True)
    t = torch.tensor([1.0, 0.0, 1.0, 0.0])
    p = torch.sigmoid(z)
    call = hand_loss.read(-(t * torch.log(p) + (1 - t) * torch.log(1 - p)).mean())
    assert call.kind == "bce" and torch.isnan(call.loss)
    z = torch.tensor([0.3, -1.0], requires_grad=True)
    p = torch.sigmoid(z)
    t = torch.tensor([1.0, 0.0])
    call = hand_loss.read(-(t * torch.log(p) + (1 - t) * torch.log(1 - p)).mean())
    assert torch.isfinite(call.loss) and torch.allclose(call.loss, F.binary_cross_entropy(p, t))


def test_squared_error_reads_the_targets_back_from_the_difference():
    x = torch.randn(B, 4)
    lin = nn.Linear(4, 1)
    y = torch.randint(0, 2, (B,)).float()
    out = lin(x)  # [B, 1]; the loss reads it through a squeeze
    call = hand_loss.read(((out.squeeze(-1) - y) ** 2).mean(), model_output=out)
    assert call.kind == "mse" and torch.equal(call.target, y)  # exact labels, rounding undone
    d = y - out.squeeze(-1)
    call = hand_loss.read((d * d).mean(), model_output=out)
    assert call.kind == "mse" and torch.equal(call.target, y)
    # without the model's output (or through a non-order-keeping view) only the value is known
    assert hand_loss.read(((out.squeeze(-1) - y) ** 2).mean()).kind == "logged"
    assert hand_loss.read(((out.t()[0] - y) ** 2).mean(), model_output=out).kind == "logged"
    # a sigmoid output is saved by its own node
    call = hand_loss.read(((torch.sigmoid(out.squeeze(-1)) - y) ** 2).mean())
    assert call.kind == "mse" and torch.equal(call.target, y)


def test_anything_else_is_the_value_alone():
    z = _logits()
    call = hand_loss.read(z.abs().mean() * 3)
    assert call.kind == "logged" and call.loss.item() == (z.abs().mean() * 3).item()
    assert call.loss.grad_fn is None


class Classifier(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.rnn = nn.GRU(2, 16, batch_first=True)
        self.head = nn.Linear(16, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.rnn(x)[0][:, -1])


def _run(tmp_path, *, learnable: bool, loss_fn: str, steps: int = 120, accumulate: int = 1):
    """Sign of the sequence's sum (learnable) or a coin flip per sample (not), trained with a
    hand-written loss."""
    torch.manual_seed(0)
    model = Classifier()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    with rnndoctor.watch(model, out=tmp_path / f"{loss_fn}{learnable}", summary=False, strict=True) as run:
        for _ in range(steps):
            opt.zero_grad()
            for _ in range(accumulate):
                x = torch.randn(32, 8, 2)
                y = (x[..., 0].sum(1) > 0).long() if learnable else torch.randint(0, 2, (32,))
                z = model(x)
                if loss_fn == "gather":
                    loss = -torch.log_softmax(z, 1).gather(1, y[:, None]).mean()
                else:
                    loss = F.cross_entropy(z, y)
                (loss / accumulate).backward()
            opt.step()
    return run, rnndoctor.load_run(tmp_path / f"{loss_fn}{learnable}").train_steps()


def test_a_hand_written_loss_is_judged_like_a_functional_one(tmp_path):
    stuck, rows = _run(tmp_path, learnable=False, loss_fn="gather")
    counted = rows["n_classes"].dropna()  # class counts are read on their schedule
    assert set(rows["loss_kind"]) == {"cross_entropy"} and len(counted) > 10 and (counted == 2).all()
    assert "stuck-at-chance" in stuck.diagnosis.ids()
    healthy, rows = _run(tmp_path, learnable=True, loss_fn="gather")
    assert rows["loss"].tail(20).mean() < 0.3
    assert "stuck-at-chance" not in healthy.diagnosis.ids()


def test_functional_losses_are_not_counted_twice(tmp_path):
    _, functional = _run(tmp_path, learnable=True, loss_fn="functional", steps=6, accumulate=3)
    _, hand = _run(tmp_path, learnable=True, loss_fn="gather", steps=6, accumulate=3)
    assert set(functional["loss_kind"]) == set(hand["loss_kind"]) == {"cross_entropy"}
    # once the optimizer has been seen, a step is three micro-batches, each counted once
    assert (functional["total"].tail(5) == 3 * 32).all() and (hand["total"].tail(5) == 3 * 32).all()
    assert functional["total"].tolist() == hand["total"].tolist()
    assert torch.allclose(torch.tensor(functional["loss"].values), torch.tensor(hand["loss"].values), atol=1e-5)


def test_backward_is_restored_after_the_watch(tmp_path):
    original = torch.autograd.backward
    _run(tmp_path, learnable=True, loss_fn="gather", steps=2)
    assert torch.autograd.backward is original


def test_reading_a_hand_written_loss_records_no_evaluation(tmp_path):
    """hand_loss recomputes the loss with functional losses under no_grad: that is ours, not
    the user's evaluation pass, and must not reach the record."""
    _, rows = _run(tmp_path, learnable=True, loss_fn="gather", steps=30)
    everything = rnndoctor.load_run(tmp_path / "gatherTrue")["steps"]
    assert len(rows) == 30
    assert set(everything["mode"]) == {"train"}


@pytest.mark.parametrize("deferred", [False, True])
def test_a_sigmoid_fed_to_bce_with_logits_is_read_at_one_half(tmp_path, deferred, monkeypatch):
    """A sigmoid before BCEWithLogitsLoss: the model means its outputs as probabilities and
    decides at 0.5. Read as logits (> 0) every prediction would be class 1, a collapse of
    our reading; the mismatch itself is loss-output-mismatch's. Whether the loss input was
    read live (its autograd op) or from a copy (its values), the reading is the same."""
    from rnndoctor.probes import outputs

    monkeypatch.setattr(outputs, "DEFER_MAX_NUMEL", 1 << 16 if deferred else 0)
    torch.manual_seed(0)
    model = Classifier()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    with rnndoctor.watch(model, out=tmp_path / "r", summary=False, strict=True) as run:
        for _ in range(150):
            x = torch.randn(32, 8, 2)
            y = (x[..., 0].sum(1) > 0).float()
            loss = F.binary_cross_entropy_with_logits(torch.sigmoid(model(x)[:, 1]), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
    rows = rnndoctor.load_run(tmp_path / "r").train_steps().dropna(subset=["correct"])
    accuracy = rows["correct"].tail(10).sum() / rows["total"].tail(10).sum()
    assert accuracy > 0.85
    ids = run.diagnosis.ids()
    assert "loss-output-mismatch" in ids and "prediction-collapse" not in ids
