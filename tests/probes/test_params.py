"""ParamNorms: gradient norms now or held for the flush, and never a wrong value."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from rnndoctor.probes.params import HOLD_AFTER_CLEAN_STEPS, ParamNorms
from rnndoctor.recorder import Part


def _value(v):
    return float(v.base[v.index]) if isinstance(v, Part) else float(v)


def _model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2))


def _run(probe: ParamNorms, model: nn.Module, steps: int, *, zeroing: str = "none"):
    """Train ``steps`` steps; returns (rows, expected per-parameter norms per step)."""
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    rows, expected = [], []
    for _ in range(steps):
        x, y = torch.randn(8, 3), torch.randint(0, 2, (8,))
        if zeroing == "data":  # old-style manual zeroing: bypasses the version counter
            for p in model.parameters():
                if p.grad is not None:
                    p.grad.data.zero_()
        else:
            opt.zero_grad(set_to_none=zeroing == "none")
        F.cross_entropy(model(x), y).backward()
        expected.append([p.grad.norm().item() for p in model.parameters()])
        probe.before_update(norms=True, snapshot=False)
        opt.step()
        step_row: dict = {}
        grads, _ = probe.take_rows(len(rows), step_row)
        rows.append((grads, step_row))
    job = probe.take_deferred()
    if job is not None:
        job()
    return rows, expected


def _norms(grads_row) -> list[float]:
    v = grads_row["grad_norm"]
    base = v.base[v.index] if isinstance(v, Part) else v
    return base.tolist()


def test_held_gradients_give_the_norms_of_their_own_step():
    model = _model()
    probe = ParamNorms(list(model.named_parameters()), hold_steps=26)
    assert probe.may_hold
    rows, expected = _run(probe, model, 10)
    assert probe.holding  # the loop left finished gradients alone
    for (grads, step_row), want in zip(rows, expected):
        assert _norms(grads) == pytest.approx(want, rel=1e-6)
        assert _value(step_row["grad_norm"]) == pytest.approx(sum(w * w for w in want) ** 0.5, rel=1e-6)


@pytest.mark.parametrize("zeroing", ["zero_", "data"])
def test_gradients_zeroed_in_place_are_normed_at_once(zeroing):
    """zero_grad(set_to_none=False) or p.grad.data.zero_() reuse the gradient tensors:
    holding them would read the next step's values, so the probe never holds and its values
    stay right."""
    model = _model()
    probe = ParamNorms(list(model.named_parameters()), hold_steps=26)
    rows, expected = _run(probe, model, HOLD_AFTER_CLEAN_STEPS + 5, zeroing=zeroing)
    assert not probe.may_hold and not probe.holding
    for (grads, _), want in zip(rows, expected):
        assert _norms(grads) == pytest.approx(want, rel=1e-6)


def test_a_held_gradient_changed_in_place_gives_no_value():
    model = _model()
    probe = ParamNorms(list(model.named_parameters()), hold_steps=26)
    _run(probe, model, HOLD_AFTER_CLEAN_STEPS + 2)
    assert probe.holding
    model.zero_grad()
    F.cross_entropy(model(torch.randn(8, 3)), torch.randint(0, 2, (8,))).backward()
    probe.before_update(norms=True, snapshot=False)
    assert probe.holding
    step_row: dict = {}
    grads, _ = probe.take_rows(99, step_row)
    next(model.parameters()).grad.mul_(3.0)  # after capture, before the flush
    probe.take_deferred()()
    assert grads["grad_lost"] == 1 and all(v != v for v in grads["grad_norm"])  # NaN: no value
    assert "grad_norm" not in step_row


def test_large_models_never_hold():
    model = nn.Linear(2048, 2048)  # 16 MiB of gradients: 26 steps of them exceed the budget
    probe = ParamNorms(list(model.named_parameters()), hold_steps=26)
    assert not probe.may_hold
    assert not ParamNorms(list(_model().named_parameters()), hold_steps=0).may_hold


def test_steps_without_norms_write_no_params_row_but_keep_the_update_row():
    model = _model()
    probe = ParamNorms(list(model.named_parameters()), hold_steps=26)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    F.cross_entropy(model(torch.randn(8, 3)), torch.randint(0, 2, (8,))).backward()
    probe.before_update(norms=False, snapshot=True)
    opt.step()
    step_row: dict = {}
    grads, updates = probe.take_rows(0, step_row)
    assert grads is None and "grad_norm" not in step_row
    assert updates is not None and (updates["update_ratio"] > 0).all()


def test_a_vocabulary_sized_matrix_has_its_update_ratio_read_on_a_sample_of_rows():
    """A 10k x 200 decoder (2M elements) is read every 2nd row: the sampled ratio of a
    random update matches the whole matrix's within a few per cent; a small matrix is whole."""
    from rnndoctor.probes.params import UPDATE_SAMPLE_NUMEL, _update_view

    torch.manual_seed(0)
    big = nn.Parameter(torch.randn(10_000, 200))
    view = _update_view(big)
    assert big.numel() > UPDATE_SAMPLE_NUMEL and view.shape == (5_000, 200) and view.data_ptr() == big.data_ptr()
    small = nn.Parameter(torch.randn(64, 64))
    assert _update_view(small).shape == small.shape
    delta = torch.randn_like(big) * 1e-3
    full = delta.norm() / big.detach().norm()
    sampled = _update_view(delta).norm() / view.norm()
    assert abs(float(sampled / full) - 1) < 0.05
    # through the probe's own path: snapshot before the step, ratio after it
    from rnndoctor.probes.params import ParamNorms

    norms = ParamNorms([("decoder.weight", big), ("small", small)])
    norms.before_update(norms=False, snapshot=True)
    with torch.no_grad():
        big.add_(delta)
        small.mul_(1.01)
    _, updates = norms.take_rows(0, {})
    ratio = updates["update_ratio"]
    assert abs(float(ratio[0] / full) - 1) < 0.05 and abs(float(ratio[1]) - 0.01) < 1e-4
