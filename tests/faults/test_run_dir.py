"""Fault matrix: ``rnndoctor report`` on a damaged run directory.

Run directories are shared as CI artifacts and edited by hand. Whatever they hold, ``report``
never shows a traceback of ours: a record that is damaged but usable is loaded with what it
holds and one note line (terminal, report.html, findings.json) says what was left out; a run
directory that cannot be read, or a report that cannot be written, is one
``rnndoctor: error: ...`` line and exit 2.

One real run is recorded per module (``recorded``); every cell damages its own copy.
"""

from __future__ import annotations

import json
import os
import random
import shutil
from pathlib import Path
from typing import Any, Callable

import pytest
from harness import Cli, Result

NOTE = "damaged record"  # the words that open the one note line about what loading left out
AS_ROOT = getattr(os, "geteuid", lambda: -1)() == 0
needs_non_root = pytest.mark.skipif(AS_ROOT, reason="root reads and writes whatever the file modes say")


@pytest.fixture(scope="module")
def recorded(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One real run of the issue's script (about 5 s), shared by every cell of the module."""
    home = tmp_path_factory.mktemp("recorded")
    cli = Cli(home)
    cli.script()
    result = cli.run("diagnose", "t.py", "--out", "run", "--quiet")
    assert result.returncode == 0, result.output
    return home / "run"


@pytest.fixture
def run_dir(recorded: Path, cli: Cli) -> Path:
    return Path(shutil.copytree(recorded, cli.cwd / "run"))


# ----------------------------------------------------------------------------- helpers
def lines_of(run: Path, signal: str) -> list[bytes]:
    return (run / "signals" / f"{signal}.jsonl").read_bytes().splitlines(keepends=True)


def rewrite_row(run: Path, signal: str, index: int, **changes: Any) -> int:
    """Change one row of a signal file in place; the file's line count."""
    lines = lines_of(run, signal)
    row = json.loads(lines[index])
    row.update(changes)
    lines[index] = (json.dumps(row) + "\n").encode()
    (run / "signals" / f"{signal}.jsonl").write_bytes(b"".join(lines))
    return len(lines)


def append(run: Path, signal: str, data: bytes) -> int:
    """Append raw bytes (one or more lines) to a signal file; its line count afterwards."""
    with open(run / "signals" / f"{signal}.jsonl", "ab") as f:
        f.write(data)
    return len(lines_of(run, signal))


def note_lines(result: Result) -> list[str]:
    return [line for line in result.stderr.splitlines() if NOTE in line]


def assert_loaded_with_note(cli: Cli, result: Result, expected: str) -> None:
    """Exit 0, every output rewritten, and ONE note line that says ``expected``."""
    assert result.returncode == 0, result.output
    notes = note_lines(result)
    assert len(notes) == 1 and expected in notes[0], result.output
    assert any(expected in n for n in cli.findings("run")["run"]["load_notes"])
    html = (cli.cwd / "run" / "report.html").read_text(encoding="utf-8")
    assert NOTE in html and expected in html


def assert_one_line_error(result: Result) -> None:
    assert result.returncode == 2, result.output
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("rnndoctor: error: "), result.output
    assert not result.stdout


def assert_rules_judged(cli: Cli) -> None:
    """The damage cost no rule its judgment (no crash, the steps signal still there)."""
    skipped = cli.findings("run")["skipped"]
    assert not [s for s in skipped if "crashed" in s["reason"] or "no steps" in s["reason"]], skipped


# ----------------------------------------------------------------------------- damaged signals
def random_bytes(run: Path) -> str:
    (run / "signals" / "steps.jsonl").write_bytes(random.Random(0).randbytes(20_000))
    return "signals/steps.jsonl: "


def invalid_utf8_mid_file(run: Path) -> str:
    lines = lines_of(run, "steps")
    lines[10] = b'{"step": 10, "mode": "train", "loss": "\xff\xfe\x80"}\n'
    (run / "signals" / "steps.jsonl").write_bytes(b"".join(lines))
    return f"signals/steps.jsonl: 1 of {len(lines)} lines"


def nul_filled(run: Path) -> str:
    (run / "signals" / "params.jsonl").write_bytes(b"\0" * 100_000)
    return "signals/params.jsonl: 1 of 1 line"


def huge_single_line(run: Path) -> str:
    n = append(run, "steps", b"x" * (65 << 20))  # longer than any row is allowed to be
    return f"signals/steps.jsonl: 1 of {n} lines"


def deeply_nested_line(run: Path) -> str:
    n = append(run, "steps", b"[" * 100_000 + b"\n")
    return f"signals/steps.jsonl: 1 of {n} lines"


def step_is_text(run: Path) -> str:
    n = append(run, "steps", b'{"step": "x", "mode": "train", "loss": 0.5}\n')
    return f"signals/steps.jsonl: 1 of {n} lines"


def row_is_a_list(run: Path) -> str:
    n = append(run, "steps", b"[1, 2, 3]\n")
    return f"signals/steps.jsonl: 1 of {n} lines"


def loss_is_an_object(run: Path) -> str:
    """A plain object (kept: rules read it as a missing value) and a broken packed array
    (unreadable: it cannot be decoded)."""
    rewrite_row(run, "steps", 10, loss={"a": 1})
    n = rewrite_row(run, "steps", 11, loss={"$f64": 5, "shape": [1]})
    return f"signals/steps.jsonl: 1 of {n} lines"


def param_lists_differ(run: Path) -> str:
    n = append(run, "params", b'{"step": 49, "param": ["a", "b"], "grad_norm": [1.0]}\n')
    return f"signals/params.jsonl: 1 of {n} lines"


def escapes_in_signal_name(run: Path) -> str:
    name = os.fsencode(run / "signals") + b"/\x1b]0;pwned\x07\xff.jsonl"
    with open(name, "wb") as f:
        f.write(b"garbage\n")
    return "pwned"


def signals_is_a_file(run: Path) -> str:
    shutil.rmtree(run / "signals")
    (run / "signals").write_text("not a folder")
    return "signals"


def signal_is_a_directory(run: Path) -> str:
    (run / "signals" / "steps.jsonl").unlink()
    (run / "signals" / "steps.jsonl").mkdir()
    return "signals/steps.jsonl"


def signal_is_a_fifo(run: Path) -> str:
    (run / "signals" / "steps.jsonl").unlink()
    os.mkfifo(run / "signals" / "steps.jsonl")  # opening it for reading would wait forever
    return "signals/steps.jsonl"


def signal_unreadable(run: Path) -> str:
    (run / "signals" / "steps.jsonl").chmod(0)
    return "signals/steps.jsonl"


SIGNAL_DAMAGE: list[Any] = [
    random_bytes,
    invalid_utf8_mid_file,
    nul_filled,
    huge_single_line,
    deeply_nested_line,
    step_is_text,
    row_is_a_list,
    loss_is_an_object,
    param_lists_differ,
    escapes_in_signal_name,
    signals_is_a_file,
    signal_is_a_directory,
    signal_is_a_fifo,
    pytest.param(signal_unreadable, marks=needs_non_root),
]
#: cells after which every rule must still have judged the run (the damage spared the steps signal)
KEEPS_STEPS = {invalid_utf8_mid_file, nul_filled, huge_single_line, deeply_nested_line, step_is_text, row_is_a_list,
               loss_is_an_object, param_lists_differ, escapes_in_signal_name}


@pytest.mark.parametrize("damage", SIGNAL_DAMAGE, ids=lambda f: f.__name__.replace("_", "-"))
def test_damaged_signals_load_in_part_with_a_note(cli: Cli, run_dir: Path, damage: Callable[[Path], str]) -> None:
    expected = damage(run_dir)
    result = cli.run("report", "run", timeout=60)
    assert_loaded_with_note(cli, result, expected)
    assert "\x1b" not in result.output and "\x07" not in result.output
    if damage in KEEPS_STEPS:
        assert_rules_judged(cli)


# ----------------------------------------------------------------------------- meta.json, wrong types
META_DAMAGE: dict[str, tuple[dict[str, Any], str]] = {
    "model-is-text": ({"model": "x"}, "model"),
    "model-roots-number": ({"model": {"roots": 3}}, "model.roots"),
    "model-recurrent-text": ({"model": {"recurrent": "x"}}, "model.recurrent"),
    "model-recurrent-numbers": ({"model": {"recurrent": [3]}}, "model.recurrent"),
    "model-device-list": ({"model": {"device": ["cpu"]}}, "model.device"),
    "steps-text": ({"steps": "many"}, "steps"),
    "steps-bool": ({"steps": True}, "steps"),
    "exception-text": ({"exception": "boom", "status": "crashed"}, "exception"),
    "exception-type-number": ({"exception": {"type": 5, "message": "m"}, "status": "crashed"}, "exception.type"),
    "status-number": ({"status": 7}, "status"),
    "script-args-text": ({"script_args": "x"}, "script_args"),
    "script-args-number": ({"script_args": 5}, "script_args"),
    "script-list": ({"script": ["a"]}, "script"),
    "wall-time-text": ({"wall_s": "x"}, "wall_s"),
    "internal-errors-text": ({"internal_errors": "x"}, "internal_errors"),
}


@pytest.mark.parametrize("fields, name", META_DAMAGE.values(), ids=META_DAMAGE.keys())
def test_wrong_typed_meta_fields_are_dropped_with_a_note(cli: Cli, run_dir: Path, fields: dict[str, Any], name: str) -> None:
    meta = cli.meta("run")
    meta.update(fields)
    (run_dir / "meta.json").write_text(json.dumps(meta), encoding="utf-8")
    result = cli.run("report", "run")
    assert_loaded_with_note(cli, result, f"meta.json: {name} ")
    assert_rules_judged(cli)


def test_text_utf8_cannot_encode_still_renders(cli: Cli, run_dir: Path) -> None:
    """A lone surrogate (valid in JSON, not in UTF-8) in a meta string."""
    meta = cli.meta("run")
    meta["script"] = "a\udcffb.py"
    (run_dir / "meta.json").write_text(json.dumps(meta), encoding="utf-8")
    result = cli.run("report", "run")
    assert result.returncode == 0, result.output
    assert "a\\udcffb.py" in (run_dir / "report.html").read_text(encoding="utf-8")


# ----------------------------------------------------------------------------- unusable run directories
def write_meta_bytes(data: bytes) -> Callable[[Path], None]:
    def damage(run: Path) -> None:
        (run / "meta.json").write_bytes(data)

    return damage


def run_dir_is_a_file(run: Path) -> None:
    shutil.rmtree(run)
    run.write_text("{}")


def empty_directory(run: Path) -> None:
    shutil.rmtree(run)
    run.mkdir()


def meta_is_a_directory(run: Path) -> None:
    (run / "meta.json").unlink()
    (run / "meta.json").mkdir()


def meta_is_a_fifo(run: Path) -> None:
    (run / "meta.json").unlink()
    os.mkfifo(run / "meta.json")


UNUSABLE: dict[str, Callable[[Path], None]] = {
    "run-dir-is-a-file": run_dir_is_a_file,
    "empty-directory": empty_directory,
    "meta-empty": write_meta_bytes(b""),
    "meta-truncated": write_meta_bytes(b'{"script": "t.py", "sta'),
    "meta-not-utf8": write_meta_bytes(b'{"script": "\xff\xfe"}'),
    "meta-top-level-list": write_meta_bytes(b"[1, 2]"),
    "meta-top-level-number": write_meta_bytes(b"5"),
    "meta-deeply-nested": write_meta_bytes(b'{"a": ' * 100_000),
    "meta-is-a-directory": meta_is_a_directory,
    "meta-is-a-fifo": meta_is_a_fifo,
}


@pytest.mark.parametrize("damage", UNUSABLE.values(), ids=UNUSABLE.keys())
def test_unusable_run_directory_is_one_line(cli: Cli, run_dir: Path, damage: Callable[[Path], None]) -> None:
    damage(run_dir)
    assert_one_line_error(cli.run("report", "run", timeout=60))


# ----------------------------------------------------------------------------- outputs that cannot be written
def findings_is_a_directory(run: Path) -> list[str]:
    (run / "findings.json").unlink()
    (run / "findings.json" / "x").mkdir(parents=True)
    return []


def report_is_a_directory(run: Path) -> list[str]:
    (run / "report.html").unlink()
    (run / "report.html" / "x").mkdir(parents=True)
    return []


def json_under_a_file(run: Path) -> list[str]:
    return ["--json", "run/meta.json/findings.json"]


def read_only_run_dir(run: Path) -> list[str]:
    run.chmod(0o555)
    return []


UNWRITABLE: list[Any] = [
    findings_is_a_directory,
    report_is_a_directory,
    json_under_a_file,
    pytest.param(read_only_run_dir, marks=needs_non_root),
]


@pytest.mark.parametrize("damage", UNWRITABLE, ids=lambda f: f.__name__.replace("_", "-"))
def test_outputs_that_cannot_be_written_are_one_line(cli: Cli, run_dir: Path, damage: Callable[[Path], list[str]]) -> None:
    extra = damage(run_dir)
    try:
        assert_one_line_error(cli.run("report", "run", *extra))
        assert not list(run_dir.glob("*.tmp"))
    finally:
        run_dir.chmod(0o755)


def test_json_copy_creates_its_folder(cli: Cli, run_dir: Path) -> None:
    """As ``diagnose --json`` does."""
    result = cli.run("report", "run", "--json", "ci/out/findings.json")
    assert result.returncode == 0, result.output
    assert json.loads((cli.cwd / "ci" / "out" / "findings.json").read_text(encoding="utf-8"))["run"]["steps"] == 50
