"""Layering: rules judge a recorded run and never reach into the recording machinery; the
report draws from the record and the rules' analysis, never from the probes.

Checked on the source with ``ast`` (imports anywhere in a module, function-level ones
included; absolute and relative)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "rnndoctor"

#: package -> modules it must not import (a module's submodules included)
FORBIDDEN = {
    "rules": ("rnndoctor.probes", "rnndoctor.watch", "rnndoctor.recorder", "rnndoctor.runner"),
    "report": ("rnndoctor.probes",),
}


def imported_modules(source: str, module: str, is_package: bool = False) -> set[str]:
    """Every module ``source`` (the text of ``module``) may import, as absolute dotted names;
    for ``from X import a`` both ``X`` and ``X.a`` (``a`` may be a submodule)."""
    package = module if is_package else module.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1])
                target = f"{base}.{node.module}" if node.module else base
            else:
                target = node.module or ""
            found.add(target)
            found.update(f"{target}.{alias.name}" for alias in node.names)
    return found


def modules_of(subpackage: str) -> list[tuple[str, Path]]:
    root = PACKAGE / subpackage
    out = []
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(PACKAGE.parent).with_suffix("")
        out.append((".".join(rel.parts), path))
    return out


def violations(subpackage: str) -> list[str]:
    bad = []
    for module, path in modules_of(subpackage):
        is_package = path.name == "__init__.py"
        name = module.removesuffix(".__init__")
        for target in sorted(imported_modules(path.read_text(encoding="utf-8"), name, is_package)):
            if any(target == f or target.startswith(f + ".") for f in FORBIDDEN[subpackage]):
                bad.append(f"{path.relative_to(PACKAGE.parent)} imports {target}")
    return bad


@pytest.mark.parametrize("subpackage", sorted(FORBIDDEN))
def test_layer_imports(subpackage):
    assert modules_of(subpackage), f"no modules found under rnndoctor/{subpackage}"
    bad = violations(subpackage)
    assert not bad, f"rnndoctor/{subpackage} must not import {', '.join(FORBIDDEN[subpackage])}:\n" + "\n".join(bad)


@pytest.mark.parametrize(
    "source",
    [
        "from ..probes.through_time import horizon",
        "from .. import probes",
        "from ..probes import through_time",
        "import rnndoctor.probes.through_time",
        "from rnndoctor.probes import through_time",
        "def f():\n    from .. import watch\n",
        "from ..recorder import Recorder",
        "from rnndoctor import runner",
    ],
)
def test_the_check_sees_every_import_form(source):
    found = imported_modules(source, "rnndoctor.rules.recurrence")
    assert any(t == f or t.startswith(f + ".") for t in found for f in FORBIDDEN["rules"]), found


def test_relative_imports_resolve_from_a_package_init():
    assert "rnndoctor.probes" in imported_modules("from ..probes import x", "rnndoctor.rules", is_package=True)
    assert "rnndoctor.probes" in imported_modules("from .. import probes", "rnndoctor.rules", is_package=True)
    assert "rnndoctor.rules.registry" in imported_modules("from .registry import rule", "rnndoctor.rules", is_package=True)
