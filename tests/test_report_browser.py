"""report.html in a real browser: headless Chromium opens the reports of real fixture runs.

Asserts what a reader would notice: no console errors, nothing fetched but the file itself,
every finding card and every plot present with a non-zero size, nothing wider than the
window. Screenshots go to a tmp dir (printed); with RNNDOCTOR_SCREENSHOT=1 the top of the
or_mse_stuck report is also saved to docs/report.png for the README.

By default three fixtures run (a stuck run, a NaN run, a healthy one);
RNNDOCTOR_BROWSER_FIXTURES=all opens the report of every fixture in checks/.
"""

import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from cdp import Browser, chromium_path
from rnndoctor.checks import load_check
from rnndoctor.finding import finding_from_dict
from rnndoctor.report import plots
from rnndoctor.rundir import REPORT_FILE
from rnndoctor.run import load_run

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = chromium_path()
DEFAULT = ("or_mse_stuck", "identity_lstm_nan", "parity_healthy")
NAMES = (
    tuple(sorted(p.stem for p in (ROOT / "checks").glob("*.toml")))
    if os.environ.get("RNNDOCTOR_BROWSER_FIXTURES") == "all"
    else DEFAULT
)
WIDTH = 1200

pytestmark = [
    pytest.mark.skipif(CHROMIUM is None, reason="no chromium (apt-get install chromium; .ci/run installs it)"),
    pytest.mark.skipif(__import__("importlib").util.find_spec("websocket") is None, reason="websocket-client missing (pip install -e .[test])"),
]


def diagnose_fixture(name: str, out: Path) -> Path:
    check = load_check(ROOT / "checks" / f"{name}.toml")
    script = check.script.resolve().relative_to(ROOT)  # as a user types it (and shown so in docs/report.png)
    cmd = [sys.executable, "-m", "rnndoctor", "diagnose", str(script), "--out", str(out / name), "--quiet"]
    if check.max_steps:
        cmd += ["--max-steps", str(check.max_steps)]
    proc = subprocess.run([*cmd, "--", *check.args], capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert proc.returncode in (0, 1), proc.stderr
    return out / name


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    out = tmp_path_factory.mktemp("browser-runs")
    with ThreadPoolExecutor(max_workers=2) as pool:
        return dict(zip(NAMES, pool.map(lambda n: diagnose_fixture(n, out), NAMES)))


@pytest.fixture(scope="module")
def browser():
    b = Browser(CHROMIUM)
    yield b
    b.close()


PLOT_BOXES = """[...document.querySelectorAll('[data-plot]')].map(f => {
  const g = f.querySelector('svg, img'); const r = g ? g.getBoundingClientRect() : {width: 0, height: 0};
  const card = f.closest('[data-finding]');
  return [card ? card.dataset.finding : null, f.dataset.plot, r.width, r.height];
})"""


def expected_plots(run_dir: Path) -> tuple[list[tuple[str | None, str]], list[str]]:
    """(card id, plot) pairs the page must show, from the run and findings.json, not the page."""
    import json

    run = load_run(run_dir)
    findings = [finding_from_dict(f) for f in json.loads((run_dir / "findings.json").read_text())["findings"]]
    drawn = {name: plots.render(name, run) is not None for name in plots.PLOTS}
    pairs = [(f.id, p) for f in findings for p in f.plots if drawn.get(p)]
    pairs += [(None, p) for p in plots.PLOTS if drawn[p]]
    return pairs, [f.id for f in findings]


@pytest.mark.parametrize("name", NAMES)
def test_fixture_report_in_chromium(name, runs, browser, tmp_path_factory):
    run_dir = runs[name]
    url = (run_dir / REPORT_FILE).resolve().as_uri()
    browser.open(url, width=WIDTH)
    events = browser.events

    requests = [e["params"]["request"]["url"] for e in events if e.get("method") == "Network.requestWillBeSent"]
    assert [u for u in requests if u != url and not u.startswith("data:")] == []
    assert [e for e in events if e.get("method") == "Network.loadingFailed"] == []
    console = [e["params"] for e in events if e.get("method") == "Runtime.consoleAPICalled" and e["params"]["type"] in ("error", "assert", "warning")]
    logged = [e["params"]["entry"] for e in events if e.get("method") == "Log.entryAdded" and e["params"]["entry"]["level"] in ("error", "warning")]
    thrown = [e["params"] for e in events if e.get("method") == "Runtime.exceptionThrown"]
    assert console == [] and logged == [] and thrown == []

    pairs, finding_ids = expected_plots(run_dir)
    assert browser.evaluate("[...document.querySelectorAll('[data-finding]')].map(c => c.dataset.finding)") == finding_ids
    boxes = browser.evaluate(PLOT_BOXES)
    assert [(card, plot) for card, plot, _, _ in boxes] == pairs
    assert all(w > 200 and h > 80 for _, _, w, h in boxes), boxes
    # the first screen leads with the cause and draws its chain; every chip leads to its card
    chains = browser.evaluate("""[...document.querySelectorAll('[data-chain]')].map(c => [c.dataset.chain,
        [...c.querySelectorAll('[data-explained]')].map(e => e.dataset.explained), c.getBoundingClientRect().bottom])""")
    verdict = json.loads((run_dir / "findings.json").read_text())["verdict"]
    assert [(c, e) for c, e, _ in chains] == [(c["id"], c["explains_ids"]) for c in verdict["causes"]]
    assert all(bottom < 900 for _, _, bottom in chains), chains
    assert browser.evaluate("[...document.querySelectorAll('.verdict a')].every(a => document.querySelector(a.getAttribute('href')))")
    assert browser.evaluate("document.scripts.length") == 0
    assert browser.evaluate("document.documentElement.scrollWidth") <= WIDTH

    shots = tmp_path_factory.getbasetemp() / "screenshots"
    path = browser.screenshot(shots / f"{name}.png")
    print(f"\n{name}: {len(finding_ids)} findings, {len(boxes)} plots, screenshot {path}")
    if name == "or_mse_stuck" and os.environ.get("RNNDOCTOR_SCREENSHOT") == "1":
        browser.screenshot(ROOT / "docs" / "report.png", full_page=False, height=1500)
