"""signals.py is the only declaration of a signal and its columns; the recorder enforces it."""

import json

import pytest
import torch

from rnndoctor.recorder import Recorder
from rnndoctor.signals import CATALOGUE, SignalContractError, undeclared


def test_declared_rows_pass_and_others_say_why():
    assert undeclared("steps", {"step": 0, "mode": "train", "loss": 1.0}) is None
    assert "not declared" in undeclared("nope", {"step": 0})
    assert "'extra'" in undeclared("steps", {"step": 0, "extra": 1})


def test_every_signal_is_described():
    for name, spec in CATALOGUE.items():
        assert spec.name == name and spec.keys and spec.values and spec.when
        assert set(spec.explode) <= set(spec.keys) | set(spec.values), name
        assert set(spec.carried) <= set(spec.explode), name


@pytest.mark.parametrize("writer", ["inline", "thread"])
def test_the_recorder_drops_an_undeclared_row_and_keeps_the_rest(tmp_path, writer):
    rec = Recorder(tmp_path, background=writer == "thread", contract="record")
    rec.add("steps", {"step": 0, "mode": "train", "loss": torch.tensor(0.5)})
    rec.add("steps", {"step": 1, "mode": "train", "lossy": 1})
    rec.add("made_up", {"step": 1})
    rec.close()
    rows = [json.loads(x) for x in (tmp_path / "signals" / "steps.jsonl").read_text().splitlines()]
    assert rows == [{"step": 0, "mode": "train", "loss": 0.5}]
    assert not (tmp_path / "signals" / "made_up.jsonl").exists()
    assert rec.errors == ["signal contract: signal 'steps' has undeclared column(s) 'lossy'"]


def test_a_finalizer_may_remove_temporary_columns_before_the_check(tmp_path):
    rec = Recorder(tmp_path, background=False, contract="raise")
    rec.add("nonfinite", {"step": 0, "scratch": 1}, finalize=lambda r: {k: v for k, v in r.items() if k != "scratch"})
    rec.close()
    assert rec.errors == []


def test_contract_raise_makes_close_raise(tmp_path):
    rec = Recorder(tmp_path, background=False, contract="raise")
    rec.add("steps", {"step": 0, "mode": "train", "lossy": 1})
    with pytest.raises(SignalContractError, match="lossy"):
        rec.close()
