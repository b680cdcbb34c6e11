"""Fixtures of the fault matrix (the helpers are in harness.py)."""

from pathlib import Path

import pytest
from harness import Cli


@pytest.fixture
def cli(tmp_path: Path) -> Cli:
    return Cli(tmp_path)
