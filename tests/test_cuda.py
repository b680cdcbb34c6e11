"""The same probes on CUDA: replay against cuDNN, a watched training loop, NaN localisation,
no host sync on the training thread, deterministic-algorithms mode.

Skipped where there is no GPU (CI); run on a GPU machine with ``python -m pytest tests/test_cuda.py``.
"""

from __future__ import annotations

import os

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

import rnndoctor
from rnndoctor.probes.gates import replay
from rnndoctor.schedule import DEFAULT_STEP_STATS
from rnndoctor.watch import Watch
from readbacks import count_read_backs

# cuBLAS needs this before its first handle for deterministic mode (the last test)
os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
#: RNNDOCTOR_TEST_DEVICE=cpu runs the same tests on the CPU (to check the tests themselves)
DEV = os.environ.get("RNNDOCTOR_TEST_DEVICE", "cuda")
pytestmark = pytest.mark.skipif(DEV == "cuda" and not torch.cuda.is_available(), reason="needs a CUDA device")


@pytest.fixture(autouse=True)
def _exact_cudnn():
    """cuDNN may use TF32 for RNNs by default; the replay is compared without it."""
    old = torch.backends.cudnn.allow_tf32
    torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cudnn.allow_tf32 = old


@pytest.mark.parametrize("dtype,atol", [(torch.float64, 1e-9), (torch.float32, 2e-5)])
@pytest.mark.parametrize("kind", ["LSTM", "GRU", "RNN"])
@pytest.mark.parametrize("packed", [False, True])
def test_replay_matches_cudnn(kind, packed, dtype, atol):
    torch.manual_seed(0)
    kw = {"num_layers": 2, "bidirectional": True, "batch_first": True}
    if kind == "LSTM":
        kw["proj_size"] = 3
    m = getattr(nn, kind)(4, 6, **kw).to(DEV, dtype)
    lengths = torch.tensor([9, 4, 7, 1])
    x = torch.randn(4, 9, 4, device=DEV, dtype=dtype)
    for b, n in enumerate(lengths):
        x[b, n:] = 0
    inp = pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False) if packed else x
    with torch.no_grad():
        out, hn = m(inp)
    rep = replay(m, inp, None)
    if packed:
        out, _ = pad_packed_sequence(out, batch_first=True)
    torch.testing.assert_close(rep.output, out, atol=atol, rtol=0)
    torch.testing.assert_close(rep.h_n, hn[0] if kind == "LSTM" else hn, atol=atol, rtol=0)
    assert rep.output.device.type == torch.device(DEV).type


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lstm = nn.LSTM(1, 32, 2, batch_first=True)
        self.out = nn.Linear(32, 2)

    def forward(self, x):
        return self.out(self.lstm(x)[0][:, -1])


def parity_batches(n: int, b: int = 64, t: int = 7):
    g = torch.Generator().manual_seed(0)
    out = []
    for _ in range(n):
        x = torch.randint(0, 2, (b, t, 1), generator=g).float()
        out.append((x.to(DEV), (x.sum((1, 2)) % 2).long().to(DEV)))
    return out


def train(model, batches, opt):
    for x, y in batches:
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()


def test_watched_cuda_run_records_every_signal(tmp_path):
    torch.manual_seed(0)
    model = Net().to(DEV)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    with Watch(model, out=tmp_path / "r", summary=False, strict=True) as run:
        train(model, parity_batches(120), opt)
    rec = rnndoctor.load_run(tmp_path / "r")
    assert run.steps == 120 and "internal_errors" not in rec.meta
    steps = rec.train_steps()
    assert len(steps) == 120 and steps["loss"].notna().all()
    # gradient norms and class counts on their schedule: every step first, then sampled
    assert (steps["grad_norm"].notna() == steps["step"].map(DEFAULT_STEP_STATS)).all()
    assert (steps["correct"].notna() == steps["step"].map(DEFAULT_STEP_STATS)).all()
    assert (steps["total"].dropna() == 64).all()
    pred = rec["predictions"]
    assert pred.groupby("step")["n_label"].sum().eq(64).all()
    gates = rec["gates"]
    assert len(gates) and gates["replay_err"].max() < 1e-4
    assert len(rec["time_grad"]) and len(rec["samples"]) and len(rec["updates"])
    assert rec.meta["model"]["device"].startswith(torch.device(DEV).type)


def test_nan_source_is_localised_on_cuda(tmp_path):
    class Blowup(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.net = Net()
            self.scale = nn.Linear(2, 2)

        def forward(self, x):
            out = self.scale(self.net(x))
            return out * float("inf") if self.calls > 2 else out  # from the third step on

    torch.manual_seed(0)
    model = Blowup().to(DEV)
    model.calls = 0
    opt = torch.optim.SGD(model.parameters(), lr=1e-2)
    with Watch(model, out=tmp_path / "r", summary=False, strict=True) as run:
        for x, y in parity_batches(8):
            model.calls += 1
            loss = F.cross_entropy(model(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
    f = run.assert_found("non-finite")
    assert f.where.get("module") == "Blowup" and f.where.get("step") == 2, f.where


def test_training_thread_never_reads_back_on_cuda(tmp_path, monkeypatch):
    torch.manual_seed(0)
    model = Net().to(DEV)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    batches = parity_batches(60)
    with Watch(model, out=tmp_path / "r", summary=False, strict=True, writer="thread") as run:
        seen = count_read_backs(monkeypatch)
        train(model, batches, opt)
        run._recorder.flush(wait=True)
        monkeypatch.undo()
    assert seen.on_main == [] and seen.elsewhere > 0


def test_deterministic_algorithms_mode(tmp_path):
    """Users who turn on deterministic algorithms must not lose probes to a raising op."""
    torch.manual_seed(0)
    model = Net().to(DEV)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    torch.use_deterministic_algorithms(True, warn_only=False)
    try:
        with Watch(model, out=tmp_path / "r", summary=False, strict=True) as run:
            train(model, parity_batches(30), opt)
    finally:
        torch.use_deterministic_algorithms(False)
    assert run.steps == 30


def test_treatments_act_on_the_device_and_keep_its_random_stream(tmp_path):
    """A fix trial's changes on a CUDA model: orthogonal init draws from a forked generator of
    the model's own device (the script's CUDA random stream is unchanged), a clipped gradient
    stays on the device, and the learning rate is scaled."""
    from rnndoctor.probes import DEFAULT_PROBES
    from rnndoctor.treatments import ClipGradients, LearningRateDown, OrthogonalInit

    torch.manual_seed(0)
    model = nn.LSTM(3, 8, batch_first=True).to(DEV)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    treatments = [OrthogonalInit(), ClipGradients(), LearningRateDown()]
    with Watch(model, out=tmp_path / "r", summary=False, strict=True, probes=[*treatments, *DEFAULT_PROBES]):
        for _ in range(2):
            out, _ = model(torch.randn(4, 5, 3, device=DEV) * 100)
            loss = out.pow(2).mean() * 1000
            opt.zero_grad()
            loss.backward()
            opt.step()
        after = torch.rand(3, device=DEV)
    torch.manual_seed(0)
    nn.LSTM(3, 8, batch_first=True).to(DEV)
    for _ in range(2):
        torch.randn(4, 5, 3, device=DEV)
    assert torch.equal(after, torch.rand(3, device=DEV))
    assert [t.applied for t in treatments] == [1, 2, 1] and opt.param_groups[0]["lr"] == pytest.approx(1e-3)
    w = model.weight_hh_l0.detach().chunk(4, 0)[0]
    assert w.device.type == torch.device(DEV).type
