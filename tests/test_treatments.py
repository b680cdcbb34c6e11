"""Treatments (what a fix trial applies) and the trials around them: each treatment acts on
a real loop through the watch's hooks, says when it had nothing to act on, and a trial
reports before/after from its own process without touching the script."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import rnndoctor
from rnndoctor.finding import Diagnosis, Finding, Severity, Trial
from rnndoctor.probes import DEFAULT_PROBES
from rnndoctor.treatments import (
    TREATMENTS, ClipGradients, DetachState, ForgetGateBias, LearningRateDown, LearningRateUp, OrthogonalInit,
    StandardizeInputs, ZeroGradients, get_treatment, treatments_for,
)
from rnndoctor.trials import judge, plan, Planned

ROOT = Path(__file__).resolve().parent.parent


class Tagger(nn.Module):
    def __init__(self, cell: type[nn.Module] = nn.LSTM, d: int = 3, h: int = 8) -> None:
        super().__init__()
        self.rnn = cell(d, h, batch_first=True)
        self.out = nn.Linear(h, 2)

    def forward(self, x, state=None):
        y, state = self.rnn(x, state)
        return self.out(y[:, -1]), state


def train(treatment, *, steps: int = 3, cell=nn.LSTM, scale: float = 1.0, carry: bool = False, zero: bool = True, tmp_path=None):
    torch.manual_seed(0)
    model = Tagger(cell)
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    state = None
    with rnndoctor.watch(model, out=tmp_path, summary=False, probes=[treatment, *DEFAULT_PROBES], strict=True):
        for _ in range(steps):
            x, y = torch.randn(4, 5, 3) * scale, torch.randint(0, 2, (4,))
            logits, state = model(x, state if carry else None)
            if zero:
                opt.zero_grad()
            F.cross_entropy(logits, y).backward(retain_graph=carry)
            opt.step()
    return model, opt


def finding(id: str, **evidence) -> Finding:
    return Finding(id=id, severity=Severity.WARNING, title=id, explanation="", fix="", evidence=evidence, where={"module": "rnn"})


def test_every_treatment_is_listed_once_with_a_label_and_findings_it_treats():
    names = [t.name for t in TREATMENTS]
    assert len(set(names)) == len(names) and all(t.label for t in TREATMENTS)
    ids = set(rnndoctor.rules.REGISTRY)
    assert all(set(t.ids) <= ids for t in TREATMENTS)
    assert get_treatment("zero-grad") is ZeroGradients
    with pytest.raises(KeyError):
        get_treatment("bleed")


def test_the_direction_of_the_evidence_picks_the_learning_rate_treatment():
    large, small = finding("learning-rate-scale", side="large"), finding("learning-rate-scale", side="small")
    assert [t for t, _ in treatments_for([large])] == [LearningRateDown]
    assert [t for t, _ in treatments_for([small])] == [LearningRateUp]


def test_learning_rate_is_scaled_once_at_the_first_step(tmp_path):
    t = LearningRateDown()
    _, opt = train(t, tmp_path=tmp_path)
    assert opt.param_groups[0]["lr"] == pytest.approx(0.05) and t.applied == 1


def test_clipping_bounds_the_gradient_that_is_applied(tmp_path):
    t = ClipGradients()
    torch.manual_seed(0)
    model = Tagger()
    opt = torch.optim.SGD(model.parameters(), lr=0.0)
    norms = []
    with rnndoctor.watch(model, out=tmp_path, summary=False, probes=[t, *DEFAULT_PROBES], strict=True):
        for _ in range(2):
            logits, _ = model(torch.randn(4, 5, 3) * 100)
            opt.zero_grad()
            (1000 * F.cross_entropy(logits, torch.randint(0, 2, (4,)))).backward()
            opt.step()
            norms.append(torch.nn.utils.get_total_norm([p.grad for p in model.parameters()]).item())
    assert t.applied == 2 and max(norms) <= 1.0 + 1e-4


def test_zero_grad_clears_stale_gradients_only_at_a_steps_first_backward(tmp_path):
    t = ZeroGradients()
    train(t, steps=3, zero=False, tmp_path=tmp_path)
    assert t.applied == 3


def test_forget_bias_reset_on_lstm_and_not_applicable_without_gates(tmp_path):
    t = ForgetGateBias()
    model, _ = train(t, steps=1, tmp_path=tmp_path / "a")
    assert t.applied == 1
    t2 = ForgetGateBias()
    torch.manual_seed(0)
    m = Tagger(nn.LSTM)
    with torch.no_grad():
        m.rnn.bias_ih_l0.fill_(10.0)
    with rnndoctor.watch(m, out=tmp_path / "b", summary=False, probes=[t2, *DEFAULT_PROBES], strict=True):
        m(torch.randn(2, 5, 3))
    h = m.rnn.hidden_size
    assert torch.equal(m.rnn.bias_ih_l0[h:2 * h], torch.ones(h)) and float(m.rnn.bias_ih_l0[:h].detach().abs().max()) == 0.0
    t3 = ForgetGateBias()
    train(t3, steps=1, cell=nn.RNN, tmp_path=tmp_path / "c")
    assert t3.applied == 0  # a plain RNN has no gates: "not applicable", never a result


def test_orthogonal_init_keeps_the_scripts_random_stream(tmp_path):
    t = OrthogonalInit()
    torch.manual_seed(0)
    model = Tagger()
    with rnndoctor.watch(model, out=tmp_path, summary=False, probes=[t, *DEFAULT_PROBES], strict=True):
        model(torch.zeros(1, 2, 3))
        after = torch.rand(3)
    torch.manual_seed(0)
    Tagger()
    torch.zeros(1, 2, 3)
    assert torch.equal(after, torch.rand(3)) and t.applied == 1
    w = model.rnn.weight_hh_l0.detach().chunk(4, 0)[0]
    assert torch.allclose(w @ w.T, torch.eye(8), atol=1e-5)


def test_detach_state_cuts_the_graph_between_batches(tmp_path):
    t = DetachState()
    train(t, steps=3, carry=True, tmp_path=tmp_path)
    assert t.applied == 2  # the first call had no state to detach


def test_standardize_inputs_brings_raw_units_to_unit_scale(tmp_path):
    t = StandardizeInputs()
    seen = []
    torch.manual_seed(0)
    model = Tagger()
    model.rnn.register_forward_hook(lambda m, a, o: seen.append(a[0].detach().abs().mean().item()))  # what the RNN ran on
    with rnndoctor.watch(model, out=tmp_path, summary=False, probes=[t, *DEFAULT_PROBES], strict=True):
        for _ in range(3):
            model(torch.randn(4, 5, 3) * 500 + 2000)
    assert t.applied == 3 and max(seen) < 5


def test_a_trial_that_never_acted_is_not_applicable_and_a_lingering_finding_did_not_work():
    p = Planned(ForgetGateBias, ("forget-gate-saturation",))
    main = Diagnosis(findings=(finding("forget-gate-saturation"),))
    before, after = {"loss_last": 0.69}, {"loss_last": 0.05}
    assert judge(p, before, after, [], main, applied=0)[0] == "not applicable"
    assert judge(p, before, after, [], main, applied=1) == ("worked", "forget-gate-saturation no longer found")
    assert judge(p, before, after, [finding("forget-gate-saturation")], main, applied=1)[0] == "did not work"
    assert judge(p, before, {"loss_last": 0.9}, [], main, applied=1) == ("did not work", "the loss ended higher")
    assert judge(p, before, {"loss_last": 0.75}, [], main, applied=1)[0] == "worked"  # within the noise of a last window
    # the finding is gone but the run is still stuck: not a fix (parity_stuck: clipping removed
    # a gradient spike and the run stayed at chance)
    stuck = Finding(id="stuck-at-chance", severity=Severity.ERROR, title="", explanation="", fix="")
    main_stuck = Diagnosis(findings=(finding("forget-gate-saturation"), stuck))
    assert judge(p, before, after, [stuck], main_stuck, applied=1) == (
        "did not work", "forget-gate-saturation gone, but stuck-at-chance remains")
    assert judge(p, before, after, [], main_stuck, applied=1)[1] == "forget-gate-saturation no longer found; stuck-at-chance gone too"
    # a treated finding that is itself the failed outcome is said once
    q = Planned(ClipGradients, ("non-finite",))
    main_nan = Diagnosis(findings=(Finding(id="non-finite", severity=Severity.ERROR, title="", explanation="", fix=""),))
    assert judge(q, before, after, list(main_nan.findings), main_nan, applied=1)[1] == "non-finite still found"
    nan = Finding(id="non-finite", severity=Severity.ERROR, title="", explanation="", fix="")
    assert "new: non-finite" in judge(p, before, after, [nan], main, applied=1)[1]


def test_plan_treats_causes_not_their_consequences():
    main = Diagnosis(findings=(
        finding("gradients-not-zeroed"),
        Finding(id="exploding-gradients", severity=Severity.WARNING, title="", explanation="", fix="", explained_by=("gradients-not-zeroed",)),
    ))
    assert [(p.treatment.name, p.treats) for p in plan(main)] == [("lr-div-10", ("gradients-not-zeroed",)), ("zero-grad", ("gradients-not-zeroed",))]


def test_try_fixes_end_to_end_finds_the_fix_that_works_and_leaves_the_script_alone(tmp_path):
    """The seed-style 'zero_grad once per epoch' fixture: zeroing gradients per step works."""
    script = tmp_path / "train.py"
    shutil.copy(ROOT / "fixtures" / "grads_zeroed_per_epoch.py", script)
    source = script.read_bytes()
    out = tmp_path / "run"
    proc = subprocess.run([sys.executable, "-m", "rnndoctor", "diagnose", str(script), "--max-steps", "320", "--out", str(out),
                           "--quiet", "--try-fixes", "--jobs", "2", "--fail-on", "never"], capture_output=True, text=True, cwd=tmp_path, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert script.read_bytes() == source and sorted(p.name for p in tmp_path.iterdir()) == ["run", "train.py"]
    data = json.loads((out / "findings.json").read_text())
    trials = {t["treatment"]: t for t in data["trials"]}
    assert trials["zero-grad"]["outcome"] == "worked", trials["zero-grad"]
    assert trials["zero-grad"]["after"]["loss_last"] < trials["zero-grad"]["before"]["loss_last"]
    assert (out / "trials" / "zero-grad" / "findings.json").is_file()
    assert "WORKED" in proc.stderr and "gradients zeroed before each step's backward" in proc.stderr
    head = [line for line in proc.stderr.splitlines() if line.startswith("rnndoctor: ") and "cause:" in line][0]
    after_head = proc.stderr.splitlines()[proc.stderr.splitlines().index(head) + 1]
    assert after_head.startswith("  fix that worked: gradients zeroed before each step's backward (final loss")
    assert 'data-trial="zero-grad"' in (out / "report.html").read_text()
    # `rnndoctor report` keeps the trials with the run
    again = subprocess.run([sys.executable, "-m", "rnndoctor", "report", str(out), "--fail-on", "never"], capture_output=True, text=True)
    assert again.returncode == 0 and [Trial.from_dict(t).outcome for t in json.loads((out / "findings.json").read_text())["trials"]]


def test_a_cause_no_outside_change_can_treat_is_said_with_its_fix():
    from rnndoctor.trials import untreatable

    main = Diagnosis(findings=(
        Finding(id="constant-input", severity=Severity.ERROR, title="", explanation="", fix="Feed the data as the input."),
        Finding(id="stuck-at-chance", severity=Severity.ERROR, title="", explanation="", fix="", explained_by=("constant-input",)),
        Finding(id="duplicate-samples", severity=Severity.INFO, title="", explanation="", fix=""),
    ))
    assert plan(main) == []
    (t,) = untreatable(main, [])
    assert t.outcome == "not treatable" and t.treats == ("constant-input",) and "Feed the data as the input." in t.why


def test_eval_mode_for_no_grad_passes_turns_dropout_off_for_them_only(tmp_path):
    from rnndoctor.treatments import EvalForNoGradPasses

    t = EvalForNoGradPasses()
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 8), nn.Dropout(0.5), nn.Linear(8, 2))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    modes = []
    model[1].register_forward_pre_hook(lambda m, a: modes.append((torch.is_grad_enabled(), m.training)))
    with rnndoctor.watch(model, out=tmp_path, summary=False, probes=[t, *DEFAULT_PROBES], strict=True):
        for _ in range(3):
            loss = F.cross_entropy(model(torch.randn(4, 3)), torch.randint(0, 2, (4,)))
            opt.zero_grad()
            loss.backward()
            opt.step()
            with torch.no_grad():
                model(torch.randn(4, 3))
    assert modes == [(True, True), (False, False)] * 3 and model.training and t.applied == 3


def test_seed_003s_hand_written_cell_gets_its_gate_biases_reset_in_a_trial(tmp_path):
    """Seed 003 (identity-initialised hand-written LSTM, gate biases ±10, NaN in the first
    forward): the run finds where the cell's gate biases live, and the trial's child, told
    that on its command line, resets them: the NaN is gone."""
    out = tmp_path / "run"
    proc = subprocess.run([sys.executable, "-m", "rnndoctor", "diagnose", str(ROOT / "fixtures" / "identity_lstm_nan.py"),
                           "--max-steps", "10", "--out", str(out), "--quiet", "--try-fixes", "--fail-on", "never"],
                          capture_output=True, text=True, cwd=tmp_path, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    trials = {t["treatment"]: t for t in json.loads((out / "findings.json").read_text())["trials"]}
    bias = trials["forget-bias-1"]
    assert bias["outcome"] == "worked" and bias["applied"] == 1, bias
    assert bias["before"]["loss_last"] is None and bias["after"]["loss_last"] is not None  # NaN before, finite after


def test_treatment_arguments_that_are_not_json_are_a_one_line_error(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "rnndoctor", "diagnose", str(ROOT / "fixtures" / "identity_lstm_nan.py"),
                           "--treat", "forget-bias-1", "--treat-args", "{nope", "--out", str(tmp_path / "r")],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr and "--treat-args" in proc.stderr


@pytest.mark.parametrize("make", [
    lambda o: torch.optim.lr_scheduler.LambdaLR(o, lambda s: min(1.0, (s + 1) / 5)),  # a warm-up
    lambda o: torch.optim.lr_scheduler.CosineAnnealingLR(o, 8, eta_min=0.01),
    lambda o: torch.optim.lr_scheduler.CyclicLR(o, 0.01, 0.1, step_size_up=3),
    lambda o: torch.optim.lr_scheduler.OneCycleLR(o, 0.1, total_steps=20),
    lambda o: torch.optim.lr_scheduler.SequentialLR(o, [torch.optim.lr_scheduler.LinearLR(o, 0.1, total_iters=3),
                                                        torch.optim.lr_scheduler.ExponentialLR(o, 0.9)], milestones=[3]),
    lambda o: torch.optim.lr_scheduler.ReduceLROnPlateau(o, patience=0, min_lr=0.02),
], ids=["warmup", "cosine", "cyclic", "onecycle", "sequential", "plateau"])
def test_the_learning_rate_scale_survives_the_scripts_scheduler(make):
    """A scheduler recomputes the rate from its own base rates at each step(): scaling only
    the optimizer's lr would last one step. Every rate it keeps is scaled once."""
    rates = []
    for treat in (False, True):
        p = nn.Parameter(torch.zeros(2))
        opt = torch.optim.SGD([p], lr=0.1, momentum=0.9)
        sched = make(opt)
        t = LearningRateUp()
        seen = []
        for step in range(12):
            if treat:
                t.before_update(opt)
            p.grad = torch.ones(2)
            opt.step()
            seen.append(opt.param_groups[0]["lr"])
            sched.step(1.0) if isinstance(sched, torch.optim.lr_scheduler.ReduceLROnPlateau) else sched.step()
        rates.append(seen)
    assert t.applied == 1
    assert rates[1] == pytest.approx([10 * r for r in rates[0]])
