"""run.py on its own: a run directory written by hand loads as the rules expect it."""

import json

import pytest

import rnndoctor
from rnndoctor.rundir import META_FILE, SIGNALS_DIR


def write_run(tmp_path, signals, meta=None):
    (tmp_path / SIGNALS_DIR).mkdir(parents=True)
    (tmp_path / META_FILE).write_text(json.dumps(meta or {"status": "completed", "steps": 2}))
    for name, rows in signals.items():
        (tmp_path / SIGNALS_DIR / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return rnndoctor.load_run(tmp_path)


def test_list_columns_explode_and_carried_names_fill_in(tmp_path):
    run = write_run(tmp_path, {"params": [
        {"step": 0, "param": ["w", "b"], "grad_norm": [1.0, 2.0], "grad_none": [0, 1]},
        {"step": 1, "grad_norm": [3.0, 4.0]},  # names and all-zero flags left out: carried
    ]})
    df = run["params"]
    assert list(df["param"]) == ["w", "b", "w", "b"]
    assert list(df["grad_norm"]) == [1.0, 2.0, 3.0, 4.0]
    assert list(df["grad_none"]) == [0, 1, 0, 0]


def test_train_steps_are_the_training_rows_in_order(tmp_path):
    run = write_run(tmp_path, {"steps": [
        {"step": 0, "mode": "train", "loss": 0.7}, {"step": 0, "mode": "eval", "loss": 0.9}, {"step": 1, "mode": "train", "loss": 0.6},
    ]})
    assert list(run.train_steps()["loss"]) == [0.7, 0.6] and run.has("steps") and not run.has("gates")


def test_a_torn_last_line_is_skipped_with_a_note(tmp_path):
    run = write_run(tmp_path, {"steps": [{"step": 0, "mode": "train"}]})
    with open(tmp_path / SIGNALS_DIR / "steps.jsonl", "a") as f:
        f.write('{"step": 1, "mode": "tr')  # a killed process mid-write
    run = rnndoctor.load_run(tmp_path)
    assert len(run.train_steps()) == 1 and run.unreadable == {"steps": 1}
    assert any("1 of 2 lines unreadable" in n for n in run.notes)


def test_load_run_errors_are_one_line(tmp_path):
    with pytest.raises(rnndoctor.RunDirError, match="no run directory"):
        rnndoctor.load_run(tmp_path / "missing")
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / META_FILE).write_text("{not json")
    with pytest.raises(rnndoctor.RunDirError, match="corrupt"):
        rnndoctor.load_run(tmp_path / "bad")
