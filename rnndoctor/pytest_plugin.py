"""pytest plugin (registered through the ``pytest11`` entry point).

Gives tests a ``rnndoctor_watch`` fixture: ``with rnndoctor_watch(model) as run: <train>``,
then ``run.assert_healthy()``, ``run.assert_found("stuck-at-chance")`` or
``run.assert_not_found("non-finite")``. Reports go under ``--rnndoctor-out`` (default: a
per-test temporary directory).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Callable

import pytest


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("rnndoctor")
    group.addoption("--rnndoctor-out", default=None, help="directory for rnndoctor run records and reports")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "rnndoctor(out=None, **watch_options): options for the rnndoctor_watch fixture")


@pytest.fixture
def rnndoctor_watch(request: pytest.FixtureRequest, tmp_path: Path) -> Callable[..., Any]:
    """Factory: ``rnndoctor_watch(model=None, **options)`` returns a ``Watch`` to use as ``with``."""
    from .watch import Watch

    base = request.config.getoption("--rnndoctor-out")
    marker = request.node.get_closest_marker("rnndoctor")
    marker_opts = dict(marker.kwargs) if marker else {}
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", request.node.nodeid)[-120:]
    counter = {"n": 0}

    def make(model: Any = None, **options: Any) -> Watch:
        counter["n"] += 1
        opts = {**marker_opts, **options}
        out = opts.pop("out", None)
        if out is None:
            root = Path(base) if base else tmp_path / "rnndoctor"
            out = root / (safe if counter["n"] == 1 else f"{safe}-{counter['n']}")
        opts.setdefault("summary", False)
        return Watch(model, out=out, **opts)

    return make
