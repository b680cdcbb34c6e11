"""The package's layers point one way: no import cycle between its modules (imports made at
module level; the few made inside a function to stay lazy are not edges), and the
conductor's files stay small."""

import ast
from pathlib import Path

import rnndoctor

PACKAGE = Path(rnndoctor.__file__).parent


def module_name(path: Path) -> str:
    rel = path.relative_to(PACKAGE.parent).with_suffix("")
    parts = list(rel.parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def resolve(current: str, is_package: bool, node: ast.ImportFrom) -> list[str]:
    if node.level:
        base = current.split(".")
        base = base if is_package else base[:-1]
        base = base[: len(base) - (node.level - 1)]
        prefix = ".".join(base + ([node.module] if node.module else []))
    else:
        prefix = node.module or ""
    return [f"{prefix}.{a.name}" for a in node.names] + [prefix]


def graph() -> dict[str, set[str]]:
    modules = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    edges: dict[str, set[str]] = {m: set() for m in modules}
    for name, path in modules.items():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in tree.body:  # module level only
            if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
                continue
            found: list[str] = []
            if isinstance(node, ast.ImportFrom):
                candidates = resolve(name, path.name == "__init__.py", node)
                # ``from . import x`` is x; ``from .a import f`` is a
                found = [c for c in candidates[:-1] if c in modules] or [candidates[-1]]
            elif isinstance(node, ast.Import):
                found = [a.name for a in node.names]
            edges[name] |= {f for f in found if f in modules and f != name}
    return edges


def cycle(edges: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(n: str) -> list[str] | None:
        state[n] = 1
        stack.append(n)
        for m in sorted(edges[n]):
            if m == "rnndoctor" or (n.startswith(m + ".") and m in edges):
                continue  # a submodule reaching its own package's __init__ is Python's normal order
            if state.get(m) == 1:
                return stack[stack.index(m):] + [m]
            if m not in state and (found := visit(m)):
                return found
        stack.pop()
        state[n] = 2
        return None

    for n in sorted(edges):
        if n not in state and (found := visit(n)):
            return found
    return None


def test_no_import_cycle():
    found = cycle(graph())
    assert found is None, " -> ".join(found or [])


def test_the_version_needs_no_package_import():
    assert not graph()["rnndoctor._version"]


def test_the_watch_stays_a_conductor():
    lines = len((PACKAGE / "watch.py").read_text().splitlines())
    assert lines <= 300, f"watch.py has {lines} lines: a probe's work belongs in probes/"
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ClassDef):
                methods = [n for n in node.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))]
                assert len(methods) <= 20, f"{path.name}:{node.name} has {len(methods)} methods"
