"""report.html: escaping of user text, odd runs (crashed, healthy, all-NaN, empty, 20 000 steps), plots."""

import subprocess
import sys
import time
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import rnndoctor
from rnndoctor.finding import Diagnosis, Finding, Severity
from rnndoctor.report import plots
from rnndoctor.report.html import render_html, write_html
from rnndoctor.rundir import REPORT_FILE
from rnndoctor.run import Run
from synth import classification_run

EVIL = "<script>alert(1)</script>"
ROOT = Path(__file__).resolve().parent.parent


class Page(HTMLParser):
    """Every start tag and attribute of a page, as a browser's tokenizer would see them."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict]] = []
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))

    def count(self, attr: str) -> int:
        return sum(attr in a for _, a in self.tags)

    def values(self, attr: str) -> list[str]:
        return [a[attr] for _, a in self.tags if attr in a]


def assert_inert(text: str) -> Page:
    """No script element, no event-handler attribute, no javascript: URL, no external reference."""
    page = Page(text)
    assert "<script" not in text.lower()
    assert not [t for t, _ in page.tags if t in ("script", "iframe", "object", "embed", "base")]
    for tag, attrs in page.tags:
        assert not [k for k in attrs if k.startswith("on")], (tag, attrs)
        for k in ("href", "src", "xlink:href"):
            v = (attrs.get(k) or "").strip().lower()
            assert not v or v.startswith(("#", "data:")), (tag, k, v)
    ids = page.values("id")
    assert len(ids) == len(set(ids)), "duplicate ids: the same SVG embedded twice without scoping"
    return page


class EvilNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.add_module(EVIL, nn.LSTM(1, 8, batch_first=True))
        self.out = nn.Linear(8, 2)

    def forward(self, x):
        o, _ = getattr(self, EVIL)(x)
        return self.out(o[:, -1])


def test_user_text_is_escaped_and_a_run_crashed_at_step_3_still_renders(tmp_path):
    torch.manual_seed(0)
    model = EvilNet()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(RuntimeError, match="boom"):
        with rnndoctor.watch(model, out=tmp_path / "r", summary=False) as run:
            for step in range(10):
                x = torch.randn(8, 5, 1)
                if step == 2:
                    with torch.no_grad():
                        getattr(model, EVIL).weight_hh_l0.fill_(float("inf"))
                if step == 3:
                    raise RuntimeError(f"{EVIL} boom <img src=x onerror=alert(2)>")
                loss = F.cross_entropy(model(x), (x.sum((1, 2)) > 0).long())
                opt.zero_grad()
                loss.backward()
                opt.step()
    assert run.steps == 3
    assert_inert((tmp_path / "r" / REPORT_FILE).read_text(encoding="utf-8"))  # the page standing in for it, too
    text = run.wait_report(timeout=300).read_text(encoding="utf-8")  # drawn by its own process
    page = assert_inert(text)
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in text  # shown, as text
    assert "boom &lt;img src=x onerror=alert(2)&gt;" in text
    assert "crashed" in text and "RuntimeError" in text
    assert page.count("data-finding") == len(run.findings) >= 1
    assert "non-finite" in run.diagnosis.ids()


def test_script_path_and_arguments_are_escaped():
    run = classification_run(120)
    run = Run(
        meta={
            "status": "crashed",
            "steps": 120,
            "script": f"train{EVIL}.py",
            "script_args": ["--name", f'"><svg onload=alert(3)>{EVIL}'],
            "exception": {"type": "ValueError", "message": EVIL, "traceback": f"Traceback\n  {EVIL}\n"},
        },
        signals=dict(run.signals),
    )
    finding = Finding(
        id="stuck-at-chance", severity=Severity.ERROR, title=EVIL, explanation=EVIL, fix=EVIL,
        evidence={"module": EVIL, "nested": {"k": EVIL}}, where={EVIL: EVIL}, plots=("loss", "no-such-plot"),
    )
    text = render_html(run, Diagnosis(findings=(finding,)))
    assert_inert(text)
    assert "onload=alert" not in text.replace("&lt;svg onload=alert", "")
    assert text.count("&lt;script&gt;") >= 8


def test_a_run_without_findings_and_an_empty_run(tmp_path):
    run = classification_run(200, acc=np.linspace(0.5, 1.0, 200), loss=np.linspace(0.7, 0.05, 200))
    page = assert_inert(write_html(run, Diagnosis(findings=()), tmp_path / REPORT_FILE).read_text())
    assert page.count("data-finding") == 0 and page.count("data-healthy") == 1
    assert {"loss", "accuracy", "balance"} <= set(page.values("data-plot"))
    empty = assert_inert(render_html(Run(meta={}), Diagnosis(findings=())))
    assert empty.count("data-plot") == 0


def test_a_run_with_only_nan_losses():
    run = classification_run(80, loss=float("nan"))
    diagnosis = rnndoctor.diagnose(run, strict=True)
    assert "non-finite" in diagnosis.ids()
    page = assert_inert(render_html(run, diagnosis))
    assert page.values("data-plot").count("nonfinite") == 2  # its card and "All signals"
    assert "every loss value was NaN/Inf" in render_html(run, diagnosis)


def long_run(n: int = 20_000, n_params: int = 12) -> Run:
    """A synthetic 20 000-step record shaped like watch()'s: every signal, sampled where watch() samples."""
    rng = np.random.default_rng(0)
    steps = np.arange(n)
    loss = 0.693 + 0.02 * rng.standard_normal(n)
    loss[12_345] = np.nan
    grad = np.abs(1 + 0.3 * rng.standard_normal(n))
    grad[15_000] = 80.0
    frames = {
        "steps": pd.DataFrame({
            "step": steps, "mode": "train", "loss": loss, "loss_finite": np.isfinite(loss).astype(int),
            "loss_kind": "cross_entropy", "loss_calls": 1, "n_classes": 2, "correct": rng.binomial(64, 0.5, n),
            "total": 64, "grad_norm": grad, "lr": 0.01, "time": steps * 0.01,
        }),
        "predictions": pd.DataFrame({
            "step": np.repeat(steps, 2), "mode": "train", "cls": np.tile([0, 1], n),
            "n_pred": rng.binomial(64, 0.5, 2 * n), "n_label": np.tile([32, 32], n),
        }),
    }
    names = [f"lstm.weight_hh_l{i // 2}" if i % 2 else f"lstm.bias_ih_l{i // 2}" for i in range(n_params)]
    frames["params"] = pd.DataFrame({
        "step": np.repeat(steps, n_params), "param": np.tile(names, n),
        "grad_norm": np.abs(rng.lognormal(0, 1, n * n_params)), "grad_none": 0,
    })
    sampled = steps[(steps < 20) | (steps % 5 == 0)]
    frames["updates"] = pd.DataFrame({
        "step": np.repeat(sampled, n_params), "param": np.tile(names, len(sampled)),
        "weight_norm": 5.0, "update_ratio": np.abs(rng.lognormal(-7, 0.5, len(sampled) * n_params)),
        "numel": 100, "ndim": 2,
    })
    frames["nonfinite"] = pd.DataFrame({"step": [12_345], "module": ["lstm"], "call": [0], "t": [17]})
    replayed = steps[(steps < 3) | (steps % 100 == 0)]
    frames["gates"] = pd.DataFrame([
        {"step": s, "module": "lstm", "layer": 0, "direction": 0, "gate": g, "frac_low": 0.1, "frac_high": 0.2,
         "frac_saturated": 0.3, "mean": 0.5, "p10": 0.1, "p50": 0.5, "p90": 0.9}
        for s in replayed for g in "ifgo"
    ])
    frames["cell"] = pd.DataFrame([
        {"step": s, "module": "lstm", "layer": 0, "direction": 0, "c_norm": list(np.linspace(0.5, 2.0, 50)), "forget_bias": [1.0] * 8}
        for s in replayed
    ])
    profiled = steps[(steps < 10) | (steps % 10 == 0)]
    frames["time_grad"] = pd.DataFrame([
        {"step": s, "backward_step": s, "module": "lstm", "packed": 0, "grad_norm": list(0.5 ** np.arange(50)[::-1])}
        for s in profiled
    ])
    frames["activations"] = pd.DataFrame([
        {"step": s, "module": m, "calls": 50, "numel": 1600, "mean": 0.0, "std": 1.0, "abs_max": 10.0,
         "frac_large": share, "frac_zero": 0.0, "frac_nonfinite": 0.0}
        for s in (0, 1, 2) for m, share in (("lstm", 0.2), ("head", 0.9))
    ])
    data = steps[(steps < 50) | (steps % 100 == 0)]
    scale = {"abs_max": 3.0, "abs_mean": 0.8, "std": 1.0, "feature_std_max": 1.2, "frac_large": 0.0, "all_zero": 0}
    frames["inputs"] = pd.DataFrame([{"step": s, "mode": "train", "module": "model", **scale} for s in data])
    frames["rnn_inputs"] = pd.DataFrame([
        {"step": s, "module": "lstm", "packed": 0, "seq_len": 50, "length_hist": [0.0] * 30 + [3.0] * 20 + [4.0], "hx_given": 0, **scale}
        for s in data
    ])
    fingerprints = rng.integers(0, 3000, len(data) * 64).astype(float)
    frames["samples"] = pd.DataFrame({"step": np.repeat(data, 64), "mode": "train", "x1": fingerprints,
                                      "x2": fingerprints * 1.3 + np.sin(fingerprints), "y": fingerprints % 2})
    frames["refetch"] = pd.DataFrame([{"index": i, "same_input": 1, "same_label": 1, "dataset": "D", "step": 0} for i in range(8)])
    return Run(meta={"status": "completed", "steps": n, "wall_s": 321.0, "script": "long.py"}, signals=frames)


def test_a_20000_step_run_renders_small_and_fast(tmp_path):
    run = long_run()
    diagnosis = rnndoctor.diagnose(run, strict=True)
    t0 = time.perf_counter()
    path = write_html(run, diagnosis, tmp_path / REPORT_FILE)
    seconds = time.perf_counter() - t0
    size = path.stat().st_size
    print(f"\n20 000-step report: {size / 1e6:.2f} MB, rendered in {seconds:.2f} s, findings {diagnosis.ids()}")
    page = assert_inert(path.read_text())
    assert size < 5_000_000 and seconds < 10
    assert set(page.values("data-plot")) >= set(plots.PLOTS)


def test_every_plot_downsamples_long_series():
    run = long_run()
    for name in plots.PLOTS:
        svg = plots.render(name, run)
        assert svg is not None and svg.startswith("<svg") and len(svg) < 600_000, (name, len(svg or ""))


def test_plots_return_none_without_their_signal_and_unknown_names_are_ignored():
    empty = Run(meta={})
    assert all(plots.render(name, empty) is None for name in plots.PLOTS)
    assert plots.render("gates", classification_run(50)) is None


def test_adding_a_plot_is_one_registry_entry_and_a_broken_plot_costs_only_itself(monkeypatch):
    def broken(run):
        raise ValueError("bad data")

    monkeypatch.setitem(plots.PLOTS, "gates", plots.PlotSpec("Gate saturation", plots.PLOTS["loss"].draw))
    monkeypatch.setitem(plots.PLOTS, "lengths", plots.PlotSpec("Sequence lengths", broken))
    run = classification_run(60)
    f = Finding(id="x", severity=Severity.WARNING, title="t", explanation="e", fix="f", plots=("gates", "lengths"))
    text = render_html(run, Diagnosis(findings=(f,)))
    page = assert_inert(text)
    assert page.values("data-plot").count("gates") == 2
    assert "lengths" not in page.values("data-plot") and "could not draw: ValueError: bad data" in text


def test_label_keeps_user_text_literal_for_matplotlib():
    assert plots.label("a$x$b") == r"a\$x\$b"
    assert plots.label("_hidden.weight").strip() == "_hidden.weight" and not plots.label("_h").startswith("_")


def test_report_command_rewrites_report_html(tmp_path):
    model = nn.Linear(3, 2)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with rnndoctor.watch(model, out=tmp_path / "r", summary=False):
        for _ in range(5):
            x = torch.randn(4, 3)
            loss = F.cross_entropy(model(x), torch.zeros(4, dtype=torch.long))
            opt.zero_grad()
            loss.backward()
            opt.step()
    html = tmp_path / "r" / REPORT_FILE
    assert html.is_file()
    html.unlink()
    p = subprocess.run([sys.executable, "-m", "rnndoctor", "report", str(tmp_path / "r")], capture_output=True, text=True, cwd=ROOT)
    assert p.returncode == 0, p.stderr
    assert html.is_file() and f"details: {html}" in p.stderr


def test_recurrence_plots_render_from_a_real_run(tmp_path):
    import torch
    import torch.nn.functional as F
    from torch import nn

    import rnndoctor
    from rnndoctor.report.plots import render

    torch.manual_seed(0)
    lstm, head = nn.LSTM(1, 8, batch_first=True), nn.Linear(8, 2)
    model = nn.ModuleDict({"lstm": lstm, "head": head})
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with rnndoctor.watch(model, out=tmp_path / "r", summary=False, strict=True, report="now"):
        for _ in range(4):
            x = torch.randn(8, 12, 1)
            loss = F.cross_entropy(head(lstm(x)[0][:, -1]), torch.randint(0, 2, (8,)))
            opt.zero_grad(); loss.backward(); opt.step()
    run = rnndoctor.load_run(tmp_path / "r")
    for name in ("gates", "cell_norm", "time_grad"):
        assert render(name, run) is not None, name
    assert "horizon:" in render("time_grad", run)
    page = (tmp_path / "r" / "report.html").read_text()
    assert "Gradient reaching each time step" in page and "Cell state norm over time" in page


def test_sampled_gradient_norms_are_not_drawn_as_non_finite():
    """After the dense start gradient norms are sampled: the steps between have no value,
    which the gradient plot must not mark as non-finite; a recorded Inf still is."""
    n, names = 140, ["w", "b"]
    recorded = [s for s in range(n) if s < 100 or s % 4 == 0]
    grad = [1.0 if s in recorded else float("nan") for s in range(n)]
    steps = pd.DataFrame({"step": range(n), "mode": "train", "loss": 0.69, "loss_finite": 1, "grad_norm": grad})
    params = pd.DataFrame({"step": np.repeat(recorded, 2), "param": names * len(recorded), "grad_norm": 1.0, "grad_none": 0})
    quiet = Run(meta={}, signals={"steps": steps, "params": params})
    assert "non-finite" not in plots.plot_grad_norm(quiet)
    steps.loc[120, "grad_norm"] = float("inf")
    assert "non-finite" in plots.plot_grad_norm(Run(meta={}, signals={"steps": steps, "params": params}))
