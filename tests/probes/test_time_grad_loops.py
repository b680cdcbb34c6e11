"""‖∂L/∂x_t‖ for models without a fused RNN: the model's own input is hooked, and a forward
that reads host values from it behaves exactly as without rnndoctor."""

import json
import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import rnndoctor


class ElmanLoop(nn.Module):
    """A hand-written Elman RNN over raw parameters (no submodule is a cell), answer read
    from the last state; ``host_reads`` makes the forward read host values off its input."""

    def __init__(self, f: int = 3, h: int = 16, batch_first: bool = True, host_reads: bool = False) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.randn(f, h) * 0.3)
        self.u = nn.Parameter(torch.randn(h, h) * 0.1)
        self.out = nn.Linear(h, 2)
        self.batch_first, self.host_reads = batch_first, host_reads

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.batch_first:
            x = x.transpose(0, 1)
        if self.host_reads:  # what a user's forward may do with its input
            scale = float(x.abs().max()) + x[:, 0, 0].sum().item() * 0 + np.asarray(x[0, 0]).sum() * 0
            lengths = (x.abs().sum(-1) > 0).sum(1).numpy()
            assert scale > 0 and lengths.shape == (x.shape[0],)
        h = torch.zeros(x.shape[0], self.u.shape[0])
        for t in range(x.shape[1]):
            h = torch.tanh(x[:, t] @ self.w + h @ self.u)
        return self.out(h)


def _train(tmp_path, model, *, batch=16, t=24, steps=12, time_major=False):
    torch.manual_seed(0)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    losses = []
    with rnndoctor.watch(model, out=tmp_path / "r", summary=False, strict=True):
        for _ in range(steps):
            x = torch.randn(batch, t, 3)
            y = (x[:, -1, 0] > 0).long()
            logits = model(x.transpose(0, 1) if time_major else x)
            loss = F.cross_entropy(logits, y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(loss.item())
    path = tmp_path / "r" / "signals" / "time_grad.jsonl"
    rows = [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []
    return rows, losses


def _profile(row):
    from rnndoctor.run import unpack
    return np.asarray(unpack(row["grad_norm"]) if isinstance(row["grad_norm"], dict) else row["grad_norm"], dtype=float)


@pytest.mark.parametrize("time_major", [False, True])
def test_a_hand_written_loop_gets_a_gradient_profile_over_its_time_steps(tmp_path, time_major):
    """Batch 16, 24 steps, either layout: the profile has 24 entries (the batch dimension is
    the one as long as the targets), and the gradient fades back from the last step."""
    rows, _ = _train(tmp_path, ElmanLoop(batch_first=not time_major), time_major=time_major)
    assert rows and {r["module"] for r in rows} == {"ElmanLoop"}
    assert all(r["backward_step"] == r["step"] for r in rows)
    p = _profile(rows[-1])
    assert p.shape == (24,) and p[-1] > 10 * p[0]


def test_host_values_read_from_the_input_work_as_without_rnndoctor(tmp_path):
    """float(), .item(), np.asarray() and .numpy() on what the forward computes from its
    input: no error, no warning, and the same losses as a bare run."""
    torch.manual_seed(1)
    bare_model = ElmanLoop(host_reads=True)
    torch.manual_seed(1)
    watched_model = ElmanLoop(host_reads=True)
    torch.manual_seed(0)
    opt = torch.optim.SGD(bare_model.parameters(), lr=0.1)
    bare = []
    for _ in range(12):
        x = torch.randn(16, 24, 3)
        loss = F.cross_entropy(bare_model(x), (x[:, -1, 0] > 0).long())
        opt.zero_grad()
        loss.backward()
        opt.step()
        bare.append(loss.item())
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        rows, watched = _train(tmp_path, watched_model)
    assert rows and watched == bare
    assert torch._C._len_torch_function_stack() == 0


def test_a_fused_rnn_model_keeps_its_input_as_given(tmp_path):
    """With an nn.LSTM inside, the profile is taken at the LSTM's input, as before: the
    model's own input is not replaced."""
    seen = []

    class Fused(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.lstm, self.out = nn.LSTM(3, 8, batch_first=True), nn.Linear(8, 2)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            seen.append(x.requires_grad)
            return self.out(self.lstm(x)[0][:, -1])

    rows, _ = _train(tmp_path, Fused(), steps=4)
    assert not any(seen) and rows and {r["module"] for r in rows} == {"lstm"}


class TokenCellLoop(nn.Module):
    """Token ids -> Embedding -> nn.GRUCell over time: the ids carry no gradient."""

    def __init__(self, vocab: int = 12, e: int = 8, h: int = 16, batch_first: bool = True) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab, e)
        self.cell = nn.GRUCell(e, h)
        self.out = nn.Linear(h, 2)
        self.batch_first = batch_first

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        e = self.embed(ids if self.batch_first else ids.t())  # [B, T, E]
        h = torch.zeros(e.shape[0], self.cell.hidden_size)
        for t in range(e.shape[1]):
            h = self.cell(e[:, t], h)
        return self.out(h)


@pytest.mark.parametrize("time_major", [False, True])
def test_token_ids_get_the_profile_of_their_embedded_vectors(tmp_path, time_major):
    torch.manual_seed(0)
    model = TokenCellLoop(batch_first=not time_major)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with rnndoctor.watch(model, out=tmp_path / "r", summary=False, strict=True):
        for _ in range(4):
            ids = torch.randint(0, 12, (16, 20))
            y = (ids[:, -1] > 5).long()
            loss = F.cross_entropy(model(ids.t() if time_major else ids), y)
            opt.zero_grad(); loss.backward(); opt.step()
    rows = [json.loads(line) for line in (tmp_path / "r" / "signals" / "time_grad.jsonl").read_text().splitlines()]
    assert rows and {r["module"] for r in rows} == {"embed"}
    p = _profile(rows[-1])
    assert p.shape == (20,) and p[-1] > 10 * p[0]
    assert not model.embed._forward_hooks  # nothing left on the user's module


class PaddedElman(nn.Module):
    """An Elman loop over post-padded sequences; ``masked`` keeps each sequence's state
    once it has ended (``torch.where``), else the answer is read after the padding."""

    def __init__(self, masked: bool) -> None:
        super().__init__()
        self.w, self.u = nn.Parameter(torch.randn(3, 16) * 0.3), nn.Parameter(torch.randn(16, 16) * 0.1)
        self.out, self.masked = nn.Linear(16, 2), masked

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        lengths = (x.abs().sum(-1) > 0).sum(1)
        h = x.new_zeros(x.shape[0], 16)
        for t in range(x.shape[1]):
            new = torch.tanh(x[:, t] @ self.w + h @ self.u)
            h = torch.where((t < lengths).unsqueeze(1), new, h) if self.masked else new
        return self.out(h)


@pytest.mark.parametrize("masked", [False, True])
def test_padding_read_after_a_hand_written_loop_is_found(tmp_path, masked):
    """No fused RNN: the model's own input gives the lengths (read the way round the loop's
    gradient profile says), and the profile how much gradient lands on the padding."""
    torch.manual_seed(0)
    model = PaddedElman(masked)
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    with rnndoctor.watch(model, out=tmp_path / "r", summary=False, strict=True) as w:
        for _ in range(30):
            lengths = torch.randint(3, 12, (32,))
            x = torch.randn(32, 24, 3) * (torch.arange(24) < lengths[:, None]).unsqueeze(-1)
            y = (x[torch.arange(32), lengths - 1, 0] > 0).long()
            loss = F.cross_entropy(model(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
    if masked:
        w.assert_not_found("padding-not-masked")
    else:
        found = w.assert_found("padding-not-masked")
        assert found.where["module"] == "PaddedElman" and found.evidence["padded_length"] == 24
