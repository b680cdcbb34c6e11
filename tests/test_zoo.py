"""The zoo (zoo/, bench/zoo.py): every program's docstring declares its bugs in the format
the scorer reads, and every patch applies exactly once; a small subset is scored through
``rnndoctor diagnose`` here (the whole zoo is a benchmark: ``python bench/zoo.py``)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

from rnndoctor.rules import all_rules

ROOT = Path(__file__).resolve().parent.parent
spec = importlib.util.spec_from_file_location("zoo_scorer", ROOT / "bench" / "zoo.py")
zoo = importlib.util.module_from_spec(spec)
sys.modules["zoo_scorer"] = zoo
spec.loader.exec_module(zoo)

PROGRAMS = sorted(p for p in (ROOT / "zoo").glob("*.py") if not p.name.startswith("_"))
KNOWN = {r.id for r in all_rules()}


@pytest.mark.parametrize("path", PROGRAMS, ids=[p.stem for p in PROGRAMS])
def test_a_zoo_program_declares_real_bugs_in_the_format(path: Path) -> None:
    variants = zoo.variants(path)
    healthy, bugs = variants[0], variants[1:]
    assert healthy.bug == "healthy" and len(bugs) >= 2
    text = path.read_text(encoding="utf-8")
    assert "Upstream: http" in text and "Licence:" in text
    for v in bugs:
        assert v.expect, f"{v.bug}: no Expect"
        assert set(v.expect + v.allow) <= KNOWN, f"{v.bug}: unknown ids {set(v.expect + v.allow) - KNOWN}"
        assert v.source != healthy.source
        compile(v.source, f"{path.name}:{v.bug}", "exec")


def test_the_scorer_finds_a_bug_and_keeps_a_healthy_program_free_of_errors(tmp_path: Path) -> None:
    """The airline forecaster (a few seconds): healthy, and its targets shuffled."""
    picked = [v for v in zoo.variants(ROOT / "zoo" / "airline_lstm_forecast.py") if v.bug in ("healthy", "targets-shuffled")]
    outcomes = [zoo.run(v, tmp_path, bare=False, timeout=300) for v in picked]
    healthy, broken = outcomes
    assert not healthy.error and not healthy.errors and not healthy.false, healthy.reported
    assert not broken.missed, broken.reported
