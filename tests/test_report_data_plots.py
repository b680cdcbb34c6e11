"""The data plots (inputs, lengths, samples) on a real recording with every data problem; absent
without their signals; and no plot in the registry raises on an empty or damaged record."""

import ast
import random
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset

import rnndoctor
from rnndoctor.report import plots
from rnndoctor.report.figure import new_figure, to_markup
from rnndoctor.report.html import render_html
from rnndoctor.rundir import REPORT_FILE
from rnndoctor.run import Run
from rnndoctor.signals import CATALOGUE

T = 6  # padded length
DATA_FINDINGS = {"resampled-parameters", "inconsistent-labels", "duplicate-samples", "length-range-bug", "unnormalized-inputs"}


class Redrawn(Dataset):
    """Every data bug at once: ``__getitem__`` ignores its index (resampled-parameters) and draws
    a random label (inconsistent-labels) for a bit string of length 1..T-1 (randint's exclusive
    bound: never T, length-range-bug) from 31 possible ones (duplicate-samples), scaled by 50
    (unnormalized-inputs) and post-padded to T."""

    def __len__(self):
        return 64

    def __getitem__(self, i):
        n = random.randrange(1, T)
        x = torch.zeros(T, 1)
        x[:n, 0] = torch.randint(0, 2, (n,)).float() * 50
        x[n - 1, 0] = 50.0  # the last step is non-zero: the recorded length is n
        return x, torch.tensor(random.randrange(2))


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.lstm, self.head = nn.LSTM(1, 8, batch_first=True), nn.Linear(8, 2)

    def forward(self, x):
        return self.head(self.lstm(x)[0][:, -1])


@pytest.fixture(scope="module")
def recorded(tmp_path_factory) -> Path:
    """One real run (40 steps, a few seconds), recorded by watch() with its report written."""
    out = tmp_path_factory.mktemp("data-plots") / "run"
    state = random.getstate()
    random.seed(0)
    torch.manual_seed(0)
    model = Net()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    batches = (b for _ in range(10) for b in DataLoader(Redrawn(), batch_size=16, shuffle=True))
    try:
        with rnndoctor.watch(model, out=out, summary=False, strict=True, report="now"):
            for _, (x, y) in zip(range(40), batches):
                loss = F.cross_entropy(model(x), y)
                opt.zero_grad()
                loss.backward()
                opt.step()
    finally:
        random.setstate(state)
    return out


@pytest.fixture(scope="module")
def run(recorded) -> Run:
    return rnndoctor.load_run(recorded)


def without(run: Run, *names: str) -> Run:
    return Run(meta=run.meta, signals={k: v for k, v in run.signals.items() if k not in names})


def described(svg: str | None) -> str:
    """The plot's <title> (its alt text), asserting it is an SVG that has one."""
    assert svg is not None and svg.startswith("<svg"), (svg or "")[:80]
    m = re.search(r'<svg[^>]*\baria-label="([^"]+)"[^>]*>\s*<title>([^<]+)</title>', svg)
    assert m and m.group(1).strip() and m.group(1) == m.group(2), svg[:300]
    return m.group(1)


def test_every_data_finding_of_a_real_run_shows_its_plot(recorded, run):
    diagnosis = rnndoctor.diagnose(run)
    assert DATA_FINDINGS <= set(diagnosis.ids())
    page = (recorded / REPORT_FILE).read_text()
    cards = {m.group(1): m.group(0) for m in re.finditer(r'<article[^>]*data-finding="([^"]+)".*?</article>', page, re.S)}
    for f in diagnosis.findings:
        if f.id in DATA_FINDINGS:
            assert f.plots and all(name in plots.PLOTS for name in f.plots), f.id
            for name in f.plots:
                assert f'<figure data-plot="{name}">' in cards[f.id] and "<svg" in cards[f.id], (f.id, name)


def test_inputs_plot_shows_the_scale_and_the_rules_limit(run):
    svg = plots.render("inputs", run)
    assert "scale" in described(svg)
    assert "far from unit scale" in svg and "'lstm' input = model input" in svg  # one line set, two names
    assert plots.render("inputs", without(run, "inputs", "rnn_inputs")) is None
    assert described(plots.render("inputs", without(run, "rnn_inputs")))  # the model's input alone still draws


def test_inputs_plot_of_an_all_zero_input_says_so():
    rows = [{"step": s, "module": "lstm", "std": 0.0, "abs_max": 0.0, "feature_std_max": 0.0, "all_zero": 1, "frac_large": 0.0}
            for s in range(5)]
    svg = plots.render("inputs", Run(meta={}, signals={"rnn_inputs": pd.DataFrame(rows)}))
    assert described(svg) and "all zeros (std 0) in every sampled call" in svg


def test_lengths_plot_marks_the_padded_length_no_sequence_reaches(run):
    svg = plots.render("lengths", run)
    assert "length" in described(svg)
    assert f"none reaches T = {T} (longest {T - 1})" in svg and f"padded length T = {T}" in svg
    assert plots.render("lengths", without(run, "rnn_inputs")) is None
    no_hist = run["rnn_inputs"].drop(columns="length_hist")
    assert plots.render("lengths", Run(meta={}, signals={"rnn_inputs": no_hist})) is None


def test_samples_plot_shows_repeats_contradicting_targets_and_the_refetch(run):
    svg = plots.render("samples", run)
    assert "fingerprint" in described(svg)
    assert "input seen with 2+ targets" in svg and "indices fetched twice" in svg and "distinct of" in svg
    refetch_only = described(plots.render("samples", without(run, "samples")))
    assert refetch_only and "indices fetched twice" in plots.render("samples", without(run, "samples"))
    assert "fetched twice" not in plots.render("samples", without(run, "refetch"))
    assert plots.render("samples", without(run, "samples", "refetch")) is None


def test_the_scatter_stays_small_for_many_distinct_samples():
    rng = np.random.default_rng(0)
    n = 30_000
    samples = pd.DataFrame({"step": np.repeat(np.arange(n // 64 + 1), 64)[:n], "mode": "train",
                            "x1": rng.normal(size=n), "x2": rng.normal(size=n), "y": rng.integers(0, 40, n).astype(float)})
    svg = plots.render("samples", Run(meta={}, signals={"samples": samples}))
    assert described(svg) and "1000 of 30000 shown" in svg and len(svg) < 300_000


# ----------------------------------------------------------------------------- damaged records
#: what a hand-edited or torn record can still hold after load_run: ``step`` is always a whole
#: number and ``mode`` text (other rows are dropped), other keys are scalars, values any JSON
JUNK_VALUES = [None, "abc", float("nan"), [1.0, 2.0], {"k": 1}, -1, float("inf"), "", [[1, 2], [3]], 1e308, True]
JUNK_KEYS = [None, "abc", 1.5, True, -1, "", 1e308]


def damaged_runs(run: Run) -> dict[str, Run]:
    """Records as hand edits and crashes leave them; each must render (or draw nothing)."""
    def keys(name: str) -> tuple[str, ...]:
        return CATALOGUE[name].keys if name in CATALOGUE else ("step",)

    def junked(name: str, df: pd.DataFrame, in_keys: bool) -> pd.DataFrame:
        out = df.head(60).copy()
        for i, c in enumerate(out.columns):
            if c in ("step", "mode") or (c in keys(name)) != in_keys:
                continue
            junk = JUNK_KEYS if in_keys else JUNK_VALUES
            out[c] = pd.Series([junk[(i + j) % len(junk)] for j in range(len(out))], index=out.index, dtype=object)
        return out

    def odd_lists(df: pd.DataFrame) -> pd.DataFrame:
        out = df.copy()
        for c in out.columns:
            if out[c].map(lambda v: isinstance(v, (list, np.ndarray))).any():
                out[c] = [list(np.arange(j % 7, dtype=float)) if j % 3 else [float("nan")] * (j % 5) for j in range(len(out))]
        return out

    def nan_row(name: str) -> pd.DataFrame:
        spec = CATALOGUE[name]
        row = {c: None for c in spec.keys} | {c: np.nan for c in spec.values} | {"step": 0}
        return pd.DataFrame([row | ({"mode": "train"} if "mode" in spec.keys else {})])

    signals = run.signals
    return {
        "no signals": Run(meta={}),
        "empty tables": Run(meta={}, signals={n: pd.DataFrame() for n in CATALOGUE}),
        "columns, no rows": Run(meta={}, signals={n: pd.DataFrame(columns=[*s.keys, *s.values]) for n, s in CATALOGUE.items()}),
        "one row of NaN": Run(meta={}, signals={n: nan_row(n) for n in CATALOGUE}),
        "keys only": Run(meta={}, signals={n: df[[c for c in keys(n) if c in df]] for n, df in signals.items()}),
        "every other value missing": Run(meta={}, signals={n: df.drop(columns=[c for c in df.columns if c not in keys(n)][::2])
                                                           for n, df in signals.items()}),
        "junk values": Run(meta={}, signals={n: junked(n, df, in_keys=False) for n, df in signals.items()}),
        "junk keys": Run(meta={}, signals={n: junked(n, df, in_keys=True) for n, df in signals.items()}),
        "lists of other lengths": Run(meta={}, signals={n: odd_lists(df) for n, df in signals.items()}),
        "all NaN values": Run(meta={}, signals={n: df.assign(**{c: np.nan for c in df.columns if c not in keys(n)})
                                                for n, df in signals.items()}),
    }


@pytest.mark.filterwarnings("ignore::RuntimeWarning", "ignore::UserWarning")  # 1e308 and inf overflow on the way
def test_no_plot_raises_on_an_empty_or_damaged_record(run):
    raised = []
    for case, damaged in damaged_runs(run).items():
        for name in plots.PLOTS:
            try:
                markup = plots.render(name, damaged)
            except Exception as exc:  # noqa: BLE001  (collected: the assertion lists every plot and case)
                raised.append(f"{name} on {case}: {type(exc).__name__}: {exc}")
                continue
            assert markup is None or markup.startswith(("<svg", "<img")), (case, name)
        assert "<html" in render_html(damaged, rnndoctor.diagnose(damaged)).lower()
    assert not raised, "\n".join(raised)


# ----------------------------------------------------------------------------- structure
def test_alt_text_is_escaped_into_the_svg():
    fig, ax = new_figure()
    ax.plot([0, 1], [0, 1])
    svg = to_markup(fig, 'module "<script>" & co')
    assert 'aria-label="module &quot;&lt;script&gt;&quot; &amp; co"' in svg and "<title>module &quot;&lt;script&gt;" in svg
    assert "<script" not in svg


def test_plot_modules_import_the_shared_helpers_not_each_other():
    report = Path(plots.__file__).parent
    for module in ("figure", "plots_rnn", "plots_data"):
        tree = ast.parse((report / f"{module}.py").read_text())
        imported = {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.level == 1}
        assert "plots" not in imported, module
