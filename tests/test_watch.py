"""watch(): capture, step counting, detaching, crash safety, no host sync in the hot path."""

import json

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import rnndoctor
from rnndoctor.recorder import Recorder
from rnndoctor.watch import Watch
from readbacks import count_read_backs


class Tiny(nn.Module):
    def __init__(self, hidden: int = 8, k: int = 2) -> None:
        super().__init__()
        self.lstm = nn.LSTM(1, hidden, batch_first=True)
        self.out = nn.Linear(hidden, k)

    def forward(self, x):
        o, _ = self.lstm(x)
        return self.out(o[:, -1])


def batch(b: int = 16, t: int = 5):
    x = torch.randint(0, 2, (b, t, 1)).float()
    return x, (x.sum((1, 2)) % 2).long()


def train(model, steps, loss_fn=None, opt=None, eval_every=0):
    opt = opt or torch.optim.SGD(model.parameters(), lr=0.1)
    for s in range(steps):
        x, y = batch()
        logits = model(x)
        loss = loss_fn(logits, y) if loss_fn else F.cross_entropy(logits, y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if eval_every and (s + 1) % eval_every == 0:
            with torch.no_grad():
                F.cross_entropy(model(x), y)


def test_records_steps_losses_predictions_params(tmp_path):
    torch.manual_seed(0)
    model = Tiny()
    with rnndoctor.watch(model, out=tmp_path / "r", summary=False) as run:
        train(model, 12, eval_every=4)
    rec = rnndoctor.load_run(tmp_path / "r")
    train_rows = rec.train_steps()
    assert list(train_rows["step"]) == list(range(12))
    assert (train_rows["loss_calls"] == 1).all()
    assert train_rows["loss_kind"].eq("cross_entropy").all()
    assert (train_rows["total"] == 16).all()
    evals = rec["steps"][rec["steps"]["mode"] == "eval"]
    assert list(evals["step"]) == [4, 8, 12]
    pred = rec["predictions"]
    assert set(pred["cls"]) == {0, 1}
    assert (pred[pred["mode"] == "train"].groupby("step")["n_label"].sum() == 16).all()
    params = rec["params"]
    assert set(params["param"]) == {n for n, _ in model.named_parameters()}
    assert (params["grad_norm"] > 0).all()
    updates = rec["updates"]
    assert (updates["update_ratio"] > 0).all() and set(updates["step"]) == set(range(12))
    assert rec.meta["status"] == "completed" and rec.meta["steps"] == 12
    assert rec.meta["model"]["recurrent"][0]["type"] == "LSTM"
    assert run.steps == 12
    data = json.loads((tmp_path / "r" / "findings.json").read_text())
    assert data["run"]["status"] == "completed" and data["rnndoctor"] == rnndoctor.__version__


def test_loss_module_and_functional_are_counted_once(tmp_path):
    model = Tiny()
    with rnndoctor.watch(model, out=tmp_path / "r", summary=False):
        train(model, 3, loss_fn=nn.CrossEntropyLoss())
    rows = rnndoctor.load_run(tmp_path / "r").train_steps()
    assert (rows["loss_calls"] == 1).all()


@pytest.mark.parametrize(
    "make_loss,kind",
    [
        (lambda lg, y: nn.NLLLoss()(F.log_softmax(lg, -1), y), "nll"),
        (lambda lg, y: nn.BCEWithLogitsLoss()(lg[:, 1], y.float()), "bce_logits"),
        (lambda lg, y: nn.BCELoss()(torch.sigmoid(lg[:, 1]), y.float()), "bce"),
        (lambda lg, y: nn.MSELoss()(lg[:, 1], y.float()), "mse"),
        (lambda lg, y: F.l1_loss(lg[:, 1], y.float()), "l1"),
    ],
)
def test_loss_kinds_are_captured(tmp_path, make_loss, kind):
    model = Tiny()
    with rnndoctor.watch(model, out=tmp_path / "r", summary=False):
        train(model, 3, loss_fn=make_loss)
    rows = rnndoctor.load_run(tmp_path / "r").train_steps()
    assert rows["loss_kind"].eq(kind).all() and (rows["loss_calls"] == 1).all()
    assert (rows["total"] == 16).all()


def test_sequence_output_cross_entropy_counts_every_position(tmp_path):
    lstm, head = nn.LSTM(2, 8, batch_first=True), nn.Linear(8, 3)
    model = nn.ModuleDict({"lstm": lstm, "head": head})
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with rnndoctor.watch(model, out=tmp_path / "r", summary=False):
        for _ in range(2):
            x = torch.randn(4, 6, 2)
            y = torch.randint(0, 3, (4, 6))
            y[0, :2] = -100  # ignored positions
            logits = head(lstm(x)[0])  # [B, T, K]
            loss = F.cross_entropy(logits.transpose(1, 2), y)
            opt.zero_grad(); loss.backward(); opt.step()
    rows = rnndoctor.load_run(tmp_path / "r").train_steps()
    assert (rows["total"] == 22).all() and (rows["n_classes"] == 3).all()


def test_hooks_and_patches_are_removed_on_exit_and_on_error(tmp_path):
    from torch.nn.modules import module as module_mod
    from torch.optim import optimizer as optim_mod

    original_ce = F.cross_entropy
    model = Tiny()
    before = (len(module_mod._global_forward_pre_hooks), len(optim_mod._global_optimizer_pre_hooks), len(optim_mod._global_optimizer_post_hooks))
    with pytest.raises(RuntimeError, match="boom"):
        with rnndoctor.watch(model, out=tmp_path / "r", summary=False):
            assert F.cross_entropy is not original_ce
            train(model, 2)
            raise RuntimeError("boom")
    with rnndoctor.watch(out=tmp_path / "d", summary=False):
        train(model, 2)
    assert F.cross_entropy is original_ce
    after = (len(module_mod._global_forward_pre_hooks), len(optim_mod._global_optimizer_pre_hooks), len(optim_mod._global_optimizer_post_hooks))
    assert after == before
    for m in model.modules():
        assert not m._forward_hooks and not m._forward_pre_hooks
    for p in model.parameters():
        assert not p._post_accumulate_grad_hooks


def test_crash_inside_loop_still_leaves_record_and_findings(tmp_path):
    model = Tiny()
    with pytest.raises(ValueError, match="bad batch"):
        with rnndoctor.watch(model, out=tmp_path / "r", summary=False):
            train(model, 3)
            raise ValueError("bad batch at step 3")
    rec = rnndoctor.load_run(tmp_path / "r")
    assert rec.meta["status"] == "crashed"
    assert rec.meta["exception"]["type"] == "ValueError"
    assert len(rec.train_steps()) == 3
    data = json.loads((tmp_path / "r" / "findings.json").read_text())
    assert data["run"]["status"] == "crashed" and data["run"]["exception"] == "ValueError"


def test_keyboard_interrupt_is_recorded_as_interrupted(tmp_path):
    model = Tiny()
    with pytest.raises(KeyboardInterrupt):
        with rnndoctor.watch(model, out=tmp_path / "r", summary=False):
            train(model, 2)
            raise KeyboardInterrupt
    assert rnndoctor.load_run(tmp_path / "r").meta["status"] == "interrupted"


def test_discovery_mode_adopts_the_model_and_its_optimizer(tmp_path):
    with rnndoctor.watch(out=tmp_path / "r", summary=False) as run:
        model = Tiny()  # built inside, as a script would
        train(model, 4)
    rec = rnndoctor.load_run(tmp_path / "r")
    assert rec.meta["model"]["roots"] == ["Tiny"]
    assert run.steps == 4 and len(rec["params"]["param"].unique()) == 6


def test_discovery_hook_goes_after_the_first_step_and_returns_for_a_second_model(tmp_path):
    """Diagnose mode's global hook taxes every module call: gone once the trained modules are
    adopted, back when an optimizer of modules not yet seen steps."""
    from torch.nn.modules import module as module_mod

    before = len(module_mod._global_forward_pre_hooks)
    with rnndoctor.watch(out=tmp_path / "r", summary=False) as run:
        first = Tiny()
        train(first, 2)
        assert len(module_mod._global_forward_pre_hooks) == before
        second = Tiny(hidden=4)
        train(second, 3)  # its first step re-arms discovery, its next forward adopts it
        assert len(module_mod._global_forward_pre_hooks) == before
    assert run.steps == 4  # 2 + 2: the second model's first step passed before it was adopted
    assert rnndoctor.load_run(tmp_path / "r").meta["model"]["roots"] == ["Tiny", "Tiny2"]


def test_unrelated_optimizer_does_not_count_steps(tmp_path):
    model, other = Tiny(), nn.Linear(2, 2)
    other_opt = torch.optim.SGD(other.parameters(), lr=0.1)
    with rnndoctor.watch(model, out=tmp_path / "r", summary=False) as run:
        train(model, 2)
        for _ in range(3):
            other(torch.randn(1, 2)).sum().backward()
            other_opt.step()
    assert run.steps == 2


def test_manual_parameter_updates_count_as_steps(tmp_path):
    model = Tiny()
    with rnndoctor.watch(model, out=tmp_path / "r", summary=False) as run:
        for _ in range(3):
            x, y = batch()
            loss = F.cross_entropy(model(x), y)
            loss.backward()
            with torch.no_grad():
                for p in model.parameters():
                    p -= 0.1 * p.grad
                    p.grad = None
    assert run.steps == 3
    params = rnndoctor.load_run(tmp_path / "r")["params"]
    assert (params["grad_norm"] > 0).all()


def test_explicit_log_records_a_hand_written_loss(tmp_path):
    model = Tiny()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with rnndoctor.watch(model, out=tmp_path / "r", summary=False) as run:
        for _ in range(3):
            x, y = batch()
            logits = model(x)
            loss = -(logits.log_softmax(-1).gather(1, y[:, None])).mean()
            run.log(logits=logits, targets=y, loss=loss)
            opt.zero_grad(); loss.backward(); opt.step()
    rows = rnndoctor.load_run(tmp_path / "r").train_steps()
    assert (rows["total"] == 16).all() and rows["loss"].notna().all()


@pytest.mark.parametrize("writer", ["inline", "thread"])
def test_counts_and_norms_follow_their_schedule_and_go_dense_after_a_nan(tmp_path, writer):
    """The loss on every step; class counts and gradient norms on DEFAULT_STEP_STATS steps,
    and on every step once a non-finite loss was seen (at the next flush, once written)."""
    from rnndoctor.schedule import DEFAULT_FLUSH_EVERY, DEFAULT_STEP_STATS, flush_schedule

    flush_due = flush_schedule(DEFAULT_FLUSH_EVERY)
    seen_at = next(s for s in range(131, 1000) if flush_due(s))  # first flush after the NaN
    torch.manual_seed(0)
    model = Tiny()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with Watch(model, out=tmp_path / "r", summary=False, strict=True, writer=writer) as run:
        train(model, 130, opt=opt)
        with torch.no_grad():
            model.out.bias.fill_(float("nan"))
        train(model, seen_at - 130 + 1, opt=opt)
        run._recorder.flush(wait=True)  # a writer thread has written the flush with the NaN
        train(model, 20, opt=opt)
    steps = rnndoctor.load_run(tmp_path / "r").train_steps()
    assert len(steps) == seen_at + 21 and steps["loss_finite"].notna().all()
    due = steps["step"].map(DEFAULT_STEP_STATS)
    early = steps["step"] < 130
    assert steps["loss"][early].notna().all()
    assert (steps["correct"].notna() == due)[early].all() and not due[early].all()
    assert (steps["grad_norm"].notna() == due)[early].all()
    late = steps["step"] > seen_at + 1
    assert steps["correct"].notna()[late].all() and not due[late].all()
    assert steps["loss_finite"][steps["step"] >= 130].eq(0).all()


def test_a_tensor_learning_rate_is_recorded_without_reading_it_back(tmp_path, monkeypatch):
    torch.manual_seed(0)
    model = Tiny()
    opt = torch.optim.SGD(model.parameters(), lr=torch.tensor(0.05))
    with Watch(model, out=tmp_path / "r", summary=False, writer="thread", strict=True) as run:
        seen = count_read_backs(monkeypatch)
        train(model, 8, opt=opt)
        run._recorder.flush(wait=True)
        monkeypatch.undo()
    assert seen.on_main == []
    steps = rnndoctor.load_run(tmp_path / "r").train_steps()
    assert steps["lr"].tolist() == pytest.approx([0.05] * 8)


def test_training_thread_never_reads_a_tensor_back(tmp_path, monkeypatch):
    """With the writer thread (chosen on a GPU or where a core is free): no host sync on the
    training thread at all, not per step and not at flushes either."""
    torch.manual_seed(0)
    model = Tiny()
    with Watch(model, out=tmp_path / "r", summary=False, writer="thread") as run:
        seen = count_read_backs(monkeypatch)
        train(model, 60)
        run._recorder.flush(wait=True)
        monkeypatch.undo()
    assert seen.on_main == []
    assert seen.elsewhere > 0  # the counters see the transfers where they do happen
    assert run.steps == 60
    steps = rnndoctor.load_run(tmp_path / "r").train_steps()
    assert len(steps) == 60 and steps["loss"].notna().all()
    assert steps["grad_norm"].notna().sum() == 60  # the dense start records every step's norm


def test_inline_writer_reads_back_only_at_flushes(tmp_path, monkeypatch):
    """Inline (CPU, no free core): the batched transfer runs on the training thread, once
    per flush and never per step, and writes the same rows."""
    torch.manual_seed(0)
    model = Tiny()
    with Watch(model, out=tmp_path / "r", summary=False, writer="inline") as run:
        seen = count_read_backs(monkeypatch)
        train(model, 60)
        flushes = run._recorder.flushes
        monkeypatch.undo()
    assert run._recorder._writer is None  # no thread was started
    assert seen.elsewhere == 0 and 0 < len(seen.on_main) <= 2 * flushes < 60
    steps = rnndoctor.load_run(tmp_path / "r").train_steps()
    assert len(steps) == 60 and steps["loss"].notna().all() and steps["grad_norm"].notna().all()


def test_writer_thread_keeps_going_without_ticks(tmp_path):
    """The writer paces its slices by training losses; a loop that computes none (evaluation
    only) still gets its rows written, paced by the timeout."""
    import time

    rec = Recorder(tmp_path, background=True)
    for i in range(40):
        rec.add("steps", {"step": i, "loss": torch.tensor(float(i))})
    rec.flush()
    deadline = time.monotonic() + 5
    while rec.rows_written < 40 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert rec.rows_written == 40 and rec._writer is not None
    rec.close()
    lines = (tmp_path / "signals" / "steps.jsonl").read_text().splitlines()
    assert [json.loads(line)["loss"] for line in lines] == list(range(40))


def test_a_wrong_writer_choice_fails_at_construction():
    with pytest.raises(ValueError, match="writer must be"):
        Watch(Tiny(), writer="sometimes")


def test_output_op_looks_through_reshapes():
    from rnndoctor.probes.outputs import output_op

    x = torch.randn(4, 3, requires_grad=True)
    assert output_op(torch.sigmoid(x).view(-1).unsqueeze(0)) == "SigmoidBackward0"
    assert output_op(nn.Linear(3, 2)(x)[:, 1]) == "AddmmBackward0"
    assert output_op(x.detach()) == "none"


def test_reusing_a_run_directory_replaces_the_old_record(tmp_path):
    model = Tiny()
    for _ in range(2):
        with rnndoctor.watch(model, out=tmp_path / "r", summary=False):
            train(model, 3)
    assert list(rnndoctor.load_run(tmp_path / "r").train_steps()["step"]) == [0, 1, 2]


def _pattern_loop(model, labels_from_input: bool, steps=60):
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    patterns = torch.randint(0, 2, (40, 12, 1)).float()
    for _ in range(steps):
        idx = torch.randint(0, 40, (16,))
        x = patterns[idx]
        y = (x.sum((1, 2)) % 2).long() if labels_from_input else torch.randint(0, 2, (16,))
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad(); loss.backward(); opt.step()


@pytest.mark.parametrize("consistent", [True, False])
def test_generator_fed_data_is_fingerprinted(tmp_path, consistent):
    torch.manual_seed(0)
    model = Tiny()
    with rnndoctor.watch(model, out=tmp_path / "r", summary=False) as run:
        _pattern_loop(model, consistent)
    found = {f.id for f in run.findings}
    assert "duplicate-samples" in found  # 40 distinct inputs among ~830 fingerprinted
    assert ("inconsistent-labels" in found) is (not consistent)


def test_dataset_refetch_leaves_the_users_random_stream_alone(tmp_path):
    from torch.utils.data import DataLoader, Dataset

    class Redraw(Dataset):
        def __len__(self):
            return 64

        def __getitem__(self, i):
            return torch.rand(5, 1), torch.randint(0, 2, ()).item()

    def draws(watched):
        torch.manual_seed(3)
        loader = DataLoader(Redraw(), batch_size=16)
        model = Tiny()
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        ctx = rnndoctor.watch(model, out=tmp_path / ("w" if watched else "b"), summary=False) if watched else None
        if ctx:
            ctx.__enter__()
        seen = []
        for x, y in loader:
            seen.append(x.sum().item())
            loss = F.cross_entropy(model(x), y); opt.zero_grad(); loss.backward(); opt.step()
        if ctx:
            ctx.__exit__(None, None, None)
        return seen, ctx

    bare, _ = draws(False)
    watched, ctx = draws(True)
    assert watched == bare
    assert "resampled-parameters" in {f.id for f in ctx.findings}


def test_recurrence_probes_record_gates_cell_and_time_gradients(tmp_path):
    torch.manual_seed(0)
    model = Tiny()
    with rnndoctor.watch(model, out=tmp_path / "r", summary=False, strict=True):
        train(model, 4, eval_every=2)
    rec = rnndoctor.load_run(tmp_path / "r")
    gates = rec["gates"]
    assert set(gates["gate"]) == {"i", "f", "g", "o"} and set(gates["step"]) == {0, 1, 2}
    assert (gates["replay_err"] < 1e-5).all()  # the replay reproduced the module's h_n
    cell = rec["cell"]
    assert len(cell.iloc[0]["c_norm"]) == 5 and len(cell.iloc[0]["forget_bias"]) == 8
    tg = rec["time_grad"]
    assert list(tg["step"]) == [0, 1, 2, 3] and (tg["backward_step"] == tg["step"]).all()
    assert all(len(p) == 5 for p in tg["grad_norm"])
    ev = rec["eval_passes"]
    assert list(ev["step"]) == [2, 4] and (ev["dropout_active"] == 0).all()


def test_time_gradient_hook_leaves_the_users_gradients_unchanged(tmp_path):
    def grads(watched):
        torch.manual_seed(0)
        model = Tiny()
        x, y = batch()
        ctx = rnndoctor.watch(model, out=tmp_path / str(watched), summary=False, strict=True) if watched else None
        if ctx:
            ctx.__enter__()
        F.cross_entropy(model(x), y).backward()
        out = [p.grad.clone() for p in model.parameters()]
        if ctx:
            ctx.__exit__(None, None, None)
        return out

    for a, b in zip(grads(False), grads(True)):
        assert torch.equal(a, b)


def test_dropout_left_on_during_evaluation_is_recorded(tmp_path):
    model = nn.Sequential()
    lstm, drop, head = nn.LSTM(1, 8, batch_first=True), nn.Dropout(0.5), nn.Linear(8, 2)

    class WithDropout(nn.Module):
        def __init__(self):
            super().__init__()
            self.lstm, self.drop, self.head = lstm, drop, head

        def forward(self, x):
            return self.head(self.drop(self.lstm(x)[0][:, -1]))

    model = WithDropout()
    with rnndoctor.watch(model, out=tmp_path / "r", summary=False, strict=True) as run:
        train(model, 3, eval_every=1)
    assert "eval-in-train-mode" in {f.id for f in run.findings}
    assert rnndoctor.load_run(tmp_path / "r")["eval_passes"]["active_modules"].iloc[0] == ["drop"]


class FunctionalDropout(nn.Module):
    """Dropout written as ``F.dropout(x, p)``: no module to put in eval mode; ``training``
    must be passed, and ``fixed`` does (``training=self.training``)."""

    def __init__(self, fixed: bool):
        super().__init__()
        self.lstm, self.head, self.fixed = nn.LSTM(1, 8, batch_first=True), nn.Linear(8, 2), fixed

    def forward(self, x):
        h = self.lstm(x)[0][:, -1]
        h = F.dropout(h, 0.3, training=self.training) if self.fixed else F.dropout(h, 0.3)
        return self.head(h)


def _train_and_evaluate(tmp_path, model, steps, evaluate):
    """One training step, then ``evaluate(model)`` in eval() mode under no_grad, ``steps`` times."""
    torch.manual_seed(0)
    with rnndoctor.watch(model, out=tmp_path / "r", summary=False, strict=True) as run:
        for _ in range(steps):
            model.train()
            train(model, 1)
            model.eval()
            with torch.no_grad():
                evaluate(model)
    return run, rnndoctor.load_run(tmp_path / "r")["eval_passes"]


@pytest.mark.parametrize("fixed", [False, True])
def test_functional_dropout_left_on_during_evaluation(tmp_path, fixed):
    original = F.dropout
    run, ev = _train_and_evaluate(tmp_path, FunctionalDropout(fixed), 4, lambda m: F.cross_entropy(m(batch()[0]), batch()[1]))
    assert F.dropout is original
    assert len(ev) == 4 and (ev["dropout_active"] == (0 if fixed else 1)).all()
    assert ("eval-in-train-mode" in {f.id for f in run.findings}) is not fixed


def test_an_evaluation_that_bypasses_forward_is_an_evaluation_pass(tmp_path):
    """``model.decode(x)`` under no_grad: the root's forward never runs, its RNN does."""
    def decode(model):
        h = model.lstm(batch()[0])[0][:, -1]
        model.head(F.dropout(h, 0.3))

    run, ev = _train_and_evaluate(tmp_path, FunctionalDropout(fixed=False), 3, decode)
    assert len(ev) == 3 and (ev["dropout_active"] == 1).all() and set(ev["module"]) == {"lstm"}
    assert "eval-in-train-mode" in {f.id for f in run.findings}


def test_gate_replay_schedule_is_an_option(tmp_path):
    torch.manual_seed(0)
    model = Tiny()
    with rnndoctor.watch(model, out=tmp_path / "every", summary=False, gates=lambda step: True):
        train(model, 6)
    with rnndoctor.watch(model, out=tmp_path / "default", summary=False):
        train(model, 6)
    assert sorted(rnndoctor.load_run(tmp_path / "every")["gates"]["step"].unique()) == list(range(6))
    assert sorted(rnndoctor.load_run(tmp_path / "default")["gates"]["step"].unique()) == [0, 1, 2]
